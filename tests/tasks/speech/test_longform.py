"""Long-form transcription: recordings many windows long, token for token what HF's long-form generate gives.

Built once per module: the checked-in long-form validations (manifests/whisper.toml) on the generated
evaluation set's long recordings (51 s and 75 s, spoken by espeak-ng; the random Whisper reads 4 s at once),
one of them multilingual-shaped, conditioned on the previous text and decoded at batch 2.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from ...helpers import ProjectDir, checkout
from .conftest import with_eval

pytestmark = pytest.mark.slow
LF, ML = "whisper-longform-random-parity", "whisper-multilingual-longform-parity"
SPEC = "whisper-tiny-random-ts-b1"


@pytest.fixture(scope="module")
def lf(tmp_path_factory: pytest.TempPathFactory, shared_cache: Path, eval_set: Path) -> ProjectDir:
    project = checkout(tmp_path_factory.mktemp("longform"), shared_cache)
    with_eval(project, eval_set)
    res = project.cli("build", LF, ML)
    assert res.code == 0, res.err
    return project


def _report(p: ProjectDir, target: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((p.root / "out" / target / "report.json").read_text())
    return data


@pytest.mark.parametrize("target", [LF, ML])
def test_every_runtime_gives_hf_long_form_tokens_window_by_window(lf: ProjectDir, target: str) -> None:
    report = _report(lf, target)
    assert report["ok"]
    assert all(45 <= d <= 80 for d in report["durations_s"])
    settings = report["long_form"]
    assert settings["method"] == "sequential (timestamps)" and len(settings["inputs"]) == 2
    assert "HF's long-form model.generate" in settings["reference"].replace("Hugging Face's", "HF's")
    rows = {(r["runtime"], r["batch_size"]): r for r in report["rows"]}
    ref = next(r for r in report["rows"] if r["runtime"] == "pytorch")
    ref_tokens = [p["tokens"] for p in ref["per_input"]]
    assert all(len(t) > 100 for t in ref_tokens)  # many windows' tokens, timestamps included
    # the reference's speed is its own decode's, not the lookup of the decode the subset's check made first
    # (that lookup once gave it 54 million tokens/s); uncached, it is no faster than a cached runtime
    assert ref["tokens_per_s"] <= 2 * max(r["tokens_per_s"] for r in report["rows"] if r["runtime"] != "pytorch")
    for (runtime, _batch), row in rows.items():
        assert row["token_agreement"] == 1.0, (runtime, row["failures"])
        assert [p["tokens"] for p in row["per_input"]] == ref_tokens
        if runtime != "pytorch":
            for p in row["per_input"]:
                lf_info = p["long_form"]
                assert lf_info["windows"] >= 12 and len(lf_info["segments"]) >= lf_info["windows"] // 2
                starts = [s["start"] for s in lf_info["segments"]]
                assert starts == sorted(starts) and all(s["end"] >= s["start"] for s in lf_info["segments"])
    if target == ML:
        assert settings["condition_on_previous_text"] is True and rows[("onnxruntime", 2)]
        assert report["prompt"][:2] == [393, 395]  # <|startoftranscript|> <|de|>


def test_a_decoder_with_a_baked_cache_fails_the_long_form_check(lf: ProjectDir, tmp_path: Path) -> None:
    from qeffbuild.core.steps import StepContext
    from qeffbuild.errors import ValidationFailed
    from qeffbuild.tasks.speech.validate import run

    from .baked import baked_decoder

    p = lf.api()
    plan = p.plan([LF], with_reasons=False)
    node = plan.by_id[f"validate:{LF}"].node
    find = p.artifact_finder(plan, node.id)
    inputs = {role: find(role) for role in node.deps}
    role = f"program/{SPEC}/decoder"
    inputs[role] = baked_decoder(inputs["model"] / "model", inputs[role], tmp_path / "decoder")
    params = {**node.params, "runtimes": {"pytorch": "reference", "pytorch-transformed": "program"}}
    (tmp_path / "out").mkdir()
    with pytest.raises(ValidationFailed) as err:
        run(StepContext(node.id, params, inputs, {f.label: f.path for f in node.files}, tmp_path / "out"))
    for name in ("long/00.wav", "long/01.wav"):
        assert f"pytorch-transformed [{SPEC}]: {name}: tokens differ from step" in str(err.value)


def _cues(text: str, sep: str) -> list[tuple[str, str, str]]:
    pattern = rf"(\d\d:\d\d:\d\d{sep}\d\d\d) --> (\d\d:\d\d:\d\d{sep}\d\d\d)\n(.+?)(?:\n\n|\n*$)"
    return [(a, b, t) for a, b, t in re.findall(pattern, text, re.S)]


def _clock(seconds: float, sep: str) -> str:
    ms = round(seconds * 1000)
    return f"{ms // 3600000:02d}:{ms // 60000 % 60:02d}:{ms // 1000 % 60:02d}{sep}{ms % 1000:03d}"


def test_run_writes_subtitles_from_the_segments_and_says_what_it_did(lf: ProjectDir, tmp_path: Path) -> None:
    wav = str(lf.root / "manifests" / "data" / "eval" / "long" / "00.wav")
    rows = lf.cli("run", SPEC, wav, "--json").json()
    row = rows[0]
    assert row["method"] == "sequential (timestamps)" and row["random_weights"] is True
    spoken = [s for s in row["segments"] if s["text"].strip()]
    assert len(spoken) >= 5
    report = _report(lf, LF)
    ort = next(r for r in report["rows"] if r["runtime"] == "onnxruntime")
    assert row["segments"] == ort["per_input"][0]["long_form"]["segments"]  # run and the validation agree
    srt = lf.cli("run", SPEC, wav, "-f", "srt")
    assert srt.code == 0, srt.err
    cues = _cues(srt.out, ",")
    assert [(a, b) for a, b, _ in cues] == [(_clock(s["start"], ","), _clock(s["end"], ",")) for s in spoken]
    assert re.match(r"1\n00:00:", srt.out)
    vtt = lf.cli("run", SPEC, wav, "-f", "vtt")
    assert vtt.out.startswith("WEBVTT\n\n") and len(_cues(vtt.out, r"\.")) == len(spoken)
    assert "decoded sequential (timestamps)" in srt.err and "windows" in srt.err  # the method, said
    out = lf.cli("run", SPEC, wav, wav.replace("00.wav", "01.wav"), "-f", "vtt", "-o", str(tmp_path / "subs"))
    assert out.code == 0 and sorted(p.name for p in (tmp_path / "subs").iterdir()) == ["00.vtt", "01.vtt"]
    strict = lf.cli("run", SPEC, wav, "--strict")  # the random model's windows run to their token budget
    assert strict.code == 1 and "--strict" in strict.err and "used its 29 tokens without an end of text" in strict.err


def test_audio_that_cannot_be_decoded_is_a_clear_error(lf: ProjectDir, tmp_path: Path) -> None:
    bad = tmp_path / "broken.wav"
    bad.write_bytes(b"RIFF\x00\x00\x00\x00WAVEfmt garbage" * 10)
    res = lf.cli("run", SPEC, str(bad))
    assert res.code == 2 and f"{bad}: cannot read audio" in res.err and "Traceback" not in res.err


def test_a_ctx_len_too_small_for_long_windows_is_refused_at_plan_time(lf: ProjectDir) -> None:
    manifest = lf.root / "manifests" / "small.toml"
    manifest.write_text('[project]\nname = "small"\n[specializations.ts-small]\nmodel = "whisper-tiny-random-ts"\n'
                        'ctx_len = 28\ncompile = ["ort"]\n[validations.ts-small-long]\n'
                        'model = "whisper-tiny-random-ts"\nspecializations = ["ts-small"]\n'
                        'runtimes = ["pytorch", "onnxruntime"]\ninputs = "data/eval/long.csv"\n')
    try:
        res = lf.cli("plan", "ts-small-long")
    finally:
        manifest.unlink()
    assert res.code == 2
    assert "small.toml:5: [specializations.ts-small] ctx_len: validation 'ts-small-long' has audio longer" in res.err
    assert "need ctx_len ≥ 31, not 28" in res.err
