"""CTC end to end: Wav2Vec2 and HuBERT tiny random models, exact argmax ids on every runtime, WER, run, Transcriber.

The module builds the checked-in ``manifests/ctc.toml`` validations once (marked slow) in the session's shared
cache; the other tests read their outputs or call the validation's worker on its real inputs.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from ...helpers import REPO, ProjectDir, checkout

slow = pytest.mark.slow
SPEC = "wav2vec2-ctc-random-b2"
PARITY = "wav2vec2-ctc-random-parity"
WAVS = REPO / "manifests" / "data" / "speech"


@pytest.fixture(scope="module")
def ctc(tmp_path_factory: pytest.TempPathFactory, shared_cache: Path) -> ProjectDir:
    project = checkout(tmp_path_factory.mktemp("ctc"), shared_cache)
    res = project.cli("build", PARITY, "hubert-ctc-random-parity")
    assert res.code == 0, res.err + res.out
    return project


def _report(project: ProjectDir, target: str) -> dict[str, Any]:
    result: dict[str, Any] = json.loads((project.root / "out" / target / "report.json").read_text())
    return result


@slow
@pytest.mark.parametrize("target", [PARITY, "hubert-ctc-random-parity"])
def test_every_runtime_gives_the_reference_ids_on_every_frame(ctc: ProjectDir, target: str) -> None:
    report = _report(ctc, target)
    assert report["ok"] and report["random_weights"] is True
    assert report["meaningless_on_random_weights"] == ["wer", "cer", "wer_delta"]
    ref = report["rows"][0]
    assert ref["runtime"] == "pytorch" and len(report["rows"]) >= 2
    assert sum(report["frames"]) > 200  # three utterances, every frame compared
    for row in report["rows"][1:]:
        assert row["token_agreement"] == 1.0 and row["wer_delta"] == 0.0, row
        assert [p["text"] for p in row["per_input"]] == [p["text"] for p in ref["per_input"]]
        assert all(p["first_mismatch"] is None for p in row["per_input"])
        assert row["rtf"] > 0 and row["samples_per_s"] > 0
    # WER is measured against the transcripts (noise on random weights, and shown as such)
    assert ref["wer"] >= 0.5 and report["transcripts"][0] == "hello world this is a test"
    text = (ctc.root / "out" / target / "report.txt").read_text()
    assert "(in parentheses) measure noise" in text and "id agreement" in text


@slow
def test_both_audio_lengths_ran_and_batched(ctc: ProjectDir) -> None:
    report = _report(ctc, PARITY)
    ort = next(r for r in report["rows"] if r["runtime"] == "onnxruntime")
    graphs = {b["graph"]: b["rows"] for b in ort["latency_s"]}
    assert graphs == {"audio-2s": 2, "audio-3s": 1}  # hello + weather in one batch of 2, numbers alone


@slow
def test_a_program_of_other_weights_fails_validation(ctc: ProjectDir, tmp_path: Path) -> None:
    """A runtime whose artifact is not the model's (here: another seed's weights) is caught frame by frame."""
    import torch

    from qeffbuild.core.steps import StepContext
    from qeffbuild.errors import ValidationFailed
    from qeffbuild.tasks.ctc.transform import load_model, logits_module
    from qeffbuild.tasks.ctc.validate import run

    p = ctc.api()
    plan = p.plan([PARITY], with_reasons=False)
    node = plan.by_id[f"validate:{PARITY}"].node
    inputs = {}
    for role, dep in node.deps.items():
        entry = p.store.lookup(plan.by_id[dep].key)
        assert entry is not None
        inputs[role] = p.store.tree(entry)
    role = f"program/{SPEC}/audio-2s"
    good = inputs[role]
    io = json.loads((good / "io.json").read_text())
    model = load_model(inputs["model"] / "model", torch.float32)
    torch.manual_seed(7)
    with torch.no_grad():
        for param in model.lm_head.parameters():
            param.add_(torch.randn_like(param) * 0.5)
    example = (torch.zeros(io["shapes"]["input_values"]), torch.ones(io["shapes"]["attention_mask"],
                                                                     dtype=torch.long))
    bad = tmp_path / "bad"
    bad.mkdir()
    shutil.copy(good / "io.json", bad / "io.json")
    torch.export.save(torch.export.export(logits_module(model, True), example, strict=False), bad / "program.pt2")
    inputs[role] = bad
    params = {**node.params, "runtimes": {"pytorch": "reference", "pytorch-transformed": "program"}}
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(ValidationFailed) as err:
        run(StepContext(node.id, params, inputs, {f.label: f.path for f in node.files}, out))
    assert "ids differ from frame" in str(err.value)
    assert json.loads((out / "report.json").read_text())["rows"][1]["token_agreement"] < 1.0


@slow
def test_run_and_the_transcriber_give_the_validated_texts(ctc: ProjectDir, tmp_path: Path) -> None:
    from qeffbuild import Transcriber

    report = _report(ctc, PARITY)
    by_name = {p["input"]: p["text"] for p in next(r for r in report["rows"]
                                                   if r["runtime"] == "onnxruntime")["per_input"]}
    wavs = [str(WAVS / f"{n}.wav") for n in ("numbers", "hello")]
    res = ctc.cli("run", SPEC, "--json", *wavs)
    assert res.code == 0, res.err
    assert [r["text"] for r in json.loads(res.out)] == [by_name["numbers.wav"], by_name["hello.wav"]]
    t = Transcriber.from_target(SPEC, "aoti", ctc.api())
    assert type(t).__name__ == "CTCTranscriber"
    assert t.transcribe([Path(wavs[1])]) == [by_name["hello.wav"]]
    again = Transcriber.load(t.save(tmp_path / "saved"), "onnxruntime")
    assert again.transcribe([Path(wavs[0])]) == [by_name["numbers.wav"]]
    long = tmp_path / "long.wav"
    import numpy as np
    import soundfile as sf

    sf.write(long, np.zeros(16000 * 5, np.float32), 16000)
    res = ctc.cli("run", SPEC, str(long))
    assert res.code == 2 and "longer than every compiled audio length (3 s); add a longer audio_len_s" in res.err


def test_plan_errors_name_the_key_and_the_fix(tmp_path: Path) -> None:
    project = ProjectDir(tmp_path)
    shutil.copytree(REPO / "manifests" / "data", tmp_path / "manifests" / "data")
    project.manifest("""
        [project]
        name = "ctc-errors"

        [models.m]
        task = "ctc"
        source = { random = "Wav2Vec2ForCTC", tokenizer = { path = "data/ctc-tokenizer" }, config = {vocab_size = 32} }

        [models.not-ctc]
        task = "ctc"
        source = { random = "Wav2Vec2Model", config = { vocab_size = 32 } }

        [specializations.short]
        model = "m"
        audio_len_s = [2]

        [specializations.unused]
        model = "m"
        audio_len_s = [2, 3, 10]

        [validations.too-long]
        model = "m"
        specializations = ["short"]
        runtimes = ["pytorch", "onnxruntime"]
        inputs = "data/speech"

        [validations.unused-length]
        model = "m"
        specializations = ["unused"]
        runtimes = ["pytorch", "onnxruntime"]
        inputs = "data/speech"
        """)
    for target, expect in [("too-long", "'numbers.wav' of validation 'too-long' is 2.43 s, longer than every audio "
                                        "length (2 s); add a longer audio_len_s"),
                           ("unused-length", "audio-10s would serve none of the inputs"),
                           ("not-ctc", "Wav2Vec2Model")]:
        res = project.cli("plan", target)
        assert res.code == 2, res.out
        assert expect in res.err and "project.toml" in res.err, res.err
        assert "Traceback" not in res.err
