"""Data-set evaluation: every input kind, selection, batched decoding with WER and speed, bad rows, keys.

The evaluation set is generated here by ``scripts/make_eval_set.py`` (espeak-ng and sox), as CI does.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from ...helpers import ProjectDir, checkout
from ...reports.browser import render
from .conftest import with_eval

slow = pytest.mark.slow
VALIDATION = "w-eval"


def _rows(eval_set: Path) -> list[dict[str, str]]:
    with open(eval_set / "eval.csv", newline="") as f:
        return list(csv.DictReader(f))


def spec(**kw: Any) -> SimpleNamespace:
    """A validation table as `select` reads it."""
    fields = {"inputs": "data/eval/eval.csv", "split": None, "audio_column": None, "text_column": None,
              "max_duration_s": None, "limit": None, "shuffle_seed": None}
    return SimpleNamespace(**{**fields, **kw})


EVAL_MANIFEST = """
[project]
name = "eval"

[specializations.w-b4]
model = "whisper-tiny-random"
batch_size = 4
ctx_len = 32
compile = ["ort"]

[validations.w-eval]
model = "whisper-tiny-random"
specializations = ["w-b4", "whisper-tiny-random-b1"]
runtimes = ["pytorch", "onnxruntime"]
inputs = "data/eval/eval.csv"
limit = 12
shuffle_seed = 3
exact_subset = 3
"""


@pytest.fixture(scope="module")
def ev(tmp_path_factory: pytest.TempPathFactory, shared_cache: Path, eval_set: Path) -> ProjectDir:
    p = checkout(tmp_path_factory.mktemp("eval"), shared_cache)
    with_eval(p, eval_set)
    p.manifest(EVAL_MANIFEST, "eval.toml")
    r = p.cli("build", VALIDATION)
    assert r.code == 0, r.err
    p.build_err = r.err  # type: ignore[attr-defined]
    return p


@slow
def test_a_table_is_evaluated_at_each_batch_size_with_wer_and_speed(ev: ProjectDir) -> None:
    from qeffbuild.pipeline.datasets import select

    report = json.loads((ev.root / "out" / VALIDATION / "report.json").read_text())
    expected = select(spec(limit=12, shuffle_seed=3), ev.root / "manifests")
    assert report["inputs"] == [r["name"] for r in expected.rows]  # shuffled with the seed, then limited
    assert report["transcripts"] == [r["text"] for r in expected.rows]
    assert len(report["exact_subset"]) == 3 and report["normalizer"] == "whisper-english"
    rows = {(r["runtime"], r["specialization"]): r for r in report["rows"]}
    assert set(rows) == {("pytorch", None), ("onnxruntime", "w-b4"), ("onnxruntime", "whisper-tiny-random-b1")}
    ref = rows[("pytorch", None)]
    assert ref["batch_size"] == 4 and ref["generate_agrees"]  # model.generate at the first specialization's batch
    for key, batches in ((("onnxruntime", "w-b4"), 3), (("onnxruntime", "whisper-tiny-random-b1"), 12)):
        r = rows[key]
        assert r["ok"] and r["token_agreement"] == 1.0
        assert len(r["latency_s"]) == batches and sum(b["rows"] for b in r["latency_s"]) == 12
        assert r["samples_per_s"] > 0 and r["rtf"] > 0 and r["rtf"] == pytest.approx(
            sum(b["seconds"] for b in r["latency_s"]) / report["audio_s"], rel=0.01)
        assert r["wer_delta"] == pytest.approx(r["wer"] - ref["wer"], abs=1e-6)
        assert all("wer" in per and "text" in per for per in r["per_input"])
        # the exact subset carries its tokens; the rest only text
        assert sum("tokens" in per for per in r["per_input"]) == 3
    # progress reached the display (the plain reporter prints the last report): 3 × (2 + 2) + 12 × (1 + 2)
    assert f"validate:{VALIDATION}: 48/48 decodes" in ev.build_err  # type: ignore[attr-defined]


@slow
def test_the_evaluation_report_renders_with_a_throughput_plot(ev: ProjectDir, tmp_path: Path) -> None:
    page = render(ev.root / "out" / VALIDATION / "report.html", tmp_path / "eval.png")
    assert page.errors == []
    titles = [p["title"] for p in page.plots]
    assert "Throughput against batch size" in titles and "WER per utterance (random weights: noise)" in titles


@slow
def test_the_data_sets_content_is_in_the_key(ev: ProjectDir) -> None:
    def action() -> str:
        steps = ev.cli("plan", VALIDATION, "--json").json()["steps"]
        return next(s["action"] for s in steps if s["id"] == f"validate:{VALIDATION}")

    assert action() == "cached"
    report = json.loads((ev.root / "out" / VALIDATION / "report.json").read_text())
    clip = ev.root / "manifests" / "data" / "eval" / report["inputs"][0]
    original = clip.read_bytes()
    clip.touch()  # same bytes, new mtime: re-hashed through the stat cache, still cached
    assert action() == "cached"
    try:
        clip.write_bytes(_altered(original))
        assert action() == "run"
    finally:
        clip.write_bytes(original)
    unused = ev.root / "manifests" / "data" / "eval" / "clips" / "31.wav"
    assert unused.name not in {Path(n).name for n in report["inputs"]}
    unused.write_bytes(_altered(unused.read_bytes()))  # a row the selection skips: no rebuild
    assert action() == "cached"


def _altered(wav: bytes) -> bytes:
    """The same file with a burst of noise in the middle of its samples (its ends are silence)."""
    mid = len(wav) // 2
    return wav[:mid] + bytes(range(200)) + wav[mid + 200:]


def test_every_input_kind_reads_the_same_rows(eval_set: Path, tmp_path: Path) -> None:
    """A CSV, a JSONL, an audiofolder and a saved `datasets` dataset of the same utterances agree."""
    import datasets

    from qeffbuild.pipeline.datasets import open_hf, select
    from qeffbuild.tasks.speech.driver import load_audio

    root = tmp_path / "m"
    shutil.copytree(eval_set, root / "data" / "eval")
    csv_rows = select(spec(limit=5, shuffle_seed=7), root).rows
    jsonl_rows = select(spec(inputs="data/eval/eval.jsonl", limit=5, shuffle_seed=7), root).rows
    assert [(r["name"], r["text"], r["label"]) for r in csv_rows] == \
        [(r["name"], r["text"], r["label"]) for r in jsonl_rows]
    # an audiofolder: metadata.csv with file_name and transcription, in a "test" split folder
    af = root / "data" / "af"
    (af / "test").mkdir(parents=True)
    shutil.copytree(eval_set / "clips", af / "test" / "clips")
    with open(af / "test" / "metadata.csv", "w", newline="") as g:
        w = csv.writer(g)
        w.writerow(["file_name", "transcription"])
        w.writerows([r["path"], r["text"]] for r in _rows(eval_set))
    af_rows = select(spec(inputs="data/af", limit=5, shuffle_seed=7), root).rows
    assert [r["text"] for r in af_rows] == [r["text"] for r in csv_rows]
    assert [r["name"] for r in af_rows] == [r["name"] for r in csv_rows]
    # a dataset saved with save_to_disk (audio bytes embedded), split "validation"
    table = _rows(eval_set)
    paths, texts = [str(eval_set / r["path"]) for r in table], [r["text"] for r in table]
    ds = datasets.Dataset.from_dict({"audio": paths, "sentence": texts}).cast_column("audio", datasets.Audio())
    datasets.DatasetDict({"validation": ds}).save_to_disk(str(root / "data" / "hf"))
    hf_sel = select(spec(inputs="data/hf", limit=5, shuffle_seed=7), root)
    assert hf_sel.kind == "hf" and any(f.label.endswith(".arrow") for f in hf_sel.files)
    got = open_hf(root / "data" / "hf", hf_sel.params)
    assert [t for _, _, t in got] == [r["text"] for r in csv_rows]
    for (_, audio, _), r in zip(got, csv_rows, strict=True):
        np.testing.assert_array_equal(audio, load_audio(root / r["label"])[0])


def test_selection_skips_long_rows_then_limits(eval_set: Path, tmp_path: Path) -> None:
    from qeffbuild.pipeline.datasets import select

    root = tmp_path / "m"
    shutil.copytree(eval_set, root / "data" / "eval")
    every = select(spec(), root).rows
    assert len(every) == 32 and [r["name"] for r in every] == sorted(r["name"] for r in every)
    short = select(spec(max_duration_s=2.0, limit=4), root).rows
    assert len(short) == 4 and all(r["seconds"] <= 2.0 for r in short)
    assert [r["name"] for r in short] == [r["name"] for r in every if r["seconds"] <= 2.0][:4]


BAD = """
[project]
name = "bad"

