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
    # audio longer than every compiled length is read in chunks of the longest, on every runtime alike
    import soundfile as sf

    long = tmp_path / "long.wav"
    sf.write(long, _long_utterance().audio, 16000)
    res = ctc.cli("run", SPEC, "--json", str(long))
    assert res.code == 0, res.err
    row = json.loads(res.out)[0]
    assert row["chunks"] >= 3 and len(row["ids"]) > 350
    assert t.transcribe_detailed([long])[0]["ids"] == row["ids"]


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
        chunk_stride_s = 1

        [validations.unused-length]
        model = "m"
        specializations = ["unused"]
        runtimes = ["pytorch", "onnxruntime"]
        inputs = "data/speech"
        """)
    for target, expect in [("too-long", "a stride of 1 s on each side leaves nothing of the 2 s chunks of 'short' "
                                        "(its longest audio_len_s); set chunk_stride_s below 1"),
                           ("unused-length", "audio-10s would serve none of the inputs"),
                           ("not-ctc", "Wav2Vec2Model")]:
        res = project.cli("plan", target)
        assert res.code == 2, res.out
        assert expect in res.err and "project.toml" in res.err, res.err
        assert "Traceback" not in res.err


class _TorchSession:
    """A graph's ``run(feeds)`` on the unmodified model: the driver's chunking, isolated from any export."""

    def __init__(self, model: Any) -> None:
        self.model = model

    def run(self, feeds: dict[str, Any]) -> list[Any]:
        import torch

        with torch.no_grad():
            mask = feeds.get("attention_mask")
            out = self.model(torch.from_numpy(feeds["input_values"]),
                             attention_mask=None if mask is None else torch.from_numpy(mask))
        return [out.logits.numpy()]


@pytest.fixture(scope="module")
def tiny_ctc(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """manifests/ctc.toml's tiny Wav2Vec2ForCTC (seed 0) saved with its tokenizer and feature extractor."""
    import torch
    import transformers

    folder = tmp_path_factory.mktemp("tiny-ctc")
    torch.manual_seed(0)
    cfg = transformers.Wav2Vec2Config(vocab_size=32, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                      intermediate_size=64, conv_dim=[32] * 7, num_conv_pos_embeddings=16,
                                      num_conv_pos_embedding_groups=2, feat_extract_norm="layer",
                                      do_stable_layer_norm=True, pad_token_id=0, initializer_range=0.5)
    transformers.Wav2Vec2ForCTC(cfg).eval().save_pretrained(folder)
    for f in (REPO / "manifests" / "data" / "ctc-tokenizer").iterdir():
        shutil.copy(f, folder / f.name)
    transformers.Wav2Vec2FeatureExtractor(return_attention_mask=True).save_pretrained(folder)
    return folder


def _long_utterance() -> Any:
    """About 8 s of real speech: three recordings and one of them again, end to end."""
    import numpy as np

    from qeffbuild.pipeline.audio import Utterance, load_audio

    audio = np.concatenate([load_audio(WAVS / f"{n}.wav")[0] for n in ("numbers", "hello", "weather", "numbers")])
    return Utterance("long.wav", audio.astype(np.float32), None)


def test_long_audio_is_read_in_the_chunks_transformers_pipeline_reads(tiny_ctc: Path) -> None:
    """Audio longer than every graph: the driver's chunks, strides and kept frames are the ASR pipeline's
    (chunk_length_s = the longest graph), so the text is the pipeline's text."""
    import transformers

    from qeffbuild.tasks.ctc.driver import Chunking, Frontend, recognize, reference

    model = transformers.Wav2Vec2ForCTC.from_pretrained(tiny_ctc).eval()
    frontend = Frontend(tiny_ctc)
    utt = _long_utterance()
    graphs = {"audio-2s": 32000, "audio-3s": 48000}
    chunking = Chunking.of(frontend.config, graphs)
    assert (chunking.chunk, chunking.stride) == (48000, 8000)
    session = _TorchSession(model)
    got = recognize({g: session for g in graphs}, frontend, [utt], graphs, batch=2, chunking=chunking)
    assert utt.seconds > 7 and got.chunks[0] >= 3  # chunks 2 s apart
    assert reference(model, frontend, [utt], graphs, chunking) == got.ids
    pipe = transformers.pipeline("automatic-speech-recognition", model=model, tokenizer=frontend.tokenizer,
                                 feature_extractor=frontend.fe, device="cpu")
    expected = pipe(utt.audio.copy(), chunk_length_s=3)["text"]
    assert frontend.text(got.ids[0]) == expected.strip() and len(expected.split()) >= 5
    # no frame lost or read twice at the seams: as many ids as one pass over the whole audio gives (on random
    # weights the ids themselves differ with the context, so only the count is compared)
    whole = reference(model, frontend, [utt], {"audio-10s": 160000})[0]
    assert abs(len(got.ids[0]) - len(whole)) <= 1


def test_a_stride_that_leaves_nothing_is_refused(tiny_ctc: Path) -> None:
    from qeffbuild.errors import InputError
    from qeffbuild.tasks.ctc.driver import Chunking, Frontend

    with pytest.raises(InputError, match=r"set chunk_stride_s below 1\.5"):
        Chunking.of(Frontend(tiny_ctc).config, {"audio-3s": 48000}, 1.5)
