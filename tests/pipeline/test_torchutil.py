"""pipeline/torchutil: a saved program holds only the weights its graph reads."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def whisper() -> Any:
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    torch.manual_seed(0)
    cfg = WhisperConfig(vocab_size=96, num_mel_bins=8, d_model=16, encoder_layers=1, decoder_layers=2,
                        encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32,
                        max_source_positions=8, max_target_positions=32, decoder_start_token_id=1, eos_token_id=2,
                        pad_token_id=2)
    return WhisperForConditionalGeneration(cfg).eval()


def _encoder_side(model: Any) -> tuple[Any, tuple[Any, ...]]:
    """The speech transform's encoder side of ``model``, exported as the transform exports it."""
    from qeffbuild.tasks.speech.retained import Adapter, EncoderSide

    module = EncoderSide(Adapter(model, "whisper"), 8)
    example = (torch.randn(1, 8, 16),)
    with torch.no_grad():
        return torch.export.export(module.eval(), example, strict=False), example


def test_the_encoder_side_keeps_no_decoder_weight(whisper: Any, tmp_path: Path) -> None:
    from qeffbuild.pipeline.torchutil import load_program, save_program

    program, example = _encoder_side(whisper)
    assert any(".decoder.layers." in k for k in program.state_dict)  # what torch.export keeps on its own
    with torch.no_grad():
        expected = program.module()(*example)
    decoder_bytes = sum(v.numel() * v.element_size() for k, v in whisper.state_dict().items()
                        if ".decoder." in k and "encoder_attn.k_proj" not in k and "encoder_attn.v_proj" not in k)

    dropped = save_program(program, tmp_path / "program.pt2")

    loaded = load_program(tmp_path / "program.pt2")
    kept = set(loaded.state_dict) | set(loaded.constants)
    # the cross-attentions' projections make the encoder side's outputs; nothing else of the decoder is read
    assert all(".encoder_attn." in k for k in kept if ".decoder." in k)
    assert {k for k in kept if "encoder_attn.k_proj" in k or "encoder_attn.v_proj" in k}
    assert any(".encoder.layers." in k for k in kept)
    assert dropped >= decoder_bytes - whisper.model.decoder.embed_positions.weight.nbytes
    assert loaded.example_inputs is None  # the traced example (a decoder step's: random states) is not saved
    with torch.no_grad():
        got = loaded.module()(*example)
    assert all(torch.equal(a, b) for a, b in zip(expected, got, strict=True))


def test_a_program_that_reads_every_weight_is_saved_as_it_is(tmp_path: Path) -> None:
    from qeffbuild.pipeline.torchutil import load_program, save_program

    module = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Dropout(0.1), torch.nn.Linear(4, 2)).eval()
    x = torch.randn(3, 4)
    program = torch.export.export(module, (x,), strict=False)
    assert save_program(program, tmp_path / "p.pt2") == 0
    loaded = load_program(tmp_path / "p.pt2")
    assert set(loaded.state_dict) == set(module.state_dict())
    assert torch.equal(loaded.module()(x), module(x))


def test_a_tied_weight_read_under_one_name_is_kept_whole(tmp_path: Path) -> None:
    from qeffbuild.pipeline.torchutil import load_program, save_program

    class Tied(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = torch.nn.Embedding(10, 4)
            self.head = torch.nn.Linear(4, 10, bias=False)
            self.head.weight = self.embed.weight  # tied, as a language model's head and input embedding
            self.unused = torch.nn.Linear(4, 4)

        def forward(self, x: Any) -> Any:
            return self.head(x)

    module = Tied().eval()
    x = torch.randn(2, 4)
    program = torch.export.export(module, (x,), strict=False)
    dropped = save_program(program, tmp_path / "p.pt2")
    assert dropped == (4 * 4 + 4) * 4  # the unused layer only: the tied weight's storage stays
    loaded = load_program(tmp_path / "p.pt2")
    assert torch.equal(loaded.module()(x), module(x))


def test_a_compile_step_keeps_precompiled_headers_in_inductors_shared_cache(tmp_path: Path) -> None:
    """A step's TMPDIR is its scratch folder; torch files its precompiled headers under the temporary folder it
    sees at import, so without this every CPU compile rebuilt ~300 MB of headers and threw them away."""
    import os
    import subprocess
    import sys

    step_tmp, shared = tmp_path / "step-tmp", tmp_path / "inductor-cache"
    step_tmp.mkdir()
    code = ("import os\nfrom torch._inductor import codecache as c\n"
            "assert c._HEADER_DIR.startswith(os.environ['TMPDIR']), c._HEADER_DIR  # torch's own choice\n"
            "from qeffbuild.pipeline.torchutil import share_precompiled_headers\n"
            "share_precompiled_headers()\nprint(c._HEADER_DIR)\nprint(c._HEADER_LOCK_DIR)\n")
    env = {**os.environ, "TMPDIR": str(step_tmp), "TORCHINDUCTOR_CACHE_DIR": str(shared)}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [str(shared / "precompiled_headers"), str(shared / "precompiled_headers" / "locks")]