[models.w]
source = { random = "WhisperForConditionalGeneration", config = { max_target_positions = 64 } }
task = "speech-seq2seq"

[specializations.w-b1]
model = "w"
ctx_len = 48
compile = ["ort"]

[validations.v]
model = "w"
specializations = ["w-b1"]
runtimes = ["pytorch", "onnxruntime"]
inputs = "INPUTS"
EXTRA
"""


def _bad_table(root: Path, eval_set: Path, header: str, lines: list[str]) -> None:
    folder = root / "manifests" / "t"
    shutil.copytree(eval_set / "clips", folder / "clips", dirs_exist_ok=True)
    (folder / "clips" / "bad.wav").write_text("not audio")
    (folder / "t.csv").write_text("\n".join([header, *lines]) + "\n")


@pytest.mark.parametrize(("header", "lines", "extra", "message"), [
    ("path,text", ["clips/00.wav,a", "clips/01.wav,b", "clips/missing.wav,c"], "",
     "inputs: t.csv line 4 (clips/missing.wav): "),
    ("path,text", ["clips/00.wav,a", "clips/bad.wav,b"], "", "inputs: t.csv line 3 (clips/bad.wav): not audio "
                                                             "soundfile can read"),
    ("path,text", ["clips/00.wav,a", "clips/01.wav,b"], 'text_column = "sentence"',
     "text_column: t.csv has no column 'sentence' (its columns: path, text); set text_column"),
    ("path,words", ["clips/00.wav,a", "clips/01.wav,b"], "",
     "text_column: t.csv has no transcript column (text or transcription or sentence or transcript; its columns: "
     "path, words); set text_column"),
    ("file,text", ["clips/00.wav,a"], "", "audio_column: t.csv has no column 'path' (its columns: file, text)"),
    ("path,text", [], "", "inputs: t.csv has no rows: the data set is empty"),
    ("path,text", ["clips/00.wav,a", "clips/01.wav,b"], "max_duration_s = 0.5",
     "max_duration_s: no row of 't/t.csv' is at most 0.5 s long (2 skipped); raise max_duration_s"),
    ("path,text", ["clips/00.wav,", "clips/01.wav,"], "checks = { onnxruntime = { wer = 0.5 } }",
     "checks.onnxruntime.wer: wer needs transcripts"),
    ("path,text", ["clips/00.wav,a", "clips/01.wav,b"], 'split = "test"',
     "split: split applies to audiofolders and saved data sets, not to a table"),
])
def test_bad_data_set_rows_are_located_errors(project: ProjectDir, eval_set: Path, header: str, lines: list[str],
                                              extra: str, message: str) -> None:
    _bad_table(project.root, eval_set, header, lines)
    project.manifest(BAD.replace("INPUTS", "t/t.csv").replace("EXTRA", extra))
    r = project.cli("build", "v")
    assert r.code == 2, r.out + r.err
    assert message in r.err and "[validations.v]" in r.err and "Traceback" not in r.err
    assert not (project.root / "out" / "v").exists()  # nothing ran, nothing half-written


@slow
def test_a_saved_dataset_with_a_missing_column_fails_cleanly(project: ProjectDir, eval_set: Path,
                                                             shared_cache: Path) -> None:
    import datasets

    project.env = {"QEFFBUILD_CACHE_DIR": str(shared_cache)}
    rows = _rows(eval_set)[:3]
    ds = datasets.Dataset.from_dict({"audio": [str(eval_set / r["path"]) for r in rows],
                                     "words": [r["text"] for r in rows]}).cast_column("audio", datasets.Audio())
    ds.save_to_disk(str(project.root / "manifests" / "hf"))
    project.manifest(BAD.replace("INPUTS", "hf").replace("EXTRA", ""))
    r = project.cli("build", "v")  # found at plan time, from the JSON save_to_disk wrote: nothing is built
    assert r.code == 2, r.err
    assert "hf has no column 'text or transcription or sentence or transcript' for the transcripts (its columns: " \
           "audio, words); set text_column" in r.err and "text_column" in r.err
    assert not (project.root / "out" / "v").exists() and "built" not in r.err


def test_a_saved_datasets_columns_are_read_from_its_json_at_plan_time(tmp_path: Path) -> None:
    """save_to_disk's dataset_info.json (and dataset_dict.json for splits) name the columns; where that JSON is
    missing, broken or names no single split, the plan leaves the check to the worker (None)."""
    import json

    from qeffbuild.pipeline.datasets import _hf_columns

    one = tmp_path / "one"
    one.mkdir()
    (one / "dataset_info.json").write_text(json.dumps({"features": {"audio": {}, "text": {}}}))
    assert _hf_columns(one, None) == ["audio", "text"]
    both = tmp_path / "both"
    for split, cols in (("train", ["audio", "sentence"]), ("test", ["audio", "words"])):
        (both / split).mkdir(parents=True)
        (both / split / "dataset_info.json").write_text(json.dumps({"features": {c: {} for c in cols}}))
    (both / "dataset_dict.json").write_text(json.dumps({"splits": ["train", "test"]}))
    assert _hf_columns(both, "test") == ["audio", "words"]
    assert _hf_columns(both, None) is None and _hf_columns(both, "dev") is None  # the worker names the splits
    (one / "dataset_info.json").write_text("{not json")
    assert _hf_columns(one, None) is None and _hf_columns(tmp_path / "missing", None) is None
