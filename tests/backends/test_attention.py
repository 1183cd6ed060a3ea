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


def _routed_calls(module: Any) -> dict[str, list[Any]]:
    calls: dict[str, list[Any]] = {"decode_attention": [], "decode_attention_write": []}
    for node in module.graph.nodes:
        name = getattr(getattr(node, "target", None), "__name__", "")
        if name.split(".")[0] in calls:
            calls[name.split(".")[0]].append(node)
    return calls


def _run(module: Any, feeds: list[Any]) -> tuple[list[Any], list[Any]]:
    """The module's outputs on copies of the feeds, and those copies after the call (a routed step writes its
    caches into them)."""
    copies = [f.clone() for f in feeds]
    with torch.no_grad():
        return list(module(*copies)), copies


def test_a_whisper_steps_self_and_cross_attentions_go_to_the_op_and_answer_as_before(
        whisper_step: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Per layer the self-attention goes to the writing op (its cache update, its causal mask and its query's
    scaling folded in) and the cross-attention to the plain one; the step then gives the exported step's logits
    and states, the states written into its cache inputs (the op's CPU path is its float32 definition)."""
    from qeffbuild.backends import attention
    from qeffbuild.backends.inductor import _ops_called

    monkeypatch.setattr(attention, "ROUTED_DEVICES", ("cuda", "cpu"))
    before, routed = _module(whisper_step), _module(whisper_step)
    assert attention.route(routed, "cpu") == 4
    calls = _routed_calls(routed)
    assert len(calls["decode_attention"]) == len(calls["decode_attention_write"]) == 2
    assert {"qeffbuild::decode_attention", "qeffbuild::decode_attention_write"} <= _ops_called(routed)
    assert "aten::scaled_dot_product_attention" not in _ops_called(routed)
    assert "aten::where.self" not in _ops_called(routed)  # the caches' updates are the op's
    for node in calls["decode_attention"]:  # the cross-attention reads the encoder's states, inputs of the step
        assert node.args[1].op == node.args[2].op == "placeholder" and node.args[5] is True
    for node in calls["decode_attention_write"]:
        assert node.args[8] is True  # the caches are inputs, loaded before the PDL wait
        assert node.args[6] is None  # slot <= position: the kernel's own mask
        assert node.args[7] == pytest.approx(32 ** -0.5)  # q's scaling by Whisper folded into the op's scale
        assert node.args[0].args[0].args[0].target is not torch.ops.aten.mul.Tensor
    feeds = _feeds(whisper_step)
    want, _ = _run(before, feeds)
    got, written = _run(routed, feeds)
    assert len(want) == len(got) == 5
    for w, g in zip(want, got, strict=True):
        assert (w.float() - g.float()).abs().max().item() <= 2e-3
    assert want[0].float().abs().max().item() > 0
    for state, cache in zip(got[1:], written[2:6], strict=True):
        assert state is cache  # the state outputs are the cache inputs, written in place
    assert not torch.equal(written[2], feeds[2]) and torch.equal(written[2][:, :, :3], feeds[2][:, :, :3])


def test_without_state_writes_each_attention_goes_to_the_plain_op(whisper_step: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from qeffbuild.backends import attention

    monkeypatch.setattr(attention, "ROUTED_DEVICES", ("cuda", "cpu"))
    routed = _module(whisper_step)
    assert attention.route(routed, "cpu", write_state=False) == 4
    calls = _routed_calls(routed)
    assert len(calls["decode_attention"]) == 4 and not calls["decode_attention_write"]
    # the self-attentions' keys are the graph's cache updates: loaded only after the kernel before has finished
    assert sorted(node.args[5] for node in calls["decode_attention"]) == [False, False, True, True]
    want, _ = _run(_module(whisper_step), _feeds(whisper_step))
    got, written = _run(routed, _feeds(whisper_step))
    assert all((w.float() - g.float()).abs().max().item() <= 2e-3 for w, g in zip(want, got, strict=True))
    assert all(torch.equal(a, b) for a, b in zip(written, _feeds(whisper_step), strict=True))  # inputs untouched


@pytest.mark.slow
def test_the_compiled_step_writes_its_caches_through_the_op_with_nothing_between(
        whisper_step: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Compiled by Inductor as the compile step does (here for the CPU, where the op runs its definition): the
    writing op is called on the step's own cache inputs (no copy of a cache, no state-write kernel), its query,
    key and value are views of the fused projection's output (no kernel between them), and the compiled step
    writes the exported step's states into its inputs."""
    import re

    from qeffbuild.backends import attention
    from qeffbuild.backends.inductor import _FlatStep, _precompile, _private_caches

    monkeypatch.setattr(attention, "ROUTED_DEVICES", ("cuda", "cpu"))
    io = json.loads((whisper_step / "io.json").read_text())
    routed = _module(whisper_step)
    attention.route(routed, "cpu")
    step, feeds = _FlatStep(routed, io), _feeds(whisper_step)
    with _private_caches(tmp_path):
        compiled, weights, used = _precompile(step, step.weights(), [f.clone() for f in feeds], {},
                                              [attention.OP, attention.WRITE_OP])
        inputs = [f.clone() for f in feeds]
        logits = compiled(*weights.values(), *inputs)
    assert used == [attention.OP, attention.WRITE_OP]
    code = next(t for f in tmp_path.rglob("*.py") if "def call(" in (t := f.read_text()))
    writes = re.findall(r"decode_attention_write\.default\((.*)\)", code)
    assert len(writes) == 2 and "copy_" not in code
    for call in writes:  # q, k_new, v_new: views of one buffer; the caches: the step's inputs
        views = re.findall(r"reinterpret_tensor\((buf\d+),", call)
        assert len(views) == 3 and len(set(views)) == 1, call
        assert re.search(r"\), (arg\d+_1), (arg\d+_1), (arg\d+_1), None,", call), call
    want, _ = _run(_module(whisper_step), feeds)
    assert (logits[0].float() - want[0].float()).abs().max().item() <= 2e-3
    for state, cache in zip(want[1:], inputs[2:6], strict=True):
        assert (state.float() - cache.float()).abs().max().item() <= 2e-3


@pytest.mark.parametrize("returned", [True, False])
def test_a_cache_is_written_in_place_only_when_the_step_returns_its_update(returned: bool,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """A cache the step only reads (its update is not a state output) stays the caller's: the plain op reads the
    update, and the input is not written."""
    from qeffbuild.backends import attention

    class Step(torch.nn.Module):
        def forward(self, q: Any, k_new: Any, v_new: Any, past_k: Any, past_v: Any, position: Any) -> Any:
            slots = torch.arange(past_k.shape[2])
            write = (slots == position).view(1, 1, -1, 1)
            k, v = torch.where(write, k_new, past_k), torch.where(write, v_new, past_v)
            out = torch.nn.functional.scaled_dot_product_attention(q, k, v,
                                                                   attn_mask=(slots <= position).view(1, 1, 1, -1))
            return (out, k, v) if returned else (out,)

    monkeypatch.setattr(attention, "ROUTED_DEVICES", ("cuda", "cpu"))
    gen = torch.Generator().manual_seed(0)
    feeds = [torch.randn(2, 3, 1, 32, generator=gen).half() for _ in range(3)]
    feeds += [torch.randn(2, 3, 10, 32, generator=gen).half() for _ in range(2)] + [torch.tensor(4)]
    module = torch.export.export(Step(), tuple(feeds)).module()
    assert attention.route(module, "cpu") == 1
    calls = _routed_calls(module)
    assert (len(calls["decode_attention_write"]), len(calls["decode_attention"])) == ((1, 0) if returned else (0, 1))
    want, _ = _run(Step(), feeds)
    got, written = _run(module, feeds)
    assert (want[0].float() - got[0].float()).abs().max().item() <= 2e-3
    assert torch.equal(written[3], feeds[3]) is not returned  # written in place only when it is a state


@pytest.mark.parametrize("mask,causal", [
    (lambda slots, pos, other: (slots <= pos).view(1, 1, 1, -1), True),
    (lambda slots, pos, other: (slots.unsqueeze(0) <= pos.view(1, 1)).expand(2, -1).view(2, 1, 1, -1), True),
    (lambda slots, pos, other: (slots < pos).view(1, 1, 1, -1), False),  # the position's own slot hidden
    (lambda slots, pos, other: (slots <= pos).view(1, 1, 1, -1) & (other > 0), False),  # reads another input
])
def test_a_mask_is_made_in_the_kernel_only_when_it_is_the_causal_one(mask: Any, causal: bool) -> None:
    """The mask's nodes are run at every position a step can take: slot <= position at each, or kept."""
    from torch.fx.experimental.proxy_tensor import make_fx

    from qeffbuild.backends import attention

    graph = make_fx(lambda pos, other: mask(torch.arange(8), pos, other), tracing_mode="fake")(
        torch.tensor(0), torch.ones(1, 1, 1, 8)).graph
    position = next(n for n in graph.nodes if n.op == "placeholder")
    out = next(n for n in graph.nodes if n.op == "output").args[0]
    assert attention._is_causal(out, position, 8) is causal


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
            for call in range(calls):  # every other call loads the keys and values before the PDL wait
                ours = attention._launch(q, k, v, mask, 0.125, kv_ready=call % 2 == 1).float()
                assert ours.shape == exact.shape
                worst = ((ours - exact).abs() - allowed).max().item()
                assert worst <= 0, (b, h, s, d, masked, name, worst)
            counts = attention._counters.get((str(q.device), b * h))
            assert counts is None or int(counts.abs().sum()) == 0


def _write_cases() -> list[tuple[int, int, int, int, int | None, bool]]:
    """(batch, heads, slots, head size, position or None for random, masked): whisper-large-v3's self-attention
    at batch 1 and 8 (one chunk), the first and last slots, several chunks with the position in the last one, a
    position past the cache (nothing written), an explicit mask."""
    return [(1, 20, 136, 64, None, False), (8, 20, 136, 64, None, False), (2, 3, 12, 32, 0, False),
            (2, 3, 12, 32, 11, False), (2, 3, 300, 32, 290, False), (1, 2, 12, 32, 12, False),
            (2, 3, 300, 64, 130, True)]


def _check_write(device: str, cases: list[tuple[int, int, int, int, int | None, bool]], dtypes: tuple[str, ...],
                 calls: int) -> None:
    """The writing kernel against the graph's own update (where(slot == position, new, cache)) and float32 SDPA
    over it, masked to the slots up to the position (or by the given mask): the caches equal the update exactly
    after each call, and the output is within one unit in the last place. Without a mask the slots past the
    position hold NaN (as a cache from ``torch.empty`` may): the causal op must not read them (0 · NaN is NaN)."""
    from qeffbuild.backends import attention

    gen = torch.Generator(device=device).manual_seed(0)
    for b, h, s, d, pos, masked in cases:
        for name in dtypes:
            dtype = getattr(torch, name)
            p = int(torch.randint(0, s, (1,), generator=gen, device=device)) if pos is None else pos
            position = torch.tensor(p, device=device)
            # q, k_new and v_new as views of one projection's output, as the compiled step passes them
            qkv = torch.randn(b, 1, 3 * h * d, device=device, generator=gen).to(dtype)
            q, k_new, v_new = (qkv[..., i * h * d:(i + 1) * h * d].reshape(b, 1, h, d).transpose(1, 2)
                               for i in range(3))
            k, v = (torch.randn(b, h, s, d, device=device, generator=gen).to(dtype) for _ in range(2))
            slots = torch.arange(s, device=device)
            past = (slots > position).view(1, 1, -1, 1)
            if not masked:
                k, v = (t.masked_fill(past, float("nan")) for t in (k, v))
            mask = (slots <= max(p - 3, 0)).view(1, 1, 1, s) if masked else None
            slot = (slots == position).view(1, 1, -1, 1)
            want_k, want_v = torch.where(slot, k_new, k), torch.where(slot, v_new, v)
            exact = torch.nn.functional.scaled_dot_product_attention(
                q.float(), want_k.float().nan_to_num(), want_v.float().nan_to_num(), scale=0.125,
                attn_mask=mask if masked else (slots <= position).view(1, 1, 1, s))
            allowed = torch.finfo(dtype).eps * exact.abs() + 1e-4
            for call in range(calls):
                k_cache, v_cache = k.clone(), v.clone()
                ours = attention._launch(q, k_cache, v_cache, mask, 0.125, written=(k_new, v_new, position),
                                         kv_ready=call % 2 == 1)
                assert _same(k_cache, want_k) and _same(v_cache, want_v), (b, h, s, d, p, name)
                worst = ((ours.float() - exact).abs() - allowed).max().item()
                assert worst <= 0, (b, h, s, d, p, masked, name, worst)


def _same(got: torch.Tensor, want: torch.Tensor) -> bool:
    """Equal bit for bit, NaN where NaN."""
    return torch.equal(got.isnan(), want.isnan()) and torch.equal(got.nan_to_num(), want.nan_to_num())


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_the_triton_attention_matches_float32_sdpa_on_the_gpu() -> None:
    from qeffbuild.backends import attention

    attention.register()
    _check("cuda", _cases(), ("float16", "bfloat16"), calls=3)
    _check_write("cuda", _write_cases(), ("float16", "bfloat16"), calls=3)


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


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_the_writing_attention_fills_the_cache_step_by_step_from_a_cuda_graph() -> None:
    """As the decode loop runs it: captured once, replayed with the position advanced; each replay writes its
    slot and attends over the slots written so far, as the graph's own update and SDPA do."""
    from qeffbuild.backends import attention

    b, h, s, d = 8, 20, 136, 64
    q, k_new, v_new = (torch.randn(b, h, 1, d, device="cuda", dtype=torch.float16) for _ in range(3))
    k_cache, v_cache = (torch.zeros(b, h, s, d, device="cuda", dtype=torch.float16) for _ in range(2))
    position = torch.tensor(0, device="cuda")
    attention._launch(q, k_cache.clone(), v_cache.clone(), None, 0.125, written=(k_new, v_new, position))
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = attention._launch(q, k_cache, v_cache, None, 0.125, written=(k_new, v_new, position), kv_ready=True)
    want_k, want_v = k_cache.clone(), v_cache.clone()
    slots = torch.arange(s, device="cuda")
    for p in range(5):
        for t in (q, k_new, v_new):
            t.copy_(torch.randn_like(t))
        position.fill_(p)
        graph.replay()
        want_k[:, :, p], want_v[:, :, p] = k_new[:, :, 0], v_new[:, :, 0]
        exact = torch.nn.functional.scaled_dot_product_attention(
            q.float(), want_k.float(), want_v.float(), attn_mask=(slots <= p).view(1, 1, 1, s), scale=0.125)
        assert torch.equal(k_cache, want_k) and torch.equal(v_cache, want_v)
        assert (out.float() - exact).abs().max().item() < 2e-3


@pytest.mark.skipif(not torch.cuda.is_available() and os.environ.get("QEFFBUILD_TRITON_INTERPRET") != "1",
                    reason="needs a CUDA GPU, or QEFFBUILD_TRITON_INTERPRET=1 with triton installed")
def test_the_kernel_in_tritons_interpreter() -> None:
    """The same kernel run by Triton's interpreter on the CPU (no GPU needed; the programs run one after another,
    so this checks the arithmetic and the last chunk's merge, not the GPU's memory ordering)."""
    pytest.importorskip("triton")
    code = ("import torch; from tests.backends.test_attention import _check, _cases, _check_write, _write_cases; "
            "_check('cpu', _cases()[:2] + _cases()[4:], ('float16', 'bfloat16'), calls=2); "
            "_check_write('cpu', _write_cases(), ('float16',), calls=2)")
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                          cwd=Path(__file__).resolve().parents[2])
    assert done.returncode == 0, done.stderr[-3000:]
