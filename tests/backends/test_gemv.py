"""qeffbuild::gemv: which products the compile step sends to it (traced on CPU with fake CUDA tensors), and on a GPU
that it computes them as torch does."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")


def _trace(batch: int, dtype: Any, bias: bool, max_rows: int = 1) -> str:
    """The traced linear's code; it also checks that the compile step would record the ops it calls."""
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.fx.experimental.proxy_tensor import make_fx

    from qeffbuild.backends import gemv

    with FakeTensorMode():
        x = torch.empty(batch, 1, 1280, device="cuda", dtype=dtype)
        w = torch.empty(3840, 1280, device="cuda", dtype=dtype)
        b = torch.empty(3840, device="cuda", dtype=dtype) if bias else None
        graph = make_fx(lambda x, w, b: torch.nn.functional.linear(x, w, b),
                        decomposition_table=gemv.decompositions(max_rows), tracing_mode="fake")(x, w, b)
    from qeffbuild.backends.inductor import _ops_called

    assert ("qeffbuild::gemv" in _ops_called(graph)) == ("qeffbuild.gemv" in str(graph.code))
    return str(graph.code)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
@pytest.mark.parametrize("bias", [True, False])
def test_a_one_row_half_precision_linear_on_cuda_goes_to_the_gemv(dtype: str, bias: bool) -> None:
    code = _trace(1, getattr(torch, dtype), bias)
    assert "qeffbuild.gemv" in code and "aten.mm" not in code and "aten.addmm" not in code
    assert ("aten.add" in code) is False  # a bias is added in the kernel, not by another one


@pytest.mark.parametrize("batch,dtype", [(2, "float16"), (8, "bfloat16"), (1, "float32")])
def test_other_products_stay_with_cublas(batch: int, dtype: str) -> None:
    """Batches of rows beyond the rows asked for (by default one) and float32 (not measured) keep torch's matmul."""
    code = _trace(batch, getattr(torch, dtype), True)
    assert "qeffbuild.gemv" not in code


@pytest.mark.parametrize("batch,routed", [(2, True), (8, True), (16, True), (17, False)])
def test_a_batch_of_rows_up_to_the_kernels_most_goes_to_the_gemv_when_asked(batch: int, routed: bool) -> None:
    from qeffbuild.backends import gemv

    assert ("qeffbuild.gemv" in _trace(batch, torch.float16, True, max_rows=gemv.MAX_ROWS)) is routed


def test_the_op_is_the_plain_product_off_the_gpu() -> None:
    from qeffbuild.backends import gemv

    gemv.register()
    x, w, b = torch.randn(1, 256), torch.randn(40, 256), torch.randn(40)
    assert torch.equal(torch.ops.qeffbuild.gemv(x, w, None), x @ w.t())
    assert torch.equal(torch.ops.qeffbuild.gemv(x, w, b), torch.addmm(b, x, w.t()))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("n,k", [(1280, 1280), (3840, 1280), (1280, 5120), (51866, 1280), (7, 256)])
@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_the_triton_gemv_matches_a_float32_product(n: int, k: int, dtype: str) -> None:
    """Against the float32 product of the same half-precision values, the kernel is as close as cuBLAS (both
    accumulate in float32; the row count need not be a multiple of the kernel's block)."""
    from qeffbuild.backends import gemv

    gemv.register()
    torch.manual_seed(0)
    half = getattr(torch, dtype)
    x = torch.randn(1, k, device="cuda", dtype=half)
    w = (torch.randn(n, k, device="cuda") * 0.02).to(half)
    b = torch.randn(n, device="cuda").to(half)
    exact = x.float() @ w.float().t() + b.float()
    ours = torch.ops.qeffbuild.gemv(x, w, b).float()
    cublas = torch.addmm(b, x, w.t()).float()
    tolerance = 2 * (cublas - exact).abs().max().item() + 1e-6
    assert ours.shape == (1, n) and (ours - exact).abs().max().item() <= tolerance


