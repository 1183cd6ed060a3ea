"""`qeffbuild bench` for speech: encoder latency and decode speed (tokens/s) per runtime."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from .runtimes import RUNTIMES
from .steps import StepNode


def bench_speech(project: Any, plan: Any, node: StepNode, iters: int, warmup: int) -> list[dict[str, Any]]:
    import numpy as np
    from transformers import AutoProcessor

    from .speech import DecodeConfig, features, greedy_decode, load_dataset
    from .validate_speech import open_pair

    def tree(step_id: str) -> Path:
        entry = project.store.lookup(plan.by_id[step_id].key)
        return Path(project.store.tree(entry))

    model_dir = tree(node.deps["model"]) / "model"
    dc = DecodeConfig.from_model_dir(model_dir, node.params["language"])
    processor = AutoProcessor.from_pretrained(model_dir)
    utt = load_dataset([f.path for f in node.files])[:1]
    steps = int(node.params["max_new_tokens"])
    rows: list[dict[str, Any]] = []
    for runtime in node.params["runtimes"]:
        if RUNTIMES.get(runtime).opens == "reference":
            continue  # the reference decodes without a cache: not a deployment runtime
        for spec in node.params["specializations"]:
            enc, dec = open_pair(runtime, spec, {role: tree(dep) for role, dep in node.deps.items()})
            b = spec["batch_size"]
            feats = np.repeat(features(processor, utt, dc.encoder_ctx_len), b, axis=0)
            for _ in range(warmup):
                greedy_decode(enc, dec, feats, dc, steps, spec["ctx_len"])
            enc_ms, per_token_ms = [], []
            for _ in range(iters):
                t0 = time.perf_counter()
                enc.run({"input_features": feats})
                t1 = time.perf_counter()
                greedy_decode(enc, dec, feats, dc, steps, spec["ctx_len"])
                t2 = time.perf_counter()
                enc_ms.append((t1 - t0) * 1000)
                # one decode = one encoder run + (prompt - 1 + steps) decoder steps
                per_token_ms.append(((t2 - t1) - (t1 - t0)) * 1000 / (len(dc.prompt) - 1 + steps))
            lat = np.array(per_token_ms)
            p50 = float(np.percentile(lat, 50))
            rows.append({"runtime": runtime, "specialization": spec["name"], "dtype": spec["dtype"], "batch_size": b,
                         "seq_len": f"ctx {spec['ctx_len']}", "encoder_p50_ms": round(float(np.median(enc_ms)), 3),
                         "p50_ms": round(p50, 3), "p90_ms": round(float(np.percentile(lat, 90)), 3),
                         "p99_ms": round(float(np.percentile(lat, 99)), 3),
                         "throughput_per_s": round(b * 1000 / p50, 1), "unit": "tokens"})
    return rows
