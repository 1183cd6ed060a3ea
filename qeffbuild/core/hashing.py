"""Canonical JSON and blake3 digests: the only way qeffbuild turns data into a hash."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

CHUNK = 1 << 20


def canonical_json(value: Any) -> str:
    """JSON with sorted keys, no whitespace and no NaN: equal data gives equal text.

    Floats that are whole numbers stay floats (``1.0`` ≠ ``1``) because a config value's
    type can change a model; non-finite floats are refused (``allow_nan=False`` raises
    ValueError) rather than silently encoded.
    """
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def digest_bytes(data: bytes) -> str:
    from blake3 import blake3

    return blake3(data).hexdigest()


def digest_json(value: Any) -> str:
    return digest_bytes(canonical_json(value).encode())


def digest_file(path: Path) -> str:
    """blake3 of a file's bytes, read in chunks (multi-GB weights never sit in memory)."""
    from blake3 import blake3

    h = blake3()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()