def _whisper_decoder_graph(fused_qkv: bool, batch: int = 1) -> tuple[Any, Any, list[Any]]:
    """HF's Whisper decoder layers (2) + its LM head for one token, traced as the compile step traces a decode step:
    fake float16 tensors, the GEMV decompositions. On the CPU, with products on the CPU routed as on CUDA: a CPU-only
    torch cannot trace HF's layers on fake CUDA tensors (``contiguous`` asks for the CUDA runtime). Returns (graph, a
    copy of it, real float32 inputs)."""
    import copy

    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.fx.experimental.proxy_tensor import make_fx
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    from qeffbuild.backends import gemv
    from qeffbuild.decoding.fuse import fuse_projections

    torch.manual_seed(0)
    config = WhisperConfig(vocab_size=2048, d_model=128, decoder_layers=2, encoder_layers=1, decoder_attention_heads=2,
                           encoder_attention_heads=2, decoder_ffn_dim=256, encoder_ffn_dim=256,
                           max_source_positions=16, max_target_positions=32, pad_token_id=1, bos_token_id=1,
                           eos_token_id=2, decoder_start_token_id=3)
    model = WhisperForConditionalGeneration(config).eval()
    if fused_qkv:
        fuse_projections(model, ["self_attn"])
    params = dict(model.named_parameters())
    decoder = model.model.decoder

    def layers(hidden: Any, states: Any) -> Any:  # the decoder's layers and LM head (its masks are not traced here)
        for layer in decoder.layers:
            out = layer(hidden, encoder_hidden_states=states)
            hidden = out[0] if isinstance(out, tuple) else out
        return model.proj_out(decoder.layer_norm(hidden))

    def step(*values: Any) -> Any:
        weights = dict(zip(params, values[:-2], strict=True))
        return _with_weights(model, weights, layers, *values[-2:])

    gemv.register()
    with torch.no_grad(), FakeTensorMode(allow_non_fake_inputs=True):
        fake = [torch.empty(p.shape, dtype=torch.float16) for p in params.values()]
        fake += [torch.empty(batch, 1, 128, dtype=torch.float16), torch.empty(batch, 16, 128, dtype=torch.float16)]
        graph = make_fx(step, decomposition_table=gemv.decompositions(batch), tracing_mode="fake")(*fake)
    real = [p.detach().clone() for p in params.values()] + [torch.randn(batch, 1, 128) * 2,
                                                            torch.randn(batch, 16, 128)]
    return graph, copy.deepcopy(graph), real


def _with_weights(model: Any, weights: dict[str, Any], fn: Any, *args: Any) -> Any:
    from torch.nn.utils.stateless import _reparametrize_module

    with _reparametrize_module(model, weights, tie_weights=True):
        return fn(*args)


@pytest.mark.parametrize("fused_qkv,batch", [(True, 1), (False, 1), (True, 3)])
def test_whisper_decoder_layer_norms_gelu_and_residual_adds_fold_into_the_gemvs(fused_qkv: bool, batch: int,
                                                                                monkeypatch: Any) -> None:
    """On HF's own Whisper decoder: per layer the cross-attention's and the FFN's layer norms, fc1's GELU and the
    three residual adds fold in; the self-attention's layer norm only where q/k/v are one product (three readers
    otherwise), and the LM head's never (its re-read of the row would cost as much as its weights). Each folded norm
    adds three weights (the folded product, its row sums, its shift); the folded graph computes what the traced
    one computes (run on the CPU in float32, where each op is its definition)."""
    from qeffbuild.backends import gemv
    from qeffbuild.backends.inductor import _ops_called

    monkeypatch.setattr(gemv, "ROUTED_DEVICES", ("cuda", "cpu"))
    graph, before, real = _whisper_decoder_graph(fused_qkv, batch)
    params, inputs = real[:-2], real[-2:]
    weights = {f"w{i}": t for i, t in enumerate(params)}
    folded = gemv.fuse_neighbours(graph, weights)
    norms_folded = 2 * (3 if fused_qkv else 2)
    assert folded == {"layer_norm": norms_folded, "gelu": 2, "residual_add": 2 * 3}
    assert len(weights) == len(params) + 3 * norms_folded
    assert "aten::gelu" not in _ops_called(graph)
    norms = [n for n in graph.graph.nodes if n.op == "call_function" and "native_layer_norm" in str(n.target)]
    assert len(norms) == (1 if fused_qkv else 3)  # the final norm before the LM head (and the self-attention's)
    with torch.no_grad():
        want, got = before(*params, *inputs), graph(*weights.values(), *inputs)
    assert torch.allclose(want, got, rtol=1e-4, atol=1e-4)
    assert not torch.equal(want, torch.zeros_like(want))


