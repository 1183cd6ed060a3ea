"""qeffbuild::gemv: which products the compile step sends to it (traced on CPU with fake CUDA tensors), and on a GPU
that it computes them as torch does."""

from __future__ import annotations

from typing import Any

import pytest

torch = pytest.importorskip("torch")


def _trace(batch: int, dtype: Any, bias: bool) -> str:
    """The traced linear's code; it also checks that the compile step would record the ops it calls."""
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.fx.experimental.proxy_tensor import make_fx

    from qeffbuild.backends import gemv

    with FakeTensorMode():
        x = torch.empty(batch, 1, 1280, device="cuda", dtype=dtype)
        w = torch.empty(3840, 1280, device="cuda", dtype=dtype)
        b = torch.empty(3840, device="cuda", dtype=dtype) if bias else None
        graph = make_fx(lambda x, w, b: torch.nn.functional.linear(x, w, b),
                        decomposition_table=gemv.decompositions(), tracing_mode="fake")(x, w, b)
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
    """Batches of rows (cuBLAS is as fast at 8 rows) and float32 (not measured) keep torch's matmul."""
    code = _trace(batch, getattr(torch, dtype), True)
    assert "qeffbuild.gemv" not in code


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
