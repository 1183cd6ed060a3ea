"""`qeffbuild bench`: latency percentiles and throughput per runtime, specialization and shape."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from .api import Project
from .errors import BuildError, UsageError
from .manifest import ValidationTable
from .runtimes import RUNTIMES
from .sessions import Session, TorchSession, open_compiled, open_program


def _artifact(project: Project, plan: Any, step_id: str) -> Path:
    entry = project.store.lookup(plan.by_id[step_id].key)
    if entry is None:
        raise BuildError(f"{step_id} is not built")
    return project.store.tree(entry)


def _reference_session(model_dir: Path, pooling: str, normalize: bool) -> Session:
    import torch
    from transformers import AutoModel

    from .pooling import make_pooled

    model = make_pooled(AutoModel.from_pretrained(model_dir, dtype=torch.float32).eval(), pooling, normalize)
    return TorchSession(model)  # keyword call: input_ids, attention_mask


def _time(session: Session, feeds: dict[str, Any], warmup: int, iters: int) -> list[float]:
    for _ in range(warmup):
        session.run(feeds)
    out = []
    for _ in range(iters):
        t0 = time.perf_counter()
        session.run(feeds)
        out.append(time.perf_counter() - t0)
    return out


def bench(project: Project, target: str, iters: int = 20, warmup: int = 3) -> list[dict[str, Any]]:
    import numpy as np

    from .torchutil import quiet_warnings

    quiet_warnings()
    ref = project.workspace.targets.get(target)
    if ref is None or not isinstance(ref.spec, ValidationTable):
        raise UsageError(f"bench takes a validation target (it names the runtimes and specializations); got {target!r}")
    result = project.build([target])
    if not result.ok:
        raise BuildError(f"{target} did not build; run `qeffbuild build {target}` to see why")
    plan = project.plan([target], with_reasons=False)
    node = plan.by_id[f"validate:{target}"].node
    if node.params["task"] != "embedding":
        from .bench_speech import bench_speech

        return bench_speech(project, plan, node, iters, warmup)
    model_dir = _artifact(project, plan, node.deps["model"]) / "model"
    rows: list[dict[str, Any]] = []
    for runtime in node.params["runtimes"]:
        opens = RUNTIMES.get(runtime).opens
        if runtime == "sentence-transformers":
            continue  # its encode() batches and tokenizes: not comparable per shape
        for spec in node.params["specializations"]:
            for seq in spec["seq_len"]:
                if opens == "reference":
                    session = _reference_session(model_dir, node.params["pooling"], node.params["normalize"])
                elif opens == "transformed":
                    session = open_program(
                        _artifact(project, plan, node.deps[f"transformed/{spec['dtype']}/{spec['device']}"]),
                        spec["device"])
                else:
                    step = node.deps[f"{opens}/{spec['name']}/seq{seq}"]
                    session = open_compiled(opens, _artifact(project, plan, step), spec["device"])
                b = spec["batch_size"]
                rng = np.random.default_rng(0)
                feeds = {"input_ids": rng.integers(1000, 2000, (b, seq), dtype=np.int64),
                         "attention_mask": np.ones((b, seq), dtype=np.int64)}
                lat = np.array(_time(session, feeds, warmup, iters)) * 1000
                p50 = float(np.percentile(lat, 50))
                rows.append({"runtime": runtime, "specialization": spec["name"], "dtype": spec["dtype"],
                             "batch_size": b, "seq_len": seq, "p50_ms": round(p50, 3),
                             "p90_ms": round(float(np.percentile(lat, 90)), 3),
                             "p99_ms": round(float(np.percentile(lat, 99)), 3),
                             "throughput_per_s": round(b / (p50 / 1000), 1), "unit": "sequences"})
    return rows


def render(rows: list[dict[str, Any]]) -> str:
    from .report import table

    headers = ["runtime", "specialization", "dtype", "batch", "shape", "p50 ms", "p90 ms", "p99 ms", "throughput"]
    body = [[r["runtime"], r["specialization"], r["dtype"], str(r["batch_size"]), str(r.get("seq_len", "-")),
             f"{r['p50_ms']:.2f}", f"{r['p90_ms']:.2f}", f"{r['p99_ms']:.2f}",
             f"{r['throughput_per_s']:.1f} {r['unit']}/s"] for r in rows]
    return table(headers, body)
