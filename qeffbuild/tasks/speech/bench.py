"""`qeffbuild bench` for speech, side by side with HF ``generate`` in one run.

Per runtime and specialization: the encoder side's latency, per-token decode latency (ms/token,
p50/p90/p99) and tokens/s, the whole transcription of an utterance (encoder included) and
utterances/s at the specialization's batch size. Beside them, ``model.generate`` (eager PyTorch,
greedy, the same inputs and batch, ``min_new_tokens`` = ``max_new_tokens`` so EOS cannot shorten
either side), and each runtime's speed-up over it.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from ...core.steps import StepNode
from ...reports.timing import percentiles


def bench(artifact: Any, node: StepNode, iters: int, warmup: int) -> list[dict[str, Any]]:
    """``artifact(role)`` gives the folder of the validation's upstream step with that role."""
    from ...pipeline.torchutil import quiet_warnings, strict_fp32

    quiet_warnings()
    strict_fp32()  # no TF32: runtimes are compared with a float32 reference

    from .driver import DecodeConfig, Frontend, Utterance, batches, greedy_decode, load_rows, reference_encoder
    from .transform import load_model
    from .validate import open_graphs

    p = node.params
    arch, steps = p["arch"], int(p["max_new_tokens"])
    model_dir = artifact("model") / "model"
    dc = DecodeConfig.from_model_dir(model_dir, p["language"], arch, p.get("task"))
    frontend = Frontend(model_dir, arch)
    if p["inputs"]["kind"] == "hf":  # the validation's first utterance, as it reads it
        from .dataset import open_hf

        name, audio, text = open_hf(node.paths["dataset"], {**p["inputs"], "limit": 1})[0]
        utt = [Utterance(name, audio, text)]
    else:
        utt = load_rows(p["inputs"]["rows"][:1], {f.label: Path(f.path) for f in node.files})
    inputs = {role: artifact(role) for role in node.deps}
    from ...pipeline.torchutil import torch_device, torch_dtype

    models: dict[tuple[str, str], Any] = {}
    rows: list[dict[str, Any]] = []
    for spec in p["specializations"]:
        b = spec["batch_size"]
        graph = batches(utt, spec["graphs"], 1)[0][0]
        feeds = frontend.features([utt[0].audio] * b, spec["graphs"][graph])
        where = (spec["device"], spec["dtype"])  # generate runs on the same device, in the same precision
        if where not in models:
            models[where] = load_model(model_dir, torch_dtype(spec["dtype"])).to(torch_device(spec["device"]))
        base = _generate_row(models[where], arch, feeds, dc, steps, spec, iters, warmup, reference_encoder)
        rows.append(base)
        for runtime, opens in p["runtimes"].items():
            if opens == "reference":
                continue  # the reference decodes without a cache: not a deployment runtime
            encoders, decoder, decoder_io = open_graphs(runtime, opens, spec, inputs)
            enc = encoders[graph]
            for _ in range(warmup):
                greedy_decode(enc, decoder, feeds, dc, steps, decoder_io)
            enc_ms, per_token, whole = [], [], []
            for _ in range(iters):
                t0 = time.perf_counter()
                enc.run(feeds)
                t1 = time.perf_counter()
                greedy_decode(enc, decoder, feeds, dc, steps, decoder_io)
                t2 = time.perf_counter()
                enc_ms.append((t1 - t0) * 1000)
                whole.append((t2 - t1) * 1000)  # one decode = one encoder run + (prompt - 1 + steps) decoder steps
                per_token.append(((t2 - t1) - (t1 - t0)) * 1000 / (len(dc.prompt) - 1 + steps))
            rows.append(_row(runtime, spec, b, steps, enc_ms, per_token, whole, base))
    return rows


def _generate_row(model: Any, arch: str, feeds: dict[str, Any], dc: Any, steps: int, spec: dict[str, Any],
                  iters: int, warmup: int, reference_encoder: Any) -> dict[str, Any]:
    import torch

    from .driver import hf_generate, to_torch

    runs = max(1, min(iters, 5))  # eager generate is the slow side: a few runs give a stable median
    for _ in range(min(warmup, 1)):
        hf_generate(model, arch, feeds, dc, steps, min_new_tokens=steps)
    enc_ms, per_token, whole = [], [], []
    for _ in range(runs):
        t0 = time.perf_counter()
        with torch.no_grad():
            reference_encoder(model, arch, to_torch(feeds, model))
        _sync(model.device)
        t1 = time.perf_counter()
        hf_generate(model, arch, feeds, dc, steps, min_new_tokens=steps)
        t2 = time.perf_counter()
        enc_ms.append((t1 - t0) * 1000)
        whole.append((t2 - t1) * 1000)
        per_token.append(((t2 - t1) - (t1 - t0)) * 1000 / (len(dc.prompt) - 1 + steps))
    return _row("generate (HF, eager)", spec, spec["batch_size"], steps, enc_ms, per_token, whole, None)


def _sync(device: Any) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _row(runtime: str, spec: dict[str, Any], b: int, steps: int, enc_ms: list[float], per_token: list[float],
         whole: list[float], base: dict[str, Any] | None) -> dict[str, Any]:
    import numpy as np

    lat = percentiles([t / 1000 for t in per_token])
    utt_ms = float(np.median(whole))
    row = {"runtime": runtime, "specialization": spec["name"], "dtype": spec["dtype"], "batch_size": b,
           "shape": f"ctx {spec['ctx_len']}, {steps} tokens", "encoder_p50_ms": float(np.median(enc_ms)),
           **lat, "throughput_per_s": b * 1000 / lat["p50_ms"], "unit": "tokens",
           "utterance_p50_ms": utt_ms, "utterances_per_s": b * 1000 / utt_ms}
    if base is not None:
        row["speedup_per_token_vs_generate"] = base["p50_ms"] / lat["p50_ms"]
        row["speedup_per_utterance_vs_generate"] = base["utterance_p50_ms"] / utt_ms
    return row
