"""Causal LMs end to end: five architectures' tiny random models, retained-state graphs, every runtime exact.

The module builds the checked-in ``manifests/causal-lm.toml`` validations once (marked slow) in the session's
shared cache; the other tests read their outputs or call the validation's worker on its real inputs.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from ...helpers import ProjectDir, checkout

slow = pytest.mark.slow
ARCHS = ("llama", "qwen2", "mistral", "phi3", "gpt2")
SPEC = "tiny-llama-b1"


@pytest.fixture(scope="module")
def lm(tmp_path_factory: pytest.TempPathFactory, shared_cache: Path) -> ProjectDir:
    project = checkout(tmp_path_factory.mktemp("lm"), shared_cache)
    res = project.cli("build", *(f"tiny-{a}-parity" for a in ARCHS))
    assert res.code == 0, res.err + res.out
    return project


def _report(project: ProjectDir, target: str) -> dict[str, Any]:
    result: dict[str, Any] = json.loads((project.root / "out" / target / "report.json").read_text())
    return result


@slow
@pytest.mark.parametrize("arch", ARCHS)
def test_every_runtime_gives_the_reference_tokens(lm: ProjectDir, arch: str) -> None:
    report = _report(lm, f"tiny-{arch}-parity")
    assert report["ok"] and report["random_weights"] is True
    assert report["steps"] >= 32 and len(set(report["prompt_tokens"])) >= 3
    ref = report["rows"][0]
    assert ref["runtime"] == "pytorch" and ref["generate_agrees"] is True
    assert len(report["rows"]) >= 2
    for row in report["rows"][1:]:
        assert row["token_agreement"] == 1.0, row
        assert [p["tokens"] for p in row["per_input"]] == [p["tokens"] for p in ref["per_input"]]
        assert all(len(p["tokens"]) == report["steps"] for p in row["per_input"])


@slow
def test_llama_runs_both_prefill_lengths_on_every_runtime(lm: ProjectDir) -> None:
    report = _report(lm, "tiny-llama-parity")
    assert {r["runtime"] for r in report["rows"]} == {"pytorch", "pytorch-transformed", "onnxruntime", "aoti"}
    # prompts of 2–24 tokens: the short ones use the 16-token prefill, the long one the 32-token prefill
    assert min(report["prompt_tokens"]) <= 16 < max(report["prompt_tokens"]) <= 32
    assert lm.cli("build", SPEC).code == 0
    out = lm.root / "out" / SPEC
    for backend in ("ort", "aoti"):
        assert {p.name for p in (out / backend).iterdir()} == {"prefill-16", "prefill-32", "decode"}
    text = (lm.root / "out" / "tiny-llama-parity" / "report.txt").read_text()
    assert "random weights" in text and "token agreement" in text


def _validate_inputs(project: ProjectDir) -> tuple[Any, dict[str, Path]]:
    p = project.api()
    plan = p.plan(["tiny-llama-parity"], with_reasons=False)
    node = plan.by_id["validate:tiny-llama-parity"].node
    inputs = {}
    for role, dep in node.deps.items():
        entry = p.store.lookup(plan.by_id[dep].key)
        assert entry is not None
        inputs[role] = p.store.tree(entry)
    return node, inputs


def baked_decode(model_dir: Path, good: Path, dest: Path) -> Path:
    """A decode program whose past keys/values come from module buffers: exported, a cache frozen as constants."""
    import torch

    from qeffbuild.tasks.causal_lm.transform import load_model, step_module

    io = json.loads((good / "io.json").read_text())
    n = io["layers"]["n_layers"]
    step = step_module(load_model(model_dir, torch.float32), n)
    past = [k for k in io["inputs"] if k.startswith("past_")]

    class Baked(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.step = step
            for i, name in enumerate(past):
                self.register_buffer(f"cache{i}", torch.zeros(io["shapes"][name]))

        def forward(self, input_ids: Any, position: Any, *_past: Any) -> Any:
            return self.step(input_ids, position, *(getattr(self, f"cache{i}") for i in range(len(past))))

    example = (torch.ones(io["shapes"]["input_ids"], dtype=torch.long), torch.tensor(0),
               *(torch.zeros(io["shapes"][k]) for k in past))
    dest.mkdir(parents=True)
    shutil.copy(good / "io.json", dest / "io.json")
    torch.export.save(torch.export.export(Baked().eval(), example, strict=False), dest / "program.pt2")
    return dest


@slow
def test_a_decode_graph_with_a_baked_cache_fails_validation(lm: ProjectDir, tmp_path: Path) -> None:
    from qeffbuild.core.steps import StepContext
    from qeffbuild.errors import ValidationFailed
    from qeffbuild.tasks.causal_lm.validate import run

    node, inputs = _validate_inputs(lm)
    role = f"program/{SPEC}/decode"
    inputs[role] = baked_decode(inputs["model"] / "model", inputs[role], tmp_path / "decode")
    params = {**node.params, "runtimes": {"pytorch": "reference", "pytorch-transformed": "program"}}
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(ValidationFailed) as err:
        run(StepContext(node.id, params, inputs, {f.label: f.path for f in node.files}, out))
    assert "pytorch-transformed" in str(err.value) and "tokens differ from step" in str(err.value)
    report = json.loads((out / "report.json").read_text())
    assert report["rows"][1]["token_agreement"] < 0.5


@slow
def test_run_generates_what_validation_compared(lm: ProjectDir) -> None:
    report = _report(lm, "tiny-llama-parity")
    ort = next(r for r in report["rows"] if r["runtime"] == "onnxruntime")
    prompts = report["prompts"][:2]
    res = lm.cli("run", SPEC, "--runtime", "onnxruntime", "--max-new-tokens", "32", "--json", *prompts)
    assert res.code == 0, res.err
    rows = json.loads(res.out)
    assert [r["tokens"] for r in rows] == [p["tokens"] for p in ort["per_input"][:2]]
    text = lm.cli("run", SPEC, "--runtime", "aoti", "--max-new-tokens", "32", prompts[0])
    assert text.code == 0, text.err
    assert "\x1b" not in text.out and "random weights" in (text.out + text.err)


@slow
def test_bench_sets_every_runtime_beside_eager_and_compiled_generate(lm: ProjectDir) -> None:
    """HF's own fast path (static cache + torch.compile) is a baseline beside eager generate, timed the same way."""
    res = lm.cli("bench", "tiny-llama-parity", "-n", "2", "--warmup", "1", "--json")
    assert res.code == 0, res.err
    rows = {r["runtime"]: r for r in json.loads(res.out)}
    assert set(rows) == {"generate (HF, eager)", "generate (HF, static cache + torch.compile)", "pytorch-transformed",
                         "onnxruntime", "aoti"}
    # on a loaded machine (this suite runs beside other tests) a row may have had no sample where N tokens took
    # longer than one: it says so instead of a figure (never 0 ms); any other reason is a failure
    unmeasured = {name for name, r in rows.items() if "unavailable" in r}
    assert all("other work on the machine" in rows[name]["unavailable"] for name in unmeasured), rows
    assert len(unmeasured) < 3, rows
    compiled = rows["generate (HF, static cache + torch.compile)"]
    assert "unavailable" in compiled or compiled["p50_ms"] > 0  # it runs on CPU with torch 2.13
    base = rows["generate (HF, eager)"]
    for name in {"pytorch-transformed", "onnxruntime", "aoti"} - unmeasured:
        r = rows[name]
        assert r["p50_ms"] > 0 and r["throughput_per_s"] == pytest.approx(1000 / r["p50_ms"], rel=1e-9)
        if "p50_ms" in base:
            assert r["speedup_per_token_vs_generate"] == pytest.approx(base["p50_ms"] / r["p50_ms"], rel=1e-9)


