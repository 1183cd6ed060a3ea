"""Numerical agreement: MAD, max-abs, cosine, token agreement and word/char error rates."""

from __future__ import annotations

from typing import Any


def compare(ref: Any, got: Any) -> dict[str, float]:
    """Agreement of two [N, ...] arrays: overall MAD and max-abs, and the lowest per-row cosine."""
    import numpy as np

    ref = np.asarray(ref, dtype=np.float64).reshape(len(ref), -1)
    got = np.asarray(got, dtype=np.float64).reshape(len(got), -1)
    if ref.shape != got.shape:
        raise ValueError(f"shape mismatch: reference {ref.shape}, runtime {got.shape}")
    diff = np.abs(ref - got)
    return {"mad": float(diff.mean()), "max_abs": float(diff.max()), "cosine": float(cosines(ref, got).min())}


def cosines(ref: Any, got: Any) -> Any:
    import numpy as np

    num = (ref * got).sum(-1)
    den = np.linalg.norm(ref, axis=-1) * np.linalg.norm(got, axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        cos = np.where(den > 0, num / np.where(den > 0, den, 1), np.where(num == 0, 1.0, 0.0))
    return cos


def per_row(ref: Any, got: Any) -> list[dict[str, float]]:
    import numpy as np

    ref = np.asarray(ref, dtype=np.float64).reshape(len(ref), -1)
    got = np.asarray(got, dtype=np.float64).reshape(len(got), -1)
    cos = cosines(ref, got)
    diff = np.abs(ref - got)
    return [
        {"mad": float(d.mean()), "max_abs": float(d.max()), "cosine": float(c)} for d, c in zip(diff, cos, strict=True)
    ]


def check(values: dict[str, float], bounds: dict[str, float]) -> list[str]:
    """Every bound that ``values`` break, as readable lines (empty when all hold)."""
    out = []
    for metric, bound in bounds.items():
        if metric not in values:
            continue
        v = values[metric]
        higher_is_better = metric in ("cosine", "token_agreement")
        ok = v >= bound if higher_is_better else v <= bound
        if not ok or v != v:  # NaN never passes
            rel = "≥" if higher_is_better else "≤"
            out.append(f"{metric} = {v:.3g}, expected {rel} {bound:g}")
    return out


def edit_distance(a: list[str], b: list[str]) -> int:
    prev = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        cur = [i]
        for j, y in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (x != y)))
        prev = cur
    return prev[-1]


def normalize_text(text: str) -> str:
    import re

    return re.sub(r"\s+", " ", re.sub(r"[^\w\s']", " ", text.lower())).strip()


def wer(refs: list[str], hyps: list[str]) -> float:
    words = [normalize_text(r).split() for r in refs]
    errors = sum(edit_distance(r, normalize_text(h).split()) for r, h in zip(words, hyps, strict=True))
    return errors / max(1, sum(len(r) for r in words))


def cer(refs: list[str], hyps: list[str]) -> float:
    chars = [list(normalize_text(r)) for r in refs]
    errors = sum(edit_distance(r, list(normalize_text(h))) for r, h in zip(chars, hyps, strict=True))
    return errors / max(1, sum(len(r) for r in chars))
