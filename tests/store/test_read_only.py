"""Read-only out/ and caches, odd data-set rows: a message naming the path and the fix, never exit 70."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from ..helpers import DATA, ProjectDir

STEPS = """
[project]
name = "ro"

[steps.a]
cmd = ["sh", "-c", "echo {word} > a.txt"]
outputs = ["a.txt"]
"""


@contextmanager
def read_only(folder: Path) -> Iterator[None]:
    """``folder`` read-only as a bind mount (root ignores permission bits, not a read-only file system)."""
    if os.geteuid() != 0:
        folder.chmod(0o555)
        try:
            yield
        finally:
            folder.chmod(0o755)
        return
    done = subprocess.run(["sh", "-c", f"mount --bind '{folder}' '{folder}' && "
                                       f"mount -o remount,bind,ro '{folder}'"], capture_output=True)
    if done.returncode != 0:
        subprocess.run(["umount", str(folder)], capture_output=True)
        pytest.skip(f"cannot make a read-only bind mount here: {done.stderr.decode().strip()}")
    try:
        yield
    finally:
        subprocess.run(["umount", str(folder)], check=True)


def _bad(res: object) -> None:
    text = res.out + res.err  # type: ignore[attr-defined]
    assert "internal error" not in text and "Traceback" not in text, text


def test_a_read_only_out_dir_is_a_build_error_and_the_cache_keeps_the_step(project: ProjectDir,
                                                                           tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    project.env = {"QEFFBUILD_CACHE_DIR": str(cache)}
    project.manifest(STEPS.format(word="one"))
    assert project.cli("build").code == 0
    project.manifest(STEPS.format(word="two"))
    with read_only(project.root / "out"):
        res = project.cli("build")
        _bad(res)
        assert res.code == 1 and f"cannot write the out folder {project.root / 'out'}" in res.err
        assert "pass --out-dir" in res.err
        clean = project.cli("clean")
        _bad(clean)
        assert clean.code == 2 and "cannot remove" in clean.err and "writable" in clean.err
    res = project.cli("build", "--json")  # the step was cached: only laying it out is left
    assert res.json()["steps"]["command:a"]["status"] == "cached"
    assert (project.root / "out" / "a" / "a.txt").read_text() == "two\n"


def test_gc_on_a_read_only_cache_changes_nothing(project: ProjectDir, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    project.env = {"QEFFBUILD_CACHE_DIR": str(cache)}
    project.manifest(STEPS.format(word="one"))
    assert project.cli("build").code == 0
    before = sorted(p.relative_to(cache) for p in cache.rglob("*") if "state.sqlite" not in p.name)
    with read_only(cache):
        res = project.cli("cache", "gc", "--all")
        _bad(res)
        assert res.code == 1 and "cannot collect garbage in the cache" in res.err and "nothing was changed" in res.err
    assert sorted(p.relative_to(cache) for p in cache.rglob("*") if "state.sqlite" not in p.name) == before


SPEECH = """
[project]
name = "rows"

[models.w.source]
random = "WhisperForConditionalGeneration"
seed = 1
tokenizer = {{ path = "{tok}" }}

[models.w.source.config]
vocab_size = 401
d_model = 64
encoder_layers = 1
decoder_layers = 1
encoder_attention_heads = 2
decoder_attention_heads = 2
encoder_ffn_dim = 64
decoder_ffn_dim = 64
max_source_positions = 200
max_target_positions = 64
num_mel_bins = 80
decoder_start_token_id = 393
eos_token_id = 392
pad_token_id = 392
bos_token_id = 392

[models.w]
task = "speech-seq2seq"

[specializations.w-b1]
model = "w"
ctx_len = 32
compile = ["ort"]

[validations.w-parity]
model = "w"
specializations = ["w-b1"]
runtimes = ["pytorch", "onnxruntime"]
inputs = "rows.csv"
"""


@pytest.mark.parametrize(("row", "said"), [
    ("a" * 5000 + ".wav", "its name is too long for the file system"),
    ("fifo.wav", "is a FIFO, not an audio file"),
    ("/dev/zero", "is a device, not an audio file"),
    ("missing.wav", "does not exist"),
])
def test_a_data_set_row_that_is_no_audio_file_is_named(project: ProjectDir, row: str, said: str) -> None:
    project.manifest(SPEECH.format(tok=DATA / "whisper-tokenizer"))
    os.mkfifo(project.root / "manifests" / "fifo.wav")
    project.write("manifests/rows.csv", f"path,text\n{row},hi\nfifo.wav,hi\n")
    res = project.cli("plan", "w-parity")
    _bad(res)
    assert res.code == 2 and "rows.csv line 2" in res.err and said in res.err, res.err
    assert len(res.err) < 600  # a 5,000-character name is shortened in the message
