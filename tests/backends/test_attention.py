"""qeffbuild::decode_attention: which attentions of a real Whisper decoder step the compile step sends to it, that
the routed step computes what the exported one does, and on a GPU (or Triton's interpreter) that the kernel
computes the attention as torch does."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def whisper_step(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random Whisper's decoder step (batch 2, 12 slots, 50 frames) exported by the speech transform in
    float16, as a CUDA build exports it (here on the CPU)."""
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    from qeffbuild.core.steps import StepContext
    from qeffbuild.tasks.speech import transform

    root = tmp_path_factory.mktemp("whisper")
    torch.manual_seed(0)
    config = WhisperConfig(vocab_size=256, d_model=64, decoder_layers=2, encoder_layers=1, decoder_attention_heads=2,
                           encoder_attention_heads=2, decoder_ffn_dim=128, encoder_ffn_dim=128,
                           max_source_positions=50, max_target_positions=32, pad_token_id=1, bos_token_id=1,
                           eos_token_id=2, decoder_start_token_id=3)
    WhisperForConditionalGeneration(config).save_pretrained(root / "model" / "model")
    out = root / "decoder"
    out.mkdir()
    params = {"dtype": "float16", "device": "cpu", "arch": "whisper", "graph": "decoder", "batch_size": 2,
              "encoder_len": 50, "ctx_len": 12}
    transform.run(StepContext("transform:t", params, {"model": root / "model"}, {}, out))
    return out


def _module(folder: Path) -> Any:
    from qeffbuild.pipeline.torchutil import load_program

    return load_program(folder / "program.pt2").module()


def _feeds(folder: Path) -> list[Any]:
    shapes = json.loads((folder / "io.json").read_text())["shapes"]
    gen = torch.Generator().manual_seed(1)
    feeds = {"input_ids": torch.tensor([[5], [7]]), "position": torch.tensor(3)}
    return [feeds[n] if n in feeds else torch.randn(*s, generator=gen).half() for n, s in shapes.items()]


