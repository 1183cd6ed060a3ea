"""Causal-LM validation (worker side): every runtime generates the reference's tokens, prompt by prompt.

The reference is the unmodified Hugging Face model in float32, greedy, recomputing the whole sequence at every
step (no cache: nothing a retained state could get wrong), for ``max_new_tokens`` steps (EOS does not stop it);
``model.generate`` (greedy, cached) must agree with it up to EOS. Every runtime × specialization must produce
the same tokens on every prompt (float32; half precision is held to a share of them), and each row records
tokens/s and the prefill's latency.
"""

from __future__ import annotations

import time
from typing import Any

from ...checks import Evidence, check, computed_metrics, measure
from ...checks.tokens import first_mismatch
from ...core.plugins import plugins
from ...core.steps import StepContext
from ...exec.progress import StepProgress
from ...pipeline.torchutil import quiet_warnings, strict_fp32
from ...reports import publish, sig
from ...reports.html import template_from
from .driver import generate, hf_generate, open_graphs, prefill_length, reference, rules_of
from .report import failure_text, render, render_html


def run(ctx: StepContext) -> None:
    quiet_warnings()
    strict_fp32()
    import torch
    from transformers import AutoTokenizer

    from .transform import load_model

    p = ctx.params
    steps = int(p["max_new_tokens"])
    model_dir = ctx.inputs["model"] / "model"
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    prompts = [list(tokenizer(text)["input_ids"]) for text in p["prompts"]]
    rules = rules_of(model_dir)
    specs = p["specializations"]
    ref_device = "cuda:0" if any(s["device"] == "cuda" for s in specs) else "cpu"
    model = load_model(model_dir, torch.float32).to(ref_device)
    evaluated = [(r, s) for r, o in p["runtimes"].items() if o != "reference" for s in specs]
    progress = StepProgress(len(prompts) * (2 + len(evaluated)), "prompts")
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    ref = reference(model, prompts, rules, steps)
    progress.advance(len(prompts), "reference")
    timings["reference"] = time.perf_counter() - t0
    generated = [hf_generate(model, prompt, steps) for prompt in prompts]
    progress.advance(len(prompts), "model.generate")
    text = lambda toks: tokenizer.decode(toks, skip_special_tokens=True)  # noqa: E731
    ref_row = _row("pytorch", None, ref, ref, p["checks"].get("pytorch", {}).get(specs[0]["name"], {}), text,
                   timings["reference"], steps)
    agrees = [_agrees(g, r, rules.eos, steps) for g, r in zip(generated, ref, strict=True)]
    ref_row["generate_agrees"] = all(agrees)
    if not all(agrees):
        ref_row["failures"].append("the greedy reference loop disagrees with model.generate on prompts "
                                   f"{[i + 1 for i, ok in enumerate(agrees) if not ok]}")
        ref_row["ok"] = False
    rows = [ref_row]
    for runtime, spec in evaluated:
        t0 = time.perf_counter()
        graphs = open_graphs(runtime, p["runtimes"][runtime], spec, ctx.inputs)
        _warm(graphs, prompts, rules)
        t1 = time.perf_counter()
        got = generate(graphs, prompts, rules, steps, on_batch=lambda n, r=runtime: progress.advance(n, r))
        seconds = time.perf_counter() - t1  # decoding only, as `bench` times it: opening and first calls are not
        timings[f"{runtime} {spec['name']}"] = time.perf_counter() - t0
        rows.append(_row(runtime, spec, ref, got, p["checks"][runtime][spec["name"]], text, seconds, steps))
    report = {
        "task": "causal-lm",
        "reference": f"pytorch: the unmodified Hugging Face model in float32 on {ref_device.split(':')[0]}, greedy "
                     "without a cache, one prompt at a time; model.generate (greedy) must agree up to EOS",
        "random_weights": bool(p.get("random_weights")), "prompts": p["prompts"],
        "prompt_tokens": [len(t) for t in prompts], "steps": steps, "rows": rows, "ok": all(r["ok"] for r in rows),
        "provenance": {"keys": ctx.keys, "timings_s": {k: round(v, 3) for k, v in timings.items()}},
    }
    title = ctx.node_id.partition(":")[2]
    publish(ctx.out, report, render, failure_text,
            lambda r: render_html(r, template_from(ctx.files), f"{title}: causal-LM validation"))


def _agrees(generated: list[int], ref: list[int], eos: int, steps: int) -> bool:
    """``generate``'s tokens are the reference's up to where generate stopped: at EOS, or after ``steps``."""
    return generated == ref[: len(generated)] and (len(generated) == steps or generated[-1:] == [eos])


def _row(runtime: str, spec: dict[str, Any] | None, ref: list[list[int]], got: list[list[int]],
         bounds: dict[str, float], text: Any, seconds: float, steps: int) -> dict[str, Any]:
    values = measure(computed_metrics(plugins().tasks.get("causal-lm"), bounds), Evidence(tokens=(ref, got)))
    failures = check(values, bounds)
    per = []
    for i, (r, g) in enumerate(zip(ref, got, strict=True)):
        miss = first_mismatch(r, g)
        per.append({"prompt": i + 1, "tokens": g, "text": text(g), "first_mismatch": miss})
        if miss is not None and values["token_agreement"] < bounds.get("token_agreement", 0.0):
            failures.append(f"prompt {i + 1}: tokens differ from step {miss} (the reference has {r[miss]}, this "
                            f"runtime {g[miss] if miss < len(g) else 'nothing'})")
    return {"runtime": runtime, "specialization": spec["name"] if spec else None,
            "dtype": spec["dtype"] if spec else "float32", "batch_size": spec["batch_size"] if spec else 1,
            "bounds": bounds, "seconds": sig(seconds),
            "tokens_per_s": sig(len(ref) * steps / seconds) if seconds > 0 else None,
            **{k: round(v, 6) for k, v in values.items()}, "failures": failures, "ok": not failures, "per_input": per}


def _warm(graphs: Any, prompts: list[list[int]], rules: Any) -> None:
    """One untimed call of every graph the decode will use (each prefill length, the decode step): loading
    a compiled artifact's kernels on first call is start-up, not decoding speed."""
    first: dict[int, list[int]] = {}
    for prompt in prompts:
        prefill = prefill_length(graphs, len(prompt))
        if prefill is not None:
            first.setdefault(prefill, prompt)
    if first:
        generate(graphs, list(first.values()), rules, 2)