@slow
def test_one_qaic_bundle_holds_prefill_and_decode_and_gives_the_reference_tokens(lm: ProjectDir) -> None:
    """As QEfficient compiles a causal LM: one ONNX graph whose seq_len is a symbol, one QPC with a Prefill and a
    Decode specialization. The card cannot run here, so the bundle's own ONNX runs on ONNX Runtime at both
    shapes (one session for prefill and decode) and must give the validated tokens."""
    import transformers

    from qeffbuild.core.plugins import plugins
    from qeffbuild.runtimes import open_session
    from qeffbuild.tasks.causal_lm.driver import Graphs, generate, rules_of

    res = lm.cli("build", "tiny-llama-ai100")
    assert res.code == 0, res.err
    bundles = [d for d in (lm.root / "out" / "tiny-llama-ai100" / "qaic-bundle").iterdir() if d.is_dir()]
    assert [d.name for d in bundles] == ["any"]
    specs = json.loads((bundles[0] / "specializations.json").read_text())["specializations"]
    assert [(g["name"], g["symbols"]["seq_len"]) for g in specs] == [("Prefill", "32"), ("Decode", "1")]
    io = json.loads((bundles[0] / "io.json").read_text())
    session = open_session(plugins(), "onnxruntime", bundles[0], "cpu")
    model_dir = lm.root / "out" / "tiny-llama-ai100" / "model"
    tokenizer = transformers.AutoTokenizer.from_pretrained(model_dir)
    texts = (lm.root / "manifests" / "data" / "prompts.txt").read_text().splitlines()
    prompts = [list(tokenizer(t)["input_ids"]) for t in texts if t.strip()]
    report = _report(lm, "tiny-llama-parity")
    got = generate(Graphs({32: session}, session, io), prompts, rules_of(model_dir), report["steps"])
    assert got == [p["tokens"] for p in report["rows"][0]["per_input"]]  # the unmodified model's tokens


def test_plan_errors_name_the_key_and_the_fix(tmp_path: Path) -> None:
    project = ProjectDir(tmp_path)
    shutil.copytree(Path(__file__).resolve().parents[3] / "manifests" / "data", tmp_path / "manifests" / "data")
    project.manifest("""
        [project]
        name = "lm-errors"

        [models.m]
        task = "causal-lm"

        [models.m.source]
        random = "LlamaForCausalLM"
        tokenizer = { path = "data/lm-tokenizer" }

        [models.m.source.config]
        vocab_size = 400
        hidden_size = 32
        intermediate_size = 64
        num_hidden_layers = 1
        num_attention_heads = 4
        max_position_embeddings = 64

        [specializations.big]
        model = "m"
        prefill_seq_len = [32]
        ctx_len = 100

        [specializations.long-prefill]
        model = "m"
        prefill_seq_len = [48]
        ctx_len = 40

        [specializations.ok]
        model = "m"
        prefill_seq_len = [32]
        ctx_len = 48

        [validations.v]
        model = "m"
        specializations = ["ok"]
        runtimes = ["pytorch", "onnxruntime"]
        inputs = "data/prompts.txt"
        max_new_tokens = 32
        """)
    for target, expect in [("big", "ctx_len 100 exceeds the model's positions (64)"),
                           ("long-prefill", "does not fit ctx_len 40"),
                           ("v", "make it at least 63")]:
        res = project.cli("plan", target)
        assert res.code == 2, res.out
        assert expect in res.err and "project.toml" in res.err, res.err
        assert "Traceback" not in res.err
