"""Tensor agreement: MAD, max-abs and the lowest per-row cosine, with shapes compared first."""

from __future__ import annotations

from typing import Any

from ..core.plugins import Metric

METRICS = (
    Metric("mad", "tensor", False, "mean absolute difference from the reference", "qeffbuild.checks.tensor:mad"),
    Metric("max_abs", "tensor", False, "largest absolute difference from the reference",
           "qeffbuild.checks.tensor:max_abs"),
    Metric("cosine", "tensor", True, "lowest cosine similarity of a row with the reference's",
           "qeffbuild.checks.tensor:min_cosine", lowest=-1.0, highest=1.0),
)


class ShapeMismatch(ValueError):
    """A runtime's output has another shape than the reference's: a check failure, not a crash."""


def _rows(ref: Any, got: Any) -> tuple[Any, Any]:
    import numpy as np

    ref, got = np.asarray(ref), np.asarray(got)
    if ref.shape != got.shape:  # compared before any reshape: [4, 33] never passes for [4, 32]
        raise ShapeMismatch(f"output shape {list(got.shape)} differs from the reference's {list(ref.shape)}")
    n = ref.shape[0] if ref.ndim else 1
    return ref.astype(np.float64).reshape(n, -1), got.astype(np.float64).reshape(n, -1)


def cosines(ref: Any, got: Any) -> Any:
    import numpy as np

    num = (ref * got).sum(-1)
    den = np.linalg.norm(ref, axis=-1) * np.linalg.norm(got, axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1), np.where(num == 0, 1.0, 0.0))


def mad(ref: Any, got: Any) -> float:
    r, g = _rows(ref, got)
    return float(abs(r - g).mean())


def max_abs(ref: Any, got: Any) -> float:
    r, g = _rows(ref, got)
    return float(abs(r - g).max())


def min_cosine(ref: Any, got: Any) -> float:
    r, g = _rows(ref, got)
    return float(cosines(r, g).min())


def per_row(ref: Any, got: Any) -> list[dict[str, float]]:
    """MAD, max-abs and cosine of each row (the report's per-input columns)."""
    r, g = _rows(ref, got)
    diff = abs(r - g)
    return [{"mad": float(d.mean()), "max_abs": float(d.max()), "cosine": float(c)}
            for d, c in zip(diff, cosines(r, g), strict=True)]
