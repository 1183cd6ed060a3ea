"""Step keys: blake3 over canonical JSON of everything a step's result depends on.

Material = kind, version, params, source-file digests (by label, never by absolute path),
the keys of upstream steps (input-addressed, so planning never has to run anything), the
versions of the toolchain the node declares (per backend and per family: an onnxruntime
upgrade does not touch AOTInductor keys) plus any non-Python tool versions, and the salt.
"""

from __future__ import annotations

import functools
import platform
from dataclasses import dataclass
from typing import Any

from .hashing import digest_json
from .statcache import StatCache
from .steps import StepNode


@dataclass(frozen=True)
class Keyed:
    node: StepNode
    key: str
    material: dict[str, Any]


@functools.cache
def dist_version(dist: str) -> str:
    """Installed version of a distribution (or 'python'), read from metadata: no import."""
    if dist == "python":
        return ".".join(platform.python_version_tuple()[:2])
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return "not-installed"


def material_of(node: StepNode, stat: StatCache, upstream: dict[str, str], salt: str) -> dict[str, Any]:
    """The key material of ``node`` given the keys of its upstream steps."""
    toolchain = {d: dist_version(d) for d in node.toolchain}
    toolchain.update(node.tool_versions)
    return {
        "kind": node.kind,
        "version": node.version,
        "params": node.params,
        "files": {f.label: stat.digest(f.path) for f in node.files},
        "deps": {role: upstream[dep] for role, dep in node.deps.items()},
        "toolchain": toolchain,
        "salt": node.salt or salt,
    }


def compute_keys(order: list[StepNode], stat: StatCache, salt: str = "") -> dict[str, Keyed]:
    """Keys for nodes given in dependency order (upstream first)."""
    out: dict[str, Keyed] = {}
    keys: dict[str, str] = {}
    for node in order:
        material = material_of(node, stat, keys, salt)
        key = digest_json(material)
        keys[node.id] = key
        out[node.id] = Keyed(node, key, material)
    return out
