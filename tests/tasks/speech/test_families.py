"""Speech2Text and SpeechEncoderDecoder models through the same retained-state rewrite as Whisper.

Built once per module (the session's shared cache): a tiny random Speech2Text, a random
Wav2Vec2 + BERT from encoder and decoder configs, and a Wav2Vec2 + GPT-2 composed from two sources.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ...helpers import DATA, REPO, ProjectDir, checkout

pytestmark = pytest.mark.slow
PARITY = {"speech2text": "s2t-tiny-random-parity", "wav2vec2+bert": "w2v-bert-random-parity",
          "wav2vec2+gpt2 (composed)": "w2v-gpt2-composed-parity"}
SPEC = {"speech2text": "s2t-tiny-random-b2", "wav2vec2+bert": "w2v-bert-random-b1",
        "wav2vec2+gpt2 (composed)": "w2v-gpt2-composed-b2"}


@pytest.fixture(scope="module")
def fam(tmp_path_factory: pytest.TempPathFactory, shared_cache: Path) -> ProjectDir:
    project = checkout(tmp_path_factory.mktemp("families"), shared_cache)
    res = project.cli("build", *PARITY.values())
    assert res.code == 0, res.err
    return project


def _report(project: ProjectDir, target: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((project.root / "out" / target / "report.json").read_text())
    return data


@pytest.mark.parametrize("family", list(PARITY))
def test_every_runtime_decodes_the_reference_tokens(fam: ProjectDir, family: str) -> None:
    report = _report(fam, PARITY[family])
    assert report["ok"] and report["steps"] >= 20 and len(report["inputs"]) >= 2
    rows = {r["runtime"]: r for r in report["rows"]}
    assert rows["pytorch"]["generate_agrees"]  # the greedy reference loop = model.generate
    ref = [p["tokens"] for p in rows["pytorch"]["per_input"]]
    assert all(len(set(t)) >= 2 for t in ref)  # varied tokens: a frozen cache cannot hide behind a constant
    assert len({tuple(t) for t in ref}) == len(ref)  # input-dependent
    compiled = [r for r in rows if r != "pytorch"]
    assert "pytorch-transformed" in compiled and "onnxruntime" in compiled
    for name in compiled:
        assert rows[name]["token_agreement"] == 1.0
        assert [p["tokens"] for p in rows[name]["per_input"]] == ref


def test_batched_rows_equal_batch_one(fam: ProjectDir) -> None:
    """The Speech2Text specialization decodes at batch 2; the reference is per utterance at batch 1."""
    report = _report(fam, PARITY["speech2text"])
    rows = {r["runtime"]: r for r in report["rows"]}
    assert rows["onnxruntime"]["batch_size"] == 2 and rows["onnxruntime"]["token_agreement"] == 1.0


@pytest.mark.parametrize("family", ["speech2text", "wav2vec2+bert"])
def test_a_decoder_with_a_baked_cache_fails_for_every_family(fam: ProjectDir, family: str, tmp_path: Path) -> None:
    from qeffbuild.core.steps import StepContext
    from qeffbuild.errors import ValidationFailed
    from qeffbuild.tasks.speech.validate import run

    from .baked import baked_decoder

    p = fam.api()
    target = PARITY[family]
    plan = p.plan([target], with_reasons=False)
    node = plan.by_id[f"validate:{target}"].node
    find = p.artifact_finder(plan, node.id)
    inputs = {role: find(role) for role in node.deps}
    role = f"program/{SPEC[family]}/decoder"
    inputs[role] = baked_decoder(inputs["model"] / "model", inputs[role], tmp_path / "decoder")
    params = {**node.params, "runtimes": {"pytorch": "reference", "pytorch-transformed": "program"}}
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(ValidationFailed) as err:
        run(StepContext(node.id, params, inputs, {f.label: f.path for f in node.files}, out))
    for wav in ("hello.wav", "numbers.wav", "weather.wav"):
        assert f"pytorch-transformed [{SPEC[family]}]: {wav}: tokens differ from step" in str(err.value)


SAVED = """
[project]
name = "saved"

