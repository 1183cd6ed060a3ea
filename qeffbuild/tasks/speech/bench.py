"""`qeffbuild bench` for speech: encoder latency and decode speed (ms/token, tokens/s) per runtime."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from ...core.steps import StepNode


def bench(artifact: Any, node: StepNode, iters: int, warmup: int) -> list[dict[str, Any]]:
    """``artifact(role)`` gives the folder of the validation's upstream step with that role."""
    import numpy as np
    from transformers import AutoProcessor

    from . import AUDIO_SUFFIXES
    from .driver import DecodeConfig, features, greedy_decode, load_dataset
    from .validate import open_pair

    p = node.params
    model_dir = artifact("model") / "model"
    dc = DecodeConfig.from_model_dir(model_dir, p["language"])
    processor = AutoProcessor.from_pretrained(model_dir)
    audio = sorted((f.path for f in node.files if Path(f.path).suffix.lower() in AUDIO_SUFFIXES),
                   key=lambda f: f.name)
    utt = load_dataset(audio[:1])
    steps = int(p["max_new_tokens"])
    inputs = {role: artifact(role) for role in node.deps}
    rows: list[dict[str, Any]] = []
    for runtime, opens in p["runtimes"].items():
        if opens == "reference":
            continue  # the reference decodes without a cache: not a deployment runtime
        for spec in p["specializations"]:
            enc, dec = open_pair(runtime, opens, spec, inputs)
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
                         "shape": f"ctx {spec['ctx_len']}", "encoder_p50_ms": round(float(np.median(enc_ms)), 3),
                         "p50_ms": round(p50, 3), "p90_ms": round(float(np.percentile(lat, 90)), 3),
                         "p99_ms": round(float(np.percentile(lat, 99)), 3),
                         "throughput_per_s": round(b * 1000 / p50, 1), "unit": "tokens"})
    return rows
