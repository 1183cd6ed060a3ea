"""What a transcriber checks before it opens a saved folder: the files its runtime reads, not every file."""

from __future__ import annotations

from qeffbuild.transcribe import read_by


def test_a_transcriber_checks_its_runtimes_graphs_and_the_model_files_it_reads() -> None:
    files = ["model/config.json", "model/tokenizer.json", "model/model.safetensors", "aoti/decoder/model.pt2",
             "onnxruntime/decoder/model.onnx", "transform-decoder/program.pt2", "notes.json"]
    assert [f for f in files if read_by("aoti")(f)] == ["model/config.json", "model/tokenizer.json",
                                                        "aoti/decoder/model.pt2"]
    assert [f for f in files if read_by("pytorch-transformed")(f)] == [
        "model/config.json", "model/tokenizer.json", "transform-decoder/program.pt2"]
