"""An artifact's ``io.json`` (input names and dtypes, output names, how its graph is called) and feed casting."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def read_io(folder: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((folder / "io.json").read_text())
    return data


def cast_feeds(feeds: dict[str, Any], io: dict[str, Any]) -> dict[str, Any]:
    """Float inputs in the artifact's dtype (bfloat16 goes through torch: numpy has none)."""
    out = {}
    for name, dtype in io["inputs"].items():
        value = feeds[name]
        if dtype in ("float16", "float32") and value.dtype.kind == "f" and value.dtype.name != dtype:
            value = value.astype(dtype)
        out[name] = value
    return out


def retained_pairs(io: dict[str, Any]) -> list[tuple[int, int]]:
    """(input index, output index) of each retained state: output ``present_X`` is the next step's ``past_X``
    (the convention every decoding family's graphs follow, and QEfficient's retained state)."""
    inputs, outputs = list(io["inputs"]), list(io.get("outputs", []))
    return [(i, outputs.index("present_" + name[len("past_"):])) for i, name in enumerate(inputs)
            if name.startswith("past_") and "present_" + name[len("past_"):] in outputs]
