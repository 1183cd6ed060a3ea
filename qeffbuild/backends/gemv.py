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

An extern kernel is a wall for Inductor's fusion: the layer norm before a GEMV, the GELU after fc1 and each
residual add after a projection stayed small kernels of their own (~2 µs each, four a decoder layer; 128 of a
large-v3 step's 580). :func:`fuse_neighbours` folds them into ``qeffbuild::gemv_fused``: the layer norm folded
into the product (γ and β into the operands at compile time, its statistics summed over the same loads), the GELU
and the residual add as its epilogue, each rounded to the model's dtype where the unfused graph rounded it (the
layer norm's own output excepted: γ is folded into the weights instead). :func:`_reference` is the op's
definition, and its CPU path. On the H200, whisper-large-v3 dims fp16 batch 1: 1.79 against 1.93 ms/token in one
bench, token agreement 1.000 against the float32 reference.

A batched step's products (2 to ``gemv_max_rows`` rows, by default :data:`MAX_ROWS`) are routed to the same two
ops, folded the same way; with more than one row they run :mod:`qeffbuild.backends.gemv_mma`'s tensor-core tile
instead of this module's kernels.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from qeffbuild.backends import gemv_mma

if TYPE_CHECKING:
    import torch

# One launch config for every shape: the best of a sweep at whisper-large-v3's decoder shapes (benchmarks/
# gemv_variants.py on an H200), fixed here rather than autotuned so a fresh process benchmarks nothing and runs
# the kernel the validation ran.
BLOCK_N = 4
BLOCK_K = 128
NUM_WARPS = 8
OP = "qeffbuild::gemv"  # the op's name, as inductor.json's custom_ops lists it
FUSED_OP = "qeffbuild::gemv_fused"  # with a layer norm before it and a GELU and/or residual add after it
OPS = (OP, FUSED_OP)
# A fused layer norm's statistics are computed by every program (each reads the whole row): at the LM head's
# 12,967 programs that re-read is as many bytes as its weights, so a norm is fused only into products with at
# most this many output rows per input column (qkv 3840×1280 and fc1 5120×1280 are; the 51,866-row head is not).
NORM_MAX_ROWS_PER_COLUMN = 8
# A decoder step at batch B multiplies B rows by each weight: with the inductor option gemv_max_rows, up to
# MAX_ROWS rows go to the ops, whose several-row form is a tensor-core tile (backends/gemv_mma.py).
MAX_ROWS = gemv_mma.MAX_ROWS
HALF = ("float16", "bfloat16")  # torch dtype names: this module is imported at plan time (plugin discovery)
ROUTED_DEVICES = ("cuda",)  # where products go to the kernel (tests add "cpu" to trace HF modules without a GPU)

# Each program loads its whole weight tile (BLOCK_N rows) before it reads x, and on a Hopper GPU is launched to
# overlap the kernel before it (programmatic dependent launch): it reads its weights, which no kernel of a step
# writes, while that kernel finishes, then waits for it (``gdc_wait``) before reading x, that kernel's output. In a
# CUDA graph of whisper-large-v3's out-proj → fc1 → fc2 chain (benchmarks/gemv_pdl.py on an H200): 3.63 µs a
# product, against 4.62 for the chunked loop without it (and 4.93 for the whole tile without it, so a GPU without
# PDL keeps the loop). None: the tile form where PDL is available; True or False forces a form (the tests').
WEIGHT_FIRST: bool | None = None
_PDL_BY_DEVICE: dict[int, bool] = {}
_registered: set[str] = set()
_kernel: Any = None
_fused_kernel: Any = None
_gemv_epilogue: Any = None


def register(ops: tuple[str, ...] | list[str] = OPS) -> None:
    """Define ``ops`` (by default both) in this process, each once: a compiled step that calls one needs it before
    loading, and each definition costs ~0.1 s of a load, so a session defines only those its artifact names."""
    if OP in ops and OP not in _registered:
        _registered.add(OP)
        _define_gemv()
    if FUSED_OP in ops and FUSED_OP not in _registered:
        _registered.add(FUSED_OP)
        _define_gemv_fused()


def _define_gemv() -> None:
    import torch

    # the schema is given: this module's annotations are strings naming a torch it imports only here
    @torch.library.custom_op(OP, mutates_args=(),
                             schema="(Tensor x, Tensor weight, Tensor? bias) -> Tensor")
    def gemv(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        """``x @ weight.T (+ bias)`` for ``x`` of shape (M, K) (M ≤ MAX_ROWS), ``weight`` (N, K) and ``bias``
        (N,)."""
        if x.device.type != "cuda":  # the op is only routed to on CUDA; elsewhere it is the plain product
            return x @ weight.t() if bias is None else torch.addmm(bias, x, weight.t())
        return _launch(x, weight, bias)

    @gemv.register_fake
    def _(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        return x.new_empty((x.shape[0], weight.shape[0]))


def _define_gemv_fused() -> None:
    import torch

    @torch.library.custom_op(FUSED_OP, mutates_args=(),
                             schema="(Tensor x, Tensor weight, Tensor? bias, Tensor? row_sums, float eps, "
                                    "str activation, Tensor? residual) -> Tensor")
    def gemv_fused(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, row_sums: torch.Tensor | None,
                   eps: float, activation: str, residual: torch.Tensor | None) -> torch.Tensor:
        """``act(norm(x) @ weight.T + bias) + residual``, each part optional (see :func:`_reference`)."""
        args = (x, weight, bias, row_sums, eps, activation, residual)
        return _launch_fused(*args) if x.device.type == "cuda" else _reference(*args)

    @gemv_fused.register_fake
    def _(x: torch.Tensor, weight: torch.Tensor, *_: Any) -> torch.Tensor:
        return x.new_empty((x.shape[0], weight.shape[0]))


def eligible(mat1: Any, mat2: Any, max_rows: int = 1) -> bool:
    """Whether ``mat1 @ mat2`` is a product of at most ``max_rows`` rows this kernel computes: ``mat2`` is a
    transposed contiguous weight (``linear``'s layout) in half precision on CUDA, and K is a multiple of
    ``BLOCK_K``."""
    if mat1.dim() != 2 or mat2.dim() != 2 or not 1 <= mat1.shape[0] <= min(max_rows, MAX_ROWS):
        return False
    k, n = mat2.shape
    return (mat1.device.type in ROUTED_DEVICES and mat2.device.type == mat1.device.type
            and str(mat1.dtype).removeprefix("torch.") in HALF
            and mat2.dtype == mat1.dtype and mat2.stride() == (1, k) and mat1.stride(1) == 1
            and k % BLOCK_K == 0 and n > 0)


def decompositions(max_rows: int = 1) -> dict[Any, Any]:
    """``make_fx`` decompositions sending eligible products of up to ``max_rows`` rows to ``qeffbuild::gemv``
    (others unchanged)."""
    import torch

    register()
    aten = torch.ops.aten

    def mm(mat1: Any, mat2: Any) -> Any:
        if not eligible(mat1, mat2, max_rows):
            return NotImplemented
        return torch.ops.qeffbuild.gemv(mat1, mat2.t(), None)

    def addmm(bias: Any, mat1: Any, mat2: Any, beta: Any = 1, alpha: Any = 1) -> Any:
        if beta != 1 or alpha != 1 or not eligible(mat1, mat2, max_rows):
            return NotImplemented
        if bias.dim() == 1 and bias.shape[0] == mat2.shape[1] and bias.dtype == mat1.dtype:
            return torch.ops.qeffbuild.gemv(mat1, mat2.t(), bias)  # added in the kernel, as cuBLAS's epilogue does
        return torch.ops.qeffbuild.gemv(mat1, mat2.t(), None) + bias

    return {aten.mm.default: mm, aten.addmm.default: addmm}


def _reference(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, row_sums: torch.Tensor | None,
               eps: float, activation: str, residual: torch.Tensor | None) -> torch.Tensor:
    """What ``qeffbuild::gemv_fused`` computes. With ``row_sums`` the row is layer-normalized first, its scale and
    shift folded into the operands at compile time (:func:`fold_norm`): ``weight`` is W·diag(γ), ``row_sums`` its
    row sums and ``bias`` b + Wβ, in float32. Then ``y = r·(Σ_k weight·d − m·row_sums) + bias`` with d = x − x₀ (the
    row's first value: small sums where the mean is large), m = mean(d), r = 1/√(var(d) + eps). The product is
    rounded to the model's dtype, and the GELU and the residual add each round as the unfused ops do."""
    import torch

    if row_sums is None:
        y = x @ weight.t() if bias is None else torch.addmm(bias, x, weight.t())
    else:
        d = x.float() - x.float()[..., :1]
        m = d.mean(-1, keepdim=True)
        r = torch.rsqrt(((d * d).mean(-1, keepdim=True) - m * m).clamp_min(0) + eps)
        y = r * (d @ weight.float().t() - m * row_sums.float())
        y = (y if bias is None else y + bias.float()).to(x.dtype)
    if activation == "gelu":
        y = torch.nn.functional.gelu(y)
    return y if residual is None else y + residual


def fold_norm(weight: torch.Tensor, bias: torch.Tensor | None, norm_weight: torch.Tensor | None,
              norm_bias: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A linear layer after a layer norm as ``gemv_fused``'s operands: (W·diag(γ) in W's dtype, its row sums and
    b + Wβ in float32). Folding γ into W rounds each weight once; the unfused graph rounds the layer norm's output."""
    import torch

    w = weight.float()
    folded = (w * norm_weight.float()).to(weight.dtype) if norm_weight is not None else weight
    shift = torch.zeros(weight.shape[0], dtype=torch.float32, device=weight.device)
    if norm_bias is not None:
        shift += w @ norm_bias.float()
    if bias is not None:
        shift += bias.float()
    return folded.contiguous(), folded.float().sum(1), shift


def _launch(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    import triton

    x, weight, form = _operands(x, weight)
    if x.shape[0] > 1:
        return gemv_mma.launch(x, weight, bias, None, 0.0, "none", None, form["PDL"])
    kernel = _triton_kernel()
    n, k = weight.shape
    out = x.new_empty((1, n))
    if bias is not None:
        bias = bias.contiguous()
    kernel[(triton.cdiv(n, BLOCK_N),)](x, weight, out if bias is None else bias, out, n, K=k, K_P2=next_pow2(k),
                                         HAS_BIAS=bias is not None, **form, BLOCK_N=BLOCK_N, BLOCK_K=BLOCK_K,
                                         num_warps=NUM_WARPS)
    return out


def _operands(x: torch.Tensor, weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
    """x and the weight as the kernels read them (contiguous rows: a strided view is copied, never misread) and
    the one-row kernels' form (their TILE, PDL and launch_pdl arguments). The tile form (:data:`WEIGHT_FIRST`)
    may read its weights before the previous kernel has finished: not when the weight is a copy made just now, by
    the kernel before (nor does the several-row kernel then use PDL)."""
    k = weight.shape[1]
    tile = pdl_available(x) if WEIGHT_FIRST is None else WEIGHT_FIRST
    if weight.stride() != (k, 1):
        weight, tile = weight.contiguous(), False
    pdl = tile and pdl_available(x)
    return x.contiguous(), weight, {"TILE": tile, "PDL": pdl, "launch_pdl": pdl}


def next_pow2(n: int) -> int:
    """The least power of two ≥ ``n`` (a Triton block over ``n`` values)."""
    return 1 << (n - 1).bit_length()


def pdl_available(x: torch.Tensor) -> bool:
    """Whether this launch may overlap the previous kernel (Hopper's programmatic dependent launch): a CUDA device
    of compute capability 9 or newer."""
    import torch

    if x.device.type != "cuda":
        return False
    index = x.device.index if x.device.index is not None else torch.cuda.current_device()
    if index not in _PDL_BY_DEVICE:
        _PDL_BY_DEVICE[index] = torch.cuda.get_device_capability(index)[0] >= 9
    return _PDL_BY_DEVICE[index]


def _launch_fused(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, row_sums: torch.Tensor | None,
                  eps: float, activation: str, residual: torch.Tensor | None) -> torch.Tensor:
    import triton

    x, weight, form = _operands(x, weight)
    if x.shape[0] > 1:
        return gemv_mma.launch(x, weight, bias, row_sums, eps, activation, residual, form["PDL"])
    kernel = _triton_fused_kernel()
    n, k = weight.shape
    out = x.new_empty((1, n))
    given = [t.contiguous() if t is not None else out for t in (bias, row_sums, residual)]
    kernel[(triton.cdiv(n, BLOCK_N),)](
        x, weight, *given, out, n, float(eps), K=k, K_P2=next_pow2(k), HAS_BIAS=bias is not None,
        NORM=row_sums is not None, GELU=activation == "gelu", RESIDUAL=residual is not None, **form, BLOCK_N=BLOCK_N,
        BLOCK_K=BLOCK_K, num_warps=NUM_WARPS)
    return out


def _triton_kernel() -> Any:
    global _kernel
    if _kernel is not None:
        return _kernel
    import triton
    import triton.language as tl

    # Triton reads a jitted function's annotations: only tl.constexpr may appear there.
    # TILE: the program's whole weight tile is loaded first, then (PDL) it waits for the kernel before it to finish
    # and reads x. Otherwise the weights and x are read chunk by chunk.
    @triton.jit
    def gemv_row(x_ptr, w_ptr, b_ptr, y_ptr, N, K: tl.constexpr, K_P2: tl.constexpr, HAS_BIAS: tl.constexpr,
                 TILE: tl.constexpr, PDL: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
        rn = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
        if TILE:
            if PDL:
                tl.extra.cuda.gdc_launch_dependents()  # the next kernel may be scheduled as these programs end
            rk = tl.arange(0, K_P2)
            w = tl.load(w_ptr + rn[:, None] * K + rk[None, :], mask=(rn[:, None] < N) & (rk[None, :] < K), other=0.0)
            if PDL:
                tl.extra.cuda.gdc_wait()  # x is the previous kernel's output: written and visible after this
            x = tl.load(x_ptr + rk, mask=rk < K, other=0.0).to(tl.float32)
            y = tl.sum(w.to(tl.float32) * x[None, :], 1)
            if HAS_BIAS:  # after the wait: a bias may be a kernel's output too
                y += tl.load(b_ptr + rn, mask=rn < N, other=0.0).to(tl.float32)
            tl.store(y_ptr + rn, y.to(y_ptr.dtype.element_ty), mask=rn < N)
        else:
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

    _kernel = gemv_row
    return _kernel


def _triton_fused_kernel() -> Any:
    global _fused_kernel, _gemv_epilogue
    if _fused_kernel is not None:
        return _fused_kernel
    import triton
    import triton.language as tl

    # The layer norm costs the loop nothing per weight: γ and β are in the operands (fold_norm), and the row's
    # statistics are summed over the x chunks every program loads anyway. On the H200 (benchmarks/gemv_fused.py,
    # large-v3's qkv with its norm) this takes 7.3 µs against 5.9 for the plain GEMV and 10.8 for the unfused ops.
    # Two earlier forms were slower: a first pass over the row for the statistics held every weight load back
    # (the whole step went from 1.94 to 2.12 ms/token), and γ applied inside the loop (four operations a weight
    # instead of one) took 11.8 µs.
    @triton.jit
    def epilogue(y, rn, N, b_ptr, rs_ptr, r_ptr, y_ptr, norm_m, norm_r, HAS_BIAS: tl.constexpr,
                 NORM: tl.constexpr, GELU: tl.constexpr, RESIDUAL: tl.constexpr):
        """The row's output: the norm's correction, the bias, the GELU and the residual add, then the store (every
        operand read here, after the wait: any may be the previous kernel's output)."""
        dtype = y_ptr.dtype.element_ty
        if NORM:
            y = norm_r * (y - norm_m * tl.load(rs_ptr + rn, mask=rn < N, other=0.0))
        if HAS_BIAS:
            y += tl.load(b_ptr + rn, mask=rn < N, other=0.0).to(tl.float32)
        if GELU:
            y = y.to(dtype).to(tl.float32)
            y = 0.5 * y * (1.0 + tl.erf(y * 0.7071067811865476))
        if RESIDUAL:
            y = y.to(dtype).to(tl.float32) + tl.load(r_ptr + rn, mask=rn < N, other=0.0).to(tl.float32)
        tl.store(y_ptr + rn, y.to(dtype), mask=rn < N)

    _gemv_epilogue = epilogue  # a module global: Triton resolves what a kernel calls in its module's globals

    @triton.jit
    def gemv_fused_row(x_ptr, w_ptr, b_ptr, rs_ptr, r_ptr, y_ptr, N, eps, K: tl.constexpr, K_P2: tl.constexpr,
                       HAS_BIAS: tl.constexpr, NORM: tl.constexpr, GELU: tl.constexpr, RESIDUAL: tl.constexpr,
                       TILE: tl.constexpr, PDL: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
        rn = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
        if TILE:  # as gemv_row: the weight tile first, then (PDL) the wait for x
            if PDL:
                tl.extra.cuda.gdc_launch_dependents()
            rk = tl.arange(0, K_P2)
            inside = rk < K
            w = tl.load(w_ptr + rn[:, None] * K + rk[None, :], mask=(rn[:, None] < N) & inside[None, :], other=0.0)
            if PDL:
                tl.extra.cuda.gdc_wait()
            x = tl.load(x_ptr + rk, mask=inside, other=0.0).to(tl.float32)
            norm_m = 0.0
            norm_r = 1.0
            if NORM:
                x = tl.where(inside, x - tl.load(x_ptr).to(tl.float32), 0.0)
                norm_m = tl.sum(x, 0) / K
                norm_r = tl.rsqrt(tl.maximum(tl.sum(x * x, 0) / K - norm_m * norm_m, 0.0) + eps)
            _gemv_epilogue(tl.sum(w.to(tl.float32) * x[None, :], 1), rn, N, b_ptr, rs_ptr, r_ptr, y_ptr,
                           norm_m, norm_r, HAS_BIAS, NORM, GELU, RESIDUAL)
        else:
            acc = tl.zeros([BLOCK_N, BLOCK_K], tl.float32)
            norm_m = 0.0
            norm_r = 1.0
            if NORM:
                x0 = tl.load(x_ptr).to(tl.float32)
                s = tl.zeros([BLOCK_K], tl.float32)
                ss = tl.zeros([BLOCK_K], tl.float32)
            for k0 in range(0, K, BLOCK_K):
                rk = k0 + tl.arange(0, BLOCK_K)
                x = tl.load(x_ptr + rk).to(tl.float32)
                if NORM:
                    x = x - x0
                    s += x
                    ss += x * x
                w = tl.load(w_ptr + rn[:, None] * K + rk[None, :], mask=rn[:, None] < N, other=0.0)
                acc += w.to(tl.float32) * x[None, :]
            if NORM:
                norm_m = tl.sum(s, 0) / K
                norm_r = tl.rsqrt(tl.maximum(tl.sum(ss, 0) / K - norm_m * norm_m, 0.0) + eps)
            _gemv_epilogue(tl.sum(acc, 1), rn, N, b_ptr, rs_ptr, r_ptr, y_ptr, norm_m, norm_r, HAS_BIAS, NORM,
                           GELU, RESIDUAL)

    _fused_kernel = gemv_fused_row
    return _fused_kernel


def fuse_neighbours(module: Any, weights: dict[str, Any]) -> dict[str, int]:
    """Fold into each ``qeffbuild::gemv`` of a ``make_fx`` graph the layer norm that makes its input and the GELU
    and residual add that read its output, as one ``qeffbuild::gemv_fused`` (views between them pass through).

    The graph's first placeholders are ``weights`` (by name, in order, with their values). A layer norm is folded
    only where its γ and β and the linear's weight and bias are among them: the folded operands (:func:`fold_norm`)
    are computed here and become new weights, appended to ``weights`` and given placeholders after the others (the
    originals, read by nothing else, drop out of the compiled graph). A neighbour is folded only where the GEMV alone
    reads it (or it reads the GEMV alone). Returns how many of each were folded."""
    import torch

    graph = module.graph
    placeholders = [n for n in graph.nodes if n.op == "placeholder"]
    values = dict(zip(placeholders, weights.items(), strict=False))  # node -> (name, tensor), weights only
    last_weight = placeholders[len(weights) - 1] if weights else None
    counts = {"layer_norm": 0, "gelu": 0, "residual_add": 0}
    for node in list(graph.nodes):
        if node.op != "call_function" or node.target is not torch.ops.qeffbuild.gemv.default:
            continue
        x, weight, bias = node.args
        n_out, k = _val(weight).shape
        norm = _norm_before(x)
        folded = _fold(norm, weight, bias, values) if norm is not None and n_out <= NORM_MAX_ROWS_PER_COLUMN * k \
            else None
        end, activation, residual = _epilogue(node)
        if folded is None and end is node:
            continue
        if folded is not None and norm is not None:
            operands = []
            for suffix, tensor in zip(("norm_folded", "row_sums", "shift"), folded[1:], strict=True):
                name = f"{folded[0]}:{suffix}"
                weights[name] = tensor
                with graph.inserting_after(last_weight):
                    last_weight = graph.placeholder(name.replace(".", "_").replace(":", "_"))
                last_weight.meta = {"val": tensor}
                values[last_weight] = (name, tensor)
                operands.append(last_weight)
            source, weight, bias, row_sums, eps = norm.input, operands[0], operands[2], operands[1], norm.eps
        else:
            source, row_sums, eps = x, None, 0.0
        with graph.inserting_before(end):
            if source is not x:
                source = graph.call_function(torch.ops.aten.view.default, (source, list(_val(x).shape)))
                source.meta = dict(x.meta)
            if residual is not None:
                residual = graph.call_function(torch.ops.aten.view.default, (residual, list(_val(node).shape)))
                residual.meta = dict(node.meta)
            fused = graph.call_function(torch.ops.qeffbuild.gemv_fused.default,
                                        (source, weight, bias, row_sums, eps, activation, residual))
            fused.meta = dict(node.meta)
            out = graph.call_function(torch.ops.aten.view.default, (fused, list(_val(end).shape)))
            out.meta = dict(end.meta)
        end.replace_all_uses_with(out)
        _erase_back(graph, end, stop=node)
        _erase_back(graph, node, stop=None)
        for unread in norm.nodes if folded is not None and norm is not None else []:  # mean and rstd, then the norm
            if not unread.users and unread in graph.nodes:
                graph.erase_node(unread)
        counts["layer_norm"] += folded is not None
        counts["gelu"] += activation == "gelu"
        counts["residual_add"] += residual is not None
    graph.lint()
    module.recompile()
    return counts


def _fold(norm: _Norm, weight: Any, bias: Any, values: dict[Any, tuple[str, Any]]) -> tuple[str, Any, Any, Any] | None:
    """(the weight's name, its :func:`fold_norm` operands) when the linear's weight (under its ``t`` views), bias
    and the norm's γ and β are all weights of known value; else None."""
    flips = 0
    while _is(weight, "aten::t"):
        weight, flips = weight.args[0], flips + 1
    parts = [weight, bias, norm.weight, norm.bias]
    if flips % 2 or weight not in values or any(p is not None and p not in values for p in parts):
        return None
    name, w = values[weight]
    b, g, beta = (values[p][1] if p is not None else None for p in parts[1:])
    return (name, *fold_norm(w, b, g, beta))


class _Norm:
    """A layer norm over the last axis whose normalized output only a GEMV reads (through views)."""

    def __init__(self, input: Any, weight: Any, bias: Any, eps: float, nodes: list[Any]) -> None:
        self.input, self.weight, self.bias, self.eps, self.nodes = input, weight, bias, eps, nodes


_VIEW_OPS = ("aten::view", "aten::_unsafe_view", "aten::reshape")


def _norm_before(x: Any) -> _Norm | None:
    import operator

    import torch

    nodes = []
    while _is(x, *_VIEW_OPS) and len(x.users) == 1:
        nodes.append(x)
        x = x.args[0]
    if not (x.op == "call_function" and x.target is operator.getitem and x.args[1] == 0 and len(x.users) == 1):
        return None
    ln = x.args[0]
    if ln.op != "call_function" or ln.target is not torch.ops.aten.native_layer_norm.default:
        return None
    inp, shape, weight, bias, eps = ln.args
    others = [u for u in ln.users if u is not x]
    if list(shape) != [_val(inp).shape[-1]] or any(u.target is not operator.getitem or u.users for u in others):
        return None
    return _Norm(inp, weight, bias, float(eps), [*nodes, x, *others, ln])


def _epilogue(node: Any) -> tuple[Any, str, Any]:
    """(the last node folded, the activation, the residual) after a GEMV: GELU and then an add of a tensor of
    the same shape and dtype, each the only reader of what precedes it."""
    end, activation, residual = node, "none", None
    after = _sole_reader(_through_views(end))
    if _is(after, "aten::gelu") and after.kwargs.get("approximate", "none") == "none" and len(after.args) == 1:
        end, activation = after, "gelu"
        after = _sole_reader(_through_views(end))
    if _is(after, "aten::add") and len(after.args) == 2 and not after.kwargs:
        chain = _through_views(end)
        a, b = after.args
        other = b if a is chain else a if b is chain else None
        if other is not None and other is not chain and hasattr(other, "meta") and _same(_val(other), _val(after)) \
                and _same(_val(chain), _val(after)):
            end, residual = after, other
    return end, activation, residual


def _through_views(node: Any) -> Any:
    while True:
        reader = _sole_reader(node)
        if not _is(reader, *_VIEW_OPS):
            return node
        node = reader


def _sole_reader(node: Any) -> Any:
    return next(iter(node.users)) if len(node.users) == 1 else None


def _is(node: Any, *names: str) -> bool:
    """Whether ``node`` calls one of the ATen ops ``names`` (any overload: ``aten::add`` is add.Tensor too)."""
    name = getattr(getattr(node, "target", None), "name", None)
    return getattr(node, "op", None) == "call_function" and callable(name) and str(name()).split(".")[0] in names


def _same(a: Any, b: Any) -> bool:
    return a is not None and b is not None and tuple(a.shape) == tuple(b.shape) and a.dtype == b.dtype


def _val(node: Any) -> Any:
    return node.meta.get("val") if hasattr(node, "meta") else None


def _erase_back(graph: Any, node: Any, stop: Any) -> None:
    """Erase ``node`` and then, walking back through its inputs, each pure node nothing reads any more (not
    ``stop``, nor anything with a side effect: a state's in-place copy stays)."""
    todo = [node]
    while todo:
        n = todo.pop()
        if n is stop or n.users or n.op != "call_function" or n.is_impure():
            continue
        inputs = list(n.all_input_nodes)
        graph.erase_node(n)
        todo.extend(inputs)