[models.saved]
source = {{ path = "ckpt" }}
task = "speech-seq2seq"

[specializations.saved-b1]
model = "saved"
ctx_len = 32
audio_len_s = [2, 3]
compile = ["ort"]

[validations.saved-parity]
model = "saved"
specializations = ["saved-b1"]
runtimes = ["pytorch", "pytorch-transformed", "onnxruntime"]
inputs = "speech"
"""


# A SpeechEncoderDecoder folder (a composite config: encoder and decoder configs in one) is the family-specific
# case; a ForConditionalGeneration folder (Speech2Text's kind) is the Whisper checkpoint-folder test's.
@pytest.mark.parametrize(("family", "model"), [("wav2vec2+bert", "w2v-bert-random")])
def test_a_saved_model_folder_builds_by_changing_only_source(fam: ProjectDir, project: ProjectDir, family: str,
                                                             model: str) -> None:
    """QEfficient's test_seq2seq_pretrained: a random model saved with save_pretrained, declared by path."""
    assert fam.cli("build", model).code == 0
    shutil.copytree(fam.root / "out" / model / "model", project.root / "manifests" / "ckpt")
    shutil.copytree(DATA / "speech", project.root / "manifests" / "speech")
    project.manifest(SAVED.format())
    res = project.cli("build", "saved-parity")
    assert res.code == 0, res.err
    saved = _report(project, "saved-parity")
    original = _report(fam, PARITY[family])
    tokens = [[p["tokens"] for p in r["per_input"]] for r in (saved["rows"][0], original["rows"][0])]
    assert tokens[0] == tokens[1]  # the same model, by content
    assert saved["rows"][2]["token_agreement"] == 1.0


@pytest.mark.parametrize("family", list(PARITY))
def test_save_and_load_round_trip_in_a_new_process(fam: ProjectDir, family: str, tmp_path: Path) -> None:
    from qeffbuild import Transcriber

    wavs = [str(DATA / "speech" / f"{n}.wav") for n in ("weather", "hello")]
    t = Transcriber.from_target(SPEC[family], "onnxruntime", fam.api())
    texts = t.transcribe([Path(w) for w in wavs], 20)
    saved = t.save(tmp_path / "saved")
    code = ("import sys, json\nfrom pathlib import Path\nfrom qeffbuild import Transcriber\n"
            "t = Transcriber.load(Path(sys.argv[1]), 'onnxruntime')\n"
            "print(json.dumps(t.transcribe([Path(a) for a in sys.argv[2:]], 20)))\n")
    out = subprocess.run([sys.executable, "-c", code, str(saved), *wavs], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1]) == texts
    report = _report(fam, PARITY[family])
    row = next(r for r in report["rows"] if r["runtime"] == "onnxruntime")
    by_name = {p["input"]: p for p in row["per_input"]}
    for wav, text in zip(("weather.wav", "hello.wav"), texts, strict=True):
        assert by_name[wav]["text"].startswith(text) or text.startswith(by_name[wav]["text"])


