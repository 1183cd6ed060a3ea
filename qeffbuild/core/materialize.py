"""Materializing a built target under ``out/<target>/``: hard links plus provenance."""

from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .keys import dist_version
from .planner import Plan

if TYPE_CHECKING:
    from ..store import Store

STAMP = ".qeffbuild-stamp"
PROVENANCE = "provenance.json"


def is_current(out_dir: Path, stamp: str) -> bool:
    try:
        return (out_dir / STAMP).read_text() == stamp
    except OSError:
        return False


def materialize(plan: Plan, target: str, store: Store, out_root: Path, force: bool = False) -> Path:
    """Lay the target's outputs out under ``out_root/target`` (skipped when already current)."""
    final = out_root / target
    from ..store import link_or_copy

    stamp = plan.stamp(target)
    if not force and is_current(final, stamp):
        return final
    by_id = plan.by_id
    staging = out_root / f".staging-{target}-{uuid.uuid4().hex[:8]}"
    staging.mkdir(parents=True)
    for sid in plan.graph.outputs[target]:
        step = by_id[sid]
        entry = store.lookup(step.key)
        if entry is None:
            raise FileNotFoundError(f"cache entry of {sid} vanished during the build")
        for rel, digest in entry.outputs.items():
            link_or_copy(store.blob_path(digest), staging / step.node.out_subdir / rel)
    provenance = _provenance(plan, target, store)
    (staging / PROVENANCE).write_text(json.dumps(provenance, indent=1, sort_keys=True))
    (staging / STAMP).write_text(stamp)
    _swap(staging, final)
    return final


def _swap(staging: Path, final: Path) -> None:
    old = final.with_name(f".old-{final.name}-{uuid.uuid4().hex[:8]}")
    if final.exists():
        os.rename(final, old)
    os.rename(staging, final)
    shutil.rmtree(old, ignore_errors=True)


def _provenance(plan: Plan, target: str, store: Store) -> dict[str, Any]:
    from .. import __version__

    by_id = plan.by_id
    steps = []
    for sid in plan.closure(target):
        s = by_id[sid]
        entry = store.lookup(s.key)
        steps.append({
            "id": sid,
            "kind": s.node.kind,
            "key": s.key,
            "material": s.material,
            "duration_s": entry.duration_s if entry else None,
            "outputs": entry.outputs if entry else {},
        })
    return {
        "target": target,
        "qeffbuild": __version__,
        "python": dist_version("python"),
        "materialized_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "outputs": plan.graph.outputs[target],
        "steps": steps,
    }
