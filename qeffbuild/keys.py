"""Step keys: blake3 over canonical JSON of everything a step's result depends on.

Material = kind, version, params, source-file digests (by manifest-relative label), the
keys of upstream steps (input-addressed, so planning never has to run anything), the
versions of the toolchain the kind declares, and the project salt. No absolute path
enters it: moving the checkout or the cache keeps every key.
"""

from __future__ import annotations

import functools
import platform
from dataclasses import dataclass
from typing import Any

from .hashing import digest_json
from .statcache import StatCache
from .step_kinds import register_all
from .steps import STEP_KINDS, StepNode

register_all()


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


def compute_keys(order: list[StepNode], stat: StatCache, salt: str) -> dict[str, Keyed]:
    """Keys for nodes given in dependency order (upstream first)."""
    out: dict[str, Keyed] = {}
    for node in order:
        kind = STEP_KINDS.get(node.kind)
        material = {
            "kind": node.kind,
            "version": kind.version,
            "params": node.params,
            "files": {f.label: stat.digest(f.path) for f in node.files},
            "deps": {role: out[dep].key for role, dep in node.deps.items()},
            "toolchain": {d: dist_version(d) for d in kind.toolchain},
            "salt": node.salt or salt,
        }
        out[node.id] = Keyed(node, digest_json(material), material)
    return out