def test_run_transcribes_long_and_other_format_audio_and_says_what_it_did(fam: ProjectDir, tmp_path: Path) -> None:
    import soundfile as sf

    audio, rate = sf.read(str(DATA / "speech" / "numbers.wav"), dtype="float32")
    long = np.concatenate([audio, np.zeros(rate // 2, np.float32), audio])  # ~5.4 s: longer than the 3 s graph
    sf.write(tmp_path / "LONG.FLAC", long, rate)
    sf.write(tmp_path / "fast.wav", audio, 22050)  # another sample rate: resampled, and said so
    res = fam.cli("run", SPEC["speech2text"], "--json", str(tmp_path / "LONG.FLAC"), str(tmp_path / "fast.wav"))
    assert res.code == 0, res.err
    rows = res.json()
    assert [r["input"] for r in rows] == [str(tmp_path / "LONG.FLAC"), str(tmp_path / "fast.wav")]
    assert any("decoded chunked (3 s chunks, 0.5 s overlap), 2 windows" in n for n in rows[0]["notes"])
    assert rows[0]["method"] == "chunked (3 s chunks, 0.5 s overlap)"
    assert any("resampled from 22050 Hz to 16000 Hz" in n for n in rows[1]["notes"])
    human = fam.cli("run", SPEC["speech2text"], "--max-new-tokens", "200", str(tmp_path / "fast.wav"))
    assert "note:" in human.err and "decoding at most" in human.err


def test_plan_time_facts_per_family(fam: ProjectDir) -> None:
    """Encoder lengths per bucket come from each architecture's own convolutions, not Whisper's 1500."""
    plan = fam.api().plan(["s2t-tiny-random-b2", "w2v-bert-random-b1"], with_reasons=False)
    params = {s.id: s.node.params for s in plan.steps}
    # Speech2Text: 10 ms frames, two stride-2 convolutions: 3 s → 298 frames → 75 positions
    assert params["transform:s2t-tiny-random-b2:encoder-3s"]["bucket_encoder_len"] == 75
    assert params["transform:s2t-tiny-random-b2:encoder-2s"]["bucket_encoder_len"] == 50
    assert params["transform:s2t-tiny-random-b2:decoder"]["encoder_len"] == 75
    # Wav2Vec2's feature encoder (total stride 320): 3 s = 48000 samples → 149 frames
    assert params["transform:w2v-bert-random-b1:encoder-3s"]["bucket_encoder_len"] == 149


def test_a_bucket_change_rebuilds_the_encoder_side_only_and_ctx_len_the_decoder_side(fam: ProjectDir) -> None:
    manifest = fam.root / "manifests" / "speech-families.toml"
    original = manifest.read_text()
    try:
        manifest.write_text(original.replace("audio_len_s = [2, 3]                # log-mel",
                                             "audio_len_s = [1.9, 3]              # log-mel", 1))
        plan = {s["id"]: s["action"] for s in fam.cli("plan", PARITY["speech2text"], "--json").json()["steps"]}
        to_run = {sid for sid, a in plan.items() if a == "run"}
        spec = SPEC["speech2text"]
        assert {f"transform:{spec}:encoder-1.9s", f"compile:ort:{spec}:encoder-1.9s"} <= to_run
        assert not any(":decoder" in sid or "encoder-3s" in sid for sid in to_run)
        manifest.write_text(original.replace("batch_size = 2\nctx_len = 32", "batch_size = 2\nctx_len = 40", 1))
        plan = {s["id"]: s["action"] for s in fam.cli("plan", PARITY["speech2text"], "--json").json()["steps"]}
        to_run = {sid for sid, a in plan.items() if a == "run"}
        assert f"transform:{spec}:decoder" in to_run and not any("encoder" in sid for sid in to_run)
    finally:
        manifest.write_text(original)


BAD = """
[project]
name = "bad"

[models.s2t]
task = "speech-seq2seq"
source.random = "Speech2TextForConditionalGeneration"
source.tokenizer = {{ path = "s2t-tokenizer" }}
source.config = {{ max_target_positions = 64 }}

[specializations.s2t-b1]
model = "s2t"
ctx_len = 32
{buckets}

[validations.s2t-parity]
model = "s2t"
specializations = ["s2t-b1"]
runtimes = ["pytorch", "onnxruntime"]
inputs = "audio"
{extra}
"""


@pytest.mark.parametrize(("buckets", "files", "extra", "message"), [
    ("audio_len_s = [1]", ["hello.wav", "weather.wav"], "condition_on_previous_text = true",
     "condition_on_previous_text: speech2text predicts no timestamps: long audio is decoded in overlapping chunks"),
    ("audio_len_s = [3]", ["hello.wav", "weather.wav"], "chunk_stride_s = 0",
     "chunk_stride_s: input should be greater than 0, got 0"),
    ("audio_len_s = [2, 5]", ["hello.wav", "weather.wav"], "",
     "[specializations.s2t-b1] audio_len_s: encoder-5s would serve none of the inputs of validation 's2t-parity'"),
    ("", ["hello.wav", "weather.wav"], "", "audio_len_s: a speech2text specialization lists the audio lengths"),
    ("audio_len_s = [3]", ["hello.wav", "notes.wav"], "", "inputs: notes.wav: not audio soundfile can read"),
    ("audio_len_s = [3]", [], "", "inputs: 'audio' holds no audio files"),
    ("audio_len_s = [3]", ["hello.wav", "weather.wav"], 'language = "fr"',
     "language: language applies to multilingual Whisper models, not speech2text"),
])
def test_bad_speech_inputs_are_clear_plan_time_errors(project: ProjectDir, buckets: str, files: list[str],
                                                      extra: str, message: str) -> None:
    shutil.copytree(DATA / "s2t-tokenizer", project.root / "manifests" / "s2t-tokenizer")
    folder = project.root / "manifests" / "audio"
    folder.mkdir(parents=True)
    for name in files:
        src = DATA / "speech" / name
        if src.exists():
            shutil.copy(src, folder / name)
        else:
            (folder / name).write_text("not audio at all")
    project.manifest(BAD.format(buckets=buckets, extra=extra))
    res = project.cli("plan", "s2t-parity")
    assert res.code == 2, res.out
    assert message in res.err and "Traceback" not in res.err


def test_a_whisper_language_is_checked_against_the_model(project: ProjectDir) -> None:
    shutil.copytree(REPO / "manifests" / "data", project.root / "manifests" / "data")
    text = (REPO / "manifests" / "whisper.toml").read_text()
    anchor = "inputs = \"data/speech\"\nmax_new_tokens = 24\n\n[validations.whisper-tiny-random-bf16"
    project.manifest(text.replace(anchor, anchor.replace("\n\n", "\nlanguage = \"xx\"\n\n"), 1), "whisper.toml")
    res = project.cli("plan", "whisper-tiny-random-parity")
    assert res.code == 2 and "language 'xx' is not one of the model's languages" in res.err


def test_long_audio_is_decoded_in_overlapping_chunks_like_the_reference(fam: ProjectDir, tmp_path: Path,
                                                                         shared_cache: Path) -> None:
    """Speech2Text predicts no timestamps: audio longer than its longest graph is cut into overlapping chunks,
    each decoded to its EOS and merged at the seams, by every runtime as by the unmodified model."""
    import soundfile as sf

    project = checkout(tmp_path / "chunked", shared_cache)  # fam built the model: only the validation runs
    data = project.root / "manifests" / "long"
    data.mkdir()
    audio, rate = sf.read(str(DATA / "speech" / "numbers.wav"), dtype="float32")
    sf.write(data / "long.wav", np.concatenate([audio, np.zeros(rate // 2, np.float32), audio]), rate)
    (data / "long.txt").write_text("one two three four five six seven one two three four five six seven\n")
    for name in ("hello", "weather"):
        shutil.copy(DATA / "speech" / f"{name}.wav", data)
        shutil.copy(DATA / "speech" / f"{name}.txt", data)
    project.manifest('[project]\nname = "chunked"\n[validations.s2t-long]\nmodel = "s2t-tiny-random"\n'
                     'specializations = ["s2t-tiny-random-b2"]\nruntimes = ["pytorch", "onnxruntime"]\n'
                     'inputs = "long"\nchunk_stride_s = 0.75\n', "long.toml")
    res = project.cli("build", "s2t-long")
    assert res.code == 0, res.err
    report = _report(project, "s2t-long")
    assert report["long_form"]["method"] == "chunked (3 s chunks, 0.75 s overlap)"
    assert report["long_form"]["inputs"] == ["long.wav"]
    rows = {r["runtime"]: r for r in report["rows"]}
    assert rows["onnxruntime"]["token_agreement"] == 1.0
    long_ref = next(p for p in rows["pytorch"]["per_input"] if p["input"] == "long.wav")
    long_ort = next(p for p in rows["onnxruntime"]["per_input"] if p["input"] == "long.wav")
    assert long_ort["tokens"] == long_ref["tokens"] and long_ort["long_form"]["windows"] == 3