def test_a_layer_norm_read_by_anything_else_is_left_alone() -> None:
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.fx.experimental.proxy_tensor import make_fx

    from qeffbuild.backends import gemv

    def f(w: Any, lw: Any, lb: Any, x: Any) -> Any:
        n = torch.nn.functional.layer_norm(x, (256,), lw, lb)
        return torch.nn.functional.linear(n, w) + n.sum()  # the norm's output has a second reader

    gemv.register()
    shapes = {"w": (512, 256), "lw": (256,), "lb": (256,)}
    with FakeTensorMode():
        args = [torch.empty(*s, device="cuda", dtype=torch.float16) for s in (*shapes.values(), (1, 1, 256))]
        graph = make_fx(f, decomposition_table=gemv.decompositions(), tracing_mode="fake")(*args)
    weights = {n: torch.zeros(s) for n, s in shapes.items()}
    assert gemv.fuse_neighbours(graph, weights)["layer_norm"] == 0 and len(weights) == 3


def _unfused(x: Any, w: Any, b: Any, lw: Any, lb: Any, eps: float, activation: str, r: Any) -> Any:
    """The ops a fused GEMV replaces, as the traced graph runs them."""
    y = torch.addmm(b, torch.nn.functional.layer_norm(x, (x.shape[-1],), lw, lb, eps) if lw is not None else x,
                    w.t())
    y = torch.nn.functional.gelu(y) if activation == "gelu" else y
    return y if r is None else y + r


def test_the_fused_op_is_its_unfused_definition_off_the_gpu() -> None:
    from qeffbuild.backends import gemv

    gemv.register()
    torch.manual_seed(0)
    x, w, b, r = torch.randn(1, 256) * 4 + 20, torch.randn(64, 256), torch.randn(64), torch.randn(1, 64)
    lw, lb = torch.randn(256), torch.randn(256)
    weight, row_sums, shift = gemv.fold_norm(w, b, lw, lb)
    got = torch.ops.qeffbuild.gemv_fused(x, weight, shift, row_sums, 1e-5, "gelu", r)
    assert torch.allclose(got, _unfused(x, w, b, lw, lb, 1e-5, "gelu", r), rtol=1e-5, atol=1e-4)
    plain = torch.ops.qeffbuild.gemv_fused(x, w, b, None, 0.0, "none", r)
    assert torch.equal(plain, torch.addmm(b, x, w.t()) + r)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("n,k,norm,activation,residual", [
    (3840, 1280, True, "none", False), (1280, 1280, False, "none", True), (5120, 1280, True, "gelu", False),
    (1280, 5120, False, "none", True), (7, 256, True, "gelu", True)])
@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_the_fused_triton_gemv_matches_its_definition(n: int, k: int, norm: bool, activation: str, residual: bool,
                                                      dtype: str) -> None:
    """Against the unfused ops in float32 on the same half-precision values: about as close as the unfused ops in
    half precision are (the kernel rounds the product, GELU and sum where they round; γ is folded into the weights,
    one rounding, where the unfused graph rounds the layer norm's output)."""
    from qeffbuild.backends import gemv

    gemv.register()
    torch.manual_seed(0)
    half = getattr(torch, dtype)
    x = (torch.randn(1, k, device="cuda") * 3 + 1).to(half)
    w = (torch.randn(n, k, device="cuda") * 0.02).to(half)
    b, r = torch.randn(n, device="cuda").to(half), torch.randn(1, n, device="cuda").to(half)
    lw, lb = (1 + 0.1 * torch.randn(k, device="cuda")).to(half), (0.1 * torch.randn(k, device="cuda")).to(half)
    norms = (lw, lb) if norm else (None, None)
    res = r if residual else None
    exact = _unfused(x.float(), w.float(), b.float(), *(t.float() if t is not None else None for t in norms), 1e-5,
                     activation, res.float() if res is not None else None)
    unfused = _unfused(x, w, b, *norms, 1e-5, activation, res).float()
    if norm:
        weight, row_sums, shift = gemv.fold_norm(w, b, *norms)
        ours = torch.ops.qeffbuild.gemv_fused(x, weight, shift, row_sums, 1e-5, activation, res).float()
    else:
        ours = torch.ops.qeffbuild.gemv_fused(x, w, b, None, 0.0, activation, res).float()
    tolerance = 2 * (unfused - exact).abs().max().item() + 1e-3
    assert ours.shape == (1, n) and (ours - exact).abs().max().item() <= tolerance