def test_a_whisper_steps_self_and_cross_attentions_go_to_the_op_and_answer_as_before(
        whisper_step: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Per layer the self-attention (masked past the position) and the cross-attention are routed; the step then
    gives the exported step's logits and states (the op's CPU path is its float32 definition)."""
    from qeffbuild.backends import attention
    from qeffbuild.backends.inductor import _ops_called

    monkeypatch.setattr(attention, "ROUTED_DEVICES", ("cuda", "cpu"))
    before, routed = _module(whisper_step), _module(whisper_step)
    assert attention.route(routed, "cpu") == 4
    assert "qeffbuild::decode_attention" in _ops_called(routed)
    assert "aten::scaled_dot_product_attention" not in _ops_called(routed)
    feeds = _feeds(whisper_step)
    with torch.no_grad():
        want, got = before(*feeds), routed(*feeds)
    assert len(want) == len(got) == 5
    for w, g in zip(want, got, strict=True):
        assert (w.float() - g.float()).abs().max().item() <= 2e-3
    assert want[0].float().abs().max().item() > 0


def test_attentions_stay_with_torch_off_cuda_and_in_float32(whisper_step: Path, tmp_path: Path) -> None:
    from qeffbuild.backends import attention

    assert attention.route(_module(whisper_step), "cpu") == 0  # only CUDA routes by default
    assert not attention.eligible(torch.empty(1, 2, 1, 64), torch.empty(1, 2, 9, 64), torch.empty(1, 2, 9, 64),
                                  None, 0.0, False, False, "cuda")  # float32: not measured, stays with torch


@pytest.mark.parametrize("change,why", [
    ({"q": (1, 2, 3, 64)}, "more than one query"),
    ({"d": 48}, "a head size that is not a power of two"),
    ({"mask": "float"}, "an additive float mask"),
    ({"mask": "per-head"}, "a mask that differs per head"),
    ({"is_causal": True}, "a causal flag"),
    ({"dropout_p": 0.1}, "dropout"),
])
def test_an_attention_the_kernel_does_not_compute_is_not_routed(change: dict[str, Any], why: str) -> None:
    d = change.get("d", 64)
    q = torch.empty(*change.get("q", (1, 2, 1, d)), dtype=torch.float16)
    k = torch.empty(1, 2, 9, d, dtype=torch.float16)
    mask = {"float": torch.zeros(1, 1, 1, 9), "per-head": torch.ones(1, 2, 1, 9, dtype=torch.bool)}.get(
        change.get("mask", ""))
    from qeffbuild.backends import attention

    base = torch.empty(1, 2, 9, 64, dtype=torch.float16)
    assert attention.eligible(torch.empty(1, 2, 1, 64, dtype=torch.float16), base, base, None, 0.0, False, False,
                              "cuda")
    assert not attention.eligible(q, k, k, mask, change.get("dropout_p", 0.0), change.get("is_causal", False),
                                  False, "cuda"), why


def _cases() -> list[tuple[int, int, int, int, bool]]:
    """(batch, heads, keys, head size, masked): whisper-large-v3's self- and cross-attention at batch 1 and 8, a
    single chunk, a last chunk of one key, a mask shared by the batch."""
    return [(1, 20, 136, 64, True), (1, 20, 1500, 64, False), (8, 20, 136, 64, True), (8, 20, 1500, 64, False),
            (2, 3, 100, 32, True), (3, 2, 257, 64, True)]


def _check(device: str, cases: list[tuple[int, int, int, int, bool]], dtypes: tuple[str, ...], calls: int) -> None:
    """The kernel against float32 SDPA of the same half-precision values, ``calls`` times per case (the counts a
    launch leaves must be zero for the next one)."""
    from qeffbuild.backends import attention

    gen = torch.Generator(device=device).manual_seed(0)
    for b, h, s, d, masked in cases:
        for name in dtypes:
            dtype = getattr(torch, name)
            q = torch.randn(b, 1, h, d, device=device, generator=gen).to(dtype).transpose(1, 2)
            k, v = (torch.randn(b, h, s, d, device=device, generator=gen).to(dtype) for _ in range(2))
            mask = None
            if masked:
                position = torch.randint(0, s, (b,), device=device, generator=gen)
                mask = (torch.arange(s, device=device) <= position[:, None])[:, None, None, :]
                if b == 3:
                    mask = mask[:1]
            exact = torch.nn.functional.scaled_dot_product_attention(q.float(), k.float(), v.float(),
                                                                     attn_mask=mask, scale=0.125)
            # one unit in the last place of the output's dtype (its rounding, either way), and float32's sums
            allowed = torch.finfo(dtype).eps * exact.abs() + 1e-4
            for _ in range(calls):
                ours = attention._launch(q, k, v, mask, 0.125).float()
                assert ours.shape == exact.shape
                worst = ((ours - exact).abs() - allowed).max().item()
                assert worst <= 0, (b, h, s, d, masked, name, worst)
            counts = attention._counters.get((str(q.device), b * h))
            assert counts is None or int(counts.abs().sum()) == 0


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_the_triton_attention_matches_float32_sdpa_on_the_gpu() -> None:
    from qeffbuild.backends import attention

    attention.register()
    _check("cuda", _cases(), ("float16", "bfloat16"), calls=3)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_the_triton_attention_replays_in_a_cuda_graph() -> None:
    """Captured after one warm call (as the decode loop captures a step), each replay merges its own chunks: the
    counts are reset by the launch itself, not by a memset in the graph."""
    from qeffbuild.backends import attention

    q = torch.randn(1, 20, 1, 64, device="cuda", dtype=torch.float16)
    k, v = (torch.randn(1, 20, 1500, 64, device="cuda", dtype=torch.float16) for _ in range(2))
    attention._launch(q, k, v, None, 0.125)
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = attention._launch(q, k, v, None, 0.125)
    for _ in range(3):
        q.copy_(torch.randn_like(q))
        graph.replay()
        exact = torch.nn.functional.scaled_dot_product_attention(q.float(), k.float(), v.float(), scale=0.125)
        assert (out.float() - exact).abs().max().item() < 2e-3


@pytest.mark.skipif(not torch.cuda.is_available() and os.environ.get("QEFFBUILD_TRITON_INTERPRET") != "1",
                    reason="needs a CUDA GPU, or QEFFBUILD_TRITON_INTERPRET=1 with triton installed")
def test_the_kernel_in_tritons_interpreter() -> None:
    """The same kernel run by Triton's interpreter on the CPU (no GPU needed; the programs run one after another,
    so this checks the arithmetic and the last chunk's merge, not the GPU's memory ordering)."""
    pytest.importorskip("triton")
    code = ("import torch; from tests.backends.test_attention import _check, _cases; "
            "_check('cpu', _cases()[:2] + _cases()[4:], ('float16', 'bfloat16'), calls=2)")
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                          cwd=Path(__file__).resolve().parents[2])
    assert done.returncode == 0, done.stderr[-3000:]
