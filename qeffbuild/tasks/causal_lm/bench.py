"""`qeffbuild bench` for causal LMs: decode tokens/s and prefill latency per runtime, beside ``model.generate``.

Both sides are timed the same way, on the validation's first prompt at the specialization's batch size: a
decode step is ``(T(N) − T(1)) / (N − 1)`` of a whole generation (warm), the prefill is the prompt's graph
alone; ``generate`` runs greedy with ``min_new_tokens = max_new_tokens`` so EOS cannot shorten it — eagerly, and
on HF's own fast path (static cache, the forward compiled by ``torch.compile``) where it runs; where it fails,
that row says so with its error.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from ...core.steps import StepNode
from ...reports.timing import LOADED, per_step_seconds, percentiles


def _timed(fn: Callable[[], Any]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def _per_token(run: Callable[[int], Any], steps: int, iters: int) -> list[float]:
    """Seconds per decode step: a pair a loaded machine spoiled is measured again, never counted as 0 ms."""
    return per_step_seconds(lambda n: _timed(lambda: run(n)), steps, iters)[0]


def bench(artifact: Any, node: StepNode, iters: int, warmup: int) -> list[dict[str, Any]]:
    from transformers import AutoTokenizer

    from ...pipeline.torchutil import quiet_warnings, torch_dtype
    from .driver import generate, hf_generate, open_graphs, rules_of
    from .transform import load_model

    quiet_warnings()
    p = node.params
    steps = max(2, int(p["max_new_tokens"]))
    model_dir = artifact("model") / "model"
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    prompt = list(tokenizer(p["prompts"][0])["input_ids"])
    rules = rules_of(model_dir)
    inputs = {role: artifact(role) for role in node.deps}
    rows: list[dict[str, Any]] = []
    for spec in p["specializations"]:
        b = spec["batch_size"]
        model = load_model(model_dir, torch_dtype(spec["dtype"]))
        for _ in range(max(warmup, 1)):
            hf_generate(model, prompt, steps, steps)
        runs = max(1, min(iters, 5))

        def baseline(n: int, m: Any = model) -> Any:
            return hf_generate(m, prompt, n, n)

        base = _row("generate (HF, eager)", spec, steps, _per_token(baseline, steps, runs), None)
        rows += [base, _compiled_generate_row(model, prompt, spec, steps, runs)]
        for runtime, opens in p["runtimes"].items():
            if opens == "reference":
                continue
            graphs = open_graphs(runtime, opens, spec, inputs)
            batch = [prompt] * b

            def decode(n: int, g: Any = graphs, rows_: Any = batch) -> Any:
                return generate(g, rows_, rules, n)

            for _ in range(max(warmup, 1)):
                decode(steps)
            rows.append(_row(runtime, spec, steps, _per_token(decode, steps, iters), base))
    return rows


def _compiled_generate_row(model: Any, prompt: list[int], spec: dict[str, Any], steps: int,
                           runs: int) -> dict[str, Any]:
    """HF's static cache + torch.compile ``generate``, compiled before the timed samples; its error if it fails."""
    from .driver import hf_generate

    name = "generate (HF, static cache + torch.compile)"
    try:
        for _ in range(2):  # the compile, then one warm call
            hf_generate(model, prompt, steps, steps, compiled=True)
        per = _per_token(lambda n: hf_generate(model, prompt, n, n, compiled=True), steps, runs)
    except Exception as e:  # a baseline that cannot run is reported, not fatal
        return {"runtime": name, "specialization": spec["name"], "unavailable": f"{type(e).__name__}: "
                f"{str(e).splitlines()[0][:200] if str(e) else ''}"}
    return _row(name, spec, steps, per, None)


def _row(runtime: str, spec: dict[str, Any], steps: int, per_token: list[float],
         base: dict[str, Any] | None) -> dict[str, Any]:
    b = spec["batch_size"] if base is not None else 1
    if not per_token:
        return {"runtime": runtime, "specialization": spec["name"], "dtype": spec["dtype"], "batch_size": b,
                "unavailable": LOADED.format(steps=steps)}
    lat = percentiles(per_token)
    row = {"runtime": runtime, "specialization": spec["name"], "dtype": spec["dtype"], "batch_size": b,
           "shape": f"ctx {spec['ctx_len']}, {steps} tokens", **lat,
           "throughput_per_s": b * 1000 / lat["p50_ms"] if lat["p50_ms"] > 0 else 0.0, "unit": "tokens",
           "method": "per token = (T(N) - T(1)) / (N - 1), warm"}
    if base is not None and "p50_ms" in base and lat["p50_ms"] > 0:
        row["speedup_per_token_vs_generate"] = base["p50_ms"] / lat["p50_ms"]
    return row