def test_a_session_defines_only_the_ops_its_artifact_names() -> None:
    """Each definition costs a load ~0.1 s: an artifact built with the fusion off defines qeffbuild::gemv alone."""
    import subprocess
    import sys

    code = ("import torch; from qeffbuild.backends import gemv; gemv.register([gemv.OP]); "
            "print(hasattr(torch.ops.qeffbuild, 'gemv'), hasattr(torch.ops.qeffbuild, 'gemv_fused'))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["True", "False"]


def _check_kernels_against_definition(device: str) -> None:
    """Both kernels (each form: the weight tile first, or chunk by chunk) against the op's float32 definition, at
    products of whisper-large-v3's shapes and one whose sizes are not powers of two."""
    from qeffbuild.backends import gemv

    gen = torch.Generator(device=device).manual_seed(0)
    # one row: the weight tile first or chunk by chunk; 3, 8 and 16 rows: the tensor-core tile (gemv_mma), split
    # along K for the 1280-column matrices (5 and 10 parts), whole for the 5120-column one at 8 rows' launch
    for weight_first, rows in ((True, 1), (False, 1), (True, 3), (False, 8), (True, 16)):
        gemv.WEIGHT_FIRST = weight_first
        for n, k in ((1280, 1280), (5120, 1280), (1280, 5120), (7, 384)):
            # rows of different scales and offsets: each row's own layer-norm statistics
            x = (torch.randn(rows, k, device=device, generator=gen) * torch.arange(1, rows + 1, device=device)[:, None]
                 + torch.arange(rows, device=device)[:, None]).half()
            w = (torch.randn(n, k, device=device, generator=gen) * 0.02).half()
            b = torch.randn(1, n, device=device, generator=gen).half()
            r = torch.randn(rows, n, device=device, generator=gen).half()
            exact = (x.float() @ w.float().t() + b.float()).half().float()
            assert (gemv._launch(x, w, b[0]).float() - exact).abs().max().item() <= 2e-2 * exact.abs().max().item()
            lw, lb = (1 + 0.1 * torch.randn(k, device=device, generator=gen)).half(), torch.zeros(k, device=device)
            folded = gemv.fold_norm(w, b[0], lw, lb.half())
            args = (x, folded[0], folded[2], folded[1], 1e-5, "gelu", r)
            want = gemv._reference(*args).float()
            got = gemv._launch_fused(*args).float()
            assert got.shape == (rows, n)
            assert (got - want).abs().max().item() <= 2e-2 * want.abs().max().item(), (weight_first, rows, n, k)


def _check_bfloat16_rows(device: str, shapes: Any) -> None:
    """A bfloat16 model's batch-8 products take the tensor-core tile too (tl.dot in bfloat16): plain and fused,
    split along K and not, against the op's float32 definition."""
    from qeffbuild.backends import gemv

    gen = torch.Generator(device=device).manual_seed(1)
    for n, k in shapes:
        x = (torch.randn(8, k, device=device, generator=gen) + 3).bfloat16()
        w = (torch.randn(n, k, device=device, generator=gen) * 0.02).bfloat16()
        b = torch.randn(n, device=device, generator=gen).bfloat16()
        exact = (x.float() @ w.float().t() + b.float()).bfloat16().float()
        assert (gemv._launch(x, w, b).float() - exact).abs().max().item() <= 2e-2 * exact.abs().max().item(), (n, k)
        folded = gemv.fold_norm(w, b, (1 + 0.1 * torch.randn(k, device=device, generator=gen)).bfloat16(), None)
        args = (x, folded[0], folded[2], folded[1], 1e-5, "gelu", torch.randn(8, n, device=device).bfloat16())
        want = gemv._reference(*args).float()
        assert (gemv._launch_fused(*args).float() - want).abs().max().item() <= 2e-2 * want.abs().max().item(), (n, k)


def _widen_interpreters_bfloat16_dot() -> None:
    """Triton 3.5's interpreter keeps bfloat16 as its raw uint16 bits and multiplies those in tl.dot (elementwise
    ops convert them): widen a dot's bfloat16 operands to float32 first, as the tensor cores read them."""
    import numpy as np
    import triton.language as tl
    from triton.runtime import interpreter

    dot = interpreter.InterpreterBuilder.create_dot

    def widen(t: Any) -> Any:
        if t.dtype.scalar != tl.bfloat16:
            return t
        return interpreter.TensorHandle((t.data.astype(np.uint32) << 16).view(np.float32), tl.float32)

    interpreter.InterpreterBuilder.create_dot = lambda self, a, b, *rest: dot(self, widen(a), widen(b), *rest)


def _check_in_the_interpreter() -> None:
    _check_kernels_against_definition("cpu")
    _widen_interpreters_bfloat16_dot()
    _check_bfloat16_rows("cpu", ((300, 1280), (64, 5120)))


@pytest.mark.skipif(os.environ.get("QEFFBUILD_TRITON_INTERPRET") != "1",
                    reason="QEFFBUILD_TRITON_INTERPRET=1 with triton installed runs the kernels on the CPU")
def test_the_kernels_in_tritons_interpreter() -> None:
    pytest.importorskip("triton")
    code = "from tests.backends.test_gemv import _check_in_the_interpreter as c; c()"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, "TRITON_INTERPRET": "1"}, cwd=Path(__file__).resolve().parents[2])
    assert done.returncode == 0, done.stderr[-3000:]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_the_kernels_in_both_forms_on_the_gpu() -> None:
    from qeffbuild.backends import gemv

    try:
        _check_kernels_against_definition("cuda")
    finally:
        gemv.WEIGHT_FIRST = None


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_the_several_row_kernel_in_bfloat16_on_the_gpu() -> None:
    _check_bfloat16_rows("cuda", ((1280, 1280), (1280, 5120), (5120, 1280), (51866, 1280)))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("rows", [1, 8])
