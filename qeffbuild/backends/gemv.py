"""A one-row matrix product (GEMV) for the `inductor` backend's CUDA decoder steps: ``qeffbuild::gemv``.

A decoder step at batch 1 multiplies one row by each weight matrix. cuBLAS takes 5.1 µs for whisper-large-v3's
1280×1280 projection (3.3 MB: 640 GB/s, 16 % of the H200's copy bandwidth), and Inductor's own mul + sum 4.0–4.7 µs;
this Triton kernel takes 2.9 µs, and 31.7 against 46.0 µs for the 133 MB LM head (`benchmarks/gemv_variants.py`
measures all four at the decoder's shapes, each over 32 distinct matrices inside one CUDA graph). Each program
reads ``BLOCK_N`` whole weight rows in ``BLOCK_K`` chunks and keeps float32 partial products, summed once at the
end, so the loads stay wide and the accumulation is float32 (as cuBLAS's).

The compile step routes ``aten.mm``/``aten.addmm`` with one row, a half-precision CUDA weight in the usual
``linear`` layout and ``BLOCK_K``-aligned sizes to this op (:func:`decompositions`, used by ``make_fx``); Inductor
calls it as an extern kernel, so a saved artifact names ``torch.ops.qeffbuild.gemv`` and a session registers the op
(:func:`register`) before loading it. The Triton kernel is compiled on its first call in a process and then kept
in Triton's cache folder, like Inductor's own kernels.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

# One launch config for every shape: the best of a sweep at whisper-large-v3's decoder shapes (benchmarks/
# gemv_variants.py on an H200), fixed here rather than autotuned so a fresh process benchmarks nothing and runs
# the kernel the validation ran.
BLOCK_N = 4
BLOCK_K = 128
NUM_WARPS = 8
OP = "qeffbuild::gemv"  # the op's name, as inductor.json's custom_ops lists it
HALF = ("float16", "bfloat16")  # torch dtype names: this module is imported at plan time (plugin discovery)

_registered = False
_kernel: Any = None


def register() -> None:
    """Define ``qeffbuild::gemv`` in this process (once): a compiled step that calls it needs it before loading."""
    global _registered
    if _registered:
        return
    _registered = True
    import torch

    # the schema is given: this module's annotations are strings naming a torch it imports only here
    @torch.library.custom_op(OP, mutates_args=(),
                             schema="(Tensor x, Tensor weight, Tensor? bias) -> Tensor")
    def gemv(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        """``x @ weight.T (+ bias)`` for ``x`` of shape (1, K), ``weight`` (N, K) and ``bias`` (N,)."""
        if x.device.type != "cuda":  # the op is only routed to on CUDA; elsewhere it is the plain product
            return x @ weight.t() if bias is None else torch.addmm(bias, x, weight.t())
        return _launch(x, weight, bias)

    @gemv.register_fake
    def _(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        return x.new_empty((x.shape[0], weight.shape[0]))


def eligible(mat1: Any, mat2: Any) -> bool:
    """Whether ``mat1 @ mat2`` is a one-row product this kernel computes: ``mat2`` is a transposed contiguous
    weight (``linear``'s layout) in half precision on CUDA, and K is a multiple of ``BLOCK_K``."""
    if mat1.dim() != 2 or mat2.dim() != 2 or mat1.shape[0] != 1:
        return False
    k, n = mat2.shape
    return (mat1.device.type == "cuda" and mat2.device.type == "cuda"
            and str(mat1.dtype).removeprefix("torch.") in HALF
            and mat2.dtype == mat1.dtype and mat2.stride() == (1, k) and mat1.stride(1) == 1
            and k % BLOCK_K == 0 and n > 0)


def decompositions() -> dict[Any, Any]:
    """``make_fx`` decompositions sending eligible one-row products to ``qeffbuild::gemv`` (others unchanged)."""
    import torch

    register()
    aten = torch.ops.aten

    def mm(mat1: Any, mat2: Any) -> Any:
        if not eligible(mat1, mat2):
            return NotImplemented
        return torch.ops.qeffbuild.gemv(mat1, mat2.t(), None)

    def addmm(bias: Any, mat1: Any, mat2: Any, beta: Any = 1, alpha: Any = 1) -> Any:
        if beta != 1 or alpha != 1 or not eligible(mat1, mat2):
            return NotImplemented
        if bias.dim() == 1 and bias.shape[0] == mat2.shape[1] and bias.dtype == mat1.dtype:
            return torch.ops.qeffbuild.gemv(mat1, mat2.t(), bias)  # added in the kernel, as cuBLAS's epilogue does
        return torch.ops.qeffbuild.gemv(mat1, mat2.t(), None) + bias

    return {aten.mm.default: mm, aten.addmm.default: addmm}


def _launch(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    import torch
    import triton

    kernel = _triton_kernel()
    x = x.contiguous()
    n, k = weight.shape
    if weight.stride() != (k, 1):  # the kernel reads whole rows: a strided view is copied, never misread
        weight = weight.contiguous()
    out = torch.empty((x.shape[0], n), device=x.device, dtype=x.dtype)
    if bias is not None:
        bias = bias.contiguous()
    kernel[(triton.cdiv(n, BLOCK_N),)](x, weight, out if bias is None else bias, out, n, K=k, HAS_BIAS=bias is not None,
                                         BLOCK_N=BLOCK_N, BLOCK_K=BLOCK_K, num_warps=NUM_WARPS)
    return out


def _triton_kernel() -> Any:
    global _kernel
    if _kernel is not None:
        return _kernel
    import triton
    import triton.language as tl

    # Triton reads a jitted function's annotations: only tl.constexpr may appear there
    @triton.jit
    def gemv_rows(x_ptr, w_ptr, b_ptr, y_ptr, N, K: tl.constexpr, HAS_BIAS: tl.constexpr, BLOCK_N: tl.constexpr,
                  BLOCK_K: tl.constexpr):
        rn = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
        acc = tl.zeros([BLOCK_N, BLOCK_K], tl.float32)
        for k0 in range(0, K, BLOCK_K):
            rk = k0 + tl.arange(0, BLOCK_K)
            x = tl.load(x_ptr + rk).to(tl.float32)
            w = tl.load(w_ptr + rn[:, None] * K + rk[None, :], mask=rn[:, None] < N, other=0.0)
            acc += w.to(tl.float32) * x[None, :]
        y = tl.sum(acc, 1)
        if HAS_BIAS:
            y += tl.load(b_ptr + rn, mask=rn < N, other=0.0).to(tl.float32)
        tl.store(y_ptr + rn, y.to(y_ptr.dtype.element_ty), mask=rn < N)

    _kernel = gemv_rows
    return _kernel
