"""Canonical JSON and blake3 digests: the only way qeffbuild turns data into a hash."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


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


# A large file is read in chunks of this size into two buffers, alternately: one thread reads the next while blake3
# hashes the last on every core (it splits a large update over threads; the digest is the same). A large-v3
# decoder's 1.7 GB of weights is read in full each time a saved folder is opened (transcribe.verified), on the
# load path of a fresh process.
PARALLEL_CHUNK = 16 << 20


def digest_file(path: Path) -> str:
    """blake3 of a file's bytes, read in chunks (multi-GB weights never sit in memory)."""
    from blake3 import blake3

    with open(path, "rb", buffering=0) as f:
        if os.fstat(f.fileno()).st_size <= PARALLEL_CHUNK:
            return str(blake3(f.read()).hexdigest())
        from concurrent.futures import ThreadPoolExecutor

        h = blake3(max_threads=blake3.AUTO)
        buffers = (bytearray(PARALLEL_CHUNK), bytearray(PARALLEL_CHUNK))
        with ThreadPoolExecutor(1) as reader:
            pending, i = reader.submit(f.readinto, buffers[0]), 0
            while n := pending.result():
                pending = reader.submit(f.readinto, buffers[1 - i])  # the next chunk read while this one hashes
                h.update(memoryview(buffers[i])[:n])
                i = 1 - i
    return str(h.hexdigest())