def test_a_dependent_chain_replayed_from_a_cuda_graph_reads_each_input_after_it_is_written(rows: int) -> None:
    """On a Hopper GPU each product starts while the one before it finishes (programmatic dependent launch) and
    must wait for it before reading x. A chain of 24 products captured once and replayed on new inputs: a product
    that read x early would read the previous replay's value, and the chain would end far from the float32 one.
    At 8 rows the products split along K: a part summed before the others were in, or a count not reset for the
    next replay, would too."""
    from qeffbuild.backends import gemv

    gemv.register()
    torch.manual_seed(0)
    shapes = [(1280, 1280), (5120, 1280), (1280, 5120)] * 8
    weights = [(torch.randn(n, k, device="cuda") * k ** -0.5).half() for n, k in shapes]
    x = torch.randn(rows, 1280, device="cuda").half()

    def chain() -> Any:
        y = x
        for w in weights:
            y = torch.ops.qeffbuild.gemv(y, w, None)
        return y

    chain()  # compiles the kernel outside the capture
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = chain()
    for _ in range(3):
        x.copy_(torch.randn_like(x))
        graph.replay()
        exact = x.float()
        for w in weights:  # float32 sums, each product rounded to half as the kernel rounds it
            exact = (exact @ w.float().t()).half().float()
        assert (out.float() - exact).abs().max().item() <= 0.05 * exact.abs().max().item()
