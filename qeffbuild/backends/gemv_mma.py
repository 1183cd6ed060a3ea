"""The several-row form of ``qeffbuild::gemv`` and ``gemv_fused``: a decoder step at batch 2–16 on the tensor cores.

A batch-8 step multiplies 8 rows by each weight matrix. The one-row kernel (``backends/gemv.py``) does its
products on the CUDA cores; widened to 8 rows it was bound by its FMAs (large-v3 b8: 4.77 against cuBLAS's
2.70 ms/token). This kernel pads the rows to 16 and multiplies on the tensor cores (``tl.dot``), so a program's
time is its weight tile's load, as at one row. Each program reads one ``BLOCK_N`` × ``BLOCK_K`` weight tile:

- **Split along K** (``SPLIT_K`` programs per ``BLOCK_N`` output columns): whisper-large-v3's 1280-column
  matrices give 20 column tiles, too few programs to keep the H200's 132 SMs loading (the eighth session's
  unsplit tensor-core kernel was at 12.7 µs on fc2 against cuBLAS's 8.6). Each program stores its float32 partial
  tile in its own slot of a workspace and counts itself in; the last of a column tile to arrive sums the slots in
  split order (the same sum every run: no float atomics) and runs the epilogue, then resets the count. So one
  launch, no memset, and a CUDA graph replays it as is.
- **The weight tile first**: as the one-row kernel's tile form, the program loads its weights, then (with
  programmatic dependent launch, on Hopper) waits for the kernel before it, then reads x.
- **The epilogue** is ``gemv_fused``'s (:func:`qeffbuild.backends.gemv._reference`): the layer norm's correction
  from the row's statistics (γ and β folded into the operands at compile time), the bias, the GELU and the
  residual add, each rounded where the unfused graph rounds it. Each program sums the norm's statistics over the
  part of x it reads for its product, and they are summed with the parts' products (the product itself multiplies
  x as given: exact half-precision products summed in float32, then ``y = r·(Σ w·x − μ·Σw)``). The first form
  had the epilogue's program read the whole row again, a loop of dependent loads at the end of every launch.

The workspace and counts are per device, kept for the process (a CUDA graph's kernels hold their addresses), and
shared by every launch: launches on one stream are ordered, and with PDL a kernel touches them only after its
wait. Two launches running at once on two streams of one device would mix their parts; qeffbuild's decode loops
run one step at a time on one stream.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

MAX_ROWS = 16  # the rows of one tensor-core tile (tl.dot's smallest M is 16)
# The launch config, one for every shape (a fresh process benchmarks nothing): the best of 36 for a large-v3
# decoder layer's products at 8 rows on the H200 (benchmarks/gemm_rows.py): 32.4 µs a layer against cuBLAS's
# 37.0. Each program reads a 64 × 256 weight tile (32 KB); a matrix with fewer than TARGET_PROGRAMS column tiles
# splits along K (see blocks). Narrower tiles (16, 32 columns) and more programs (1,024) were slower.
BLOCK_N = 64
MAX_BLOCK_K = 256
TARGET_PROGRAMS = 128
NUM_WARPS = 4

_kernel: Any = None
_epilogue: Any = None
_WORKSPACES: dict[tuple[str, int | None], list[tuple[torch.Tensor, torch.Tensor]]] = {}


def blocks(n: int, k: int, block_n: int = BLOCK_N, target: int = TARGET_PROGRAMS,
           max_block_k: int = MAX_BLOCK_K) -> tuple[int, int, int]:
    """(BLOCK_K, CHUNKS, SPLIT_K) for an (n × k) weight: K is cut into blocks of the largest power of two up to
    ``max_block_k`` that divides it, and into the fewest parts (each CHUNKS blocks) that bring the launch to
    ``target`` programs, or as near as the blocks allow: large-v3's fc2 (20 column tiles, K = 5,120) takes 10
    parts of 2 blocks, and its LM head (811 tiles) one part of 5."""
    tiles = -(-n // block_n)
    block_k = max_block_k
    while k % block_k:
        block_k //= 2
    count = k // block_k
    split_k = next((d for d in range(1, count + 1) if count % d == 0 and tiles * d >= target), count)
    return block_k, count // split_k, split_k


def slot_size(block_n: int) -> int:
    """Floats in a part's workspace slot: its (MAX_ROWS × block_n) partial products, then its rows' sums of d and
    of d² (the norm's statistics), MAX_ROWS each. The kernel is given this size (SLOT) and lays the slot out so."""
    return MAX_ROWS * block_n + 2 * MAX_ROWS


def launch(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, row_sums: torch.Tensor | None,
           eps: float, activation: str, residual: torch.Tensor | None, pdl: bool,
           config: tuple[int, int, int, int] | None = None) -> torch.Tensor:
    """``gemv_fused``'s product for 2–16 contiguous rows of ``x`` and a contiguous (N, K) ``weight``. ``config``
    (BLOCK_N, largest BLOCK_K, target programs, warps) is the benchmark's sweep; a build uses the constants."""
    import torch

    rows, k = x.shape
    n = weight.shape[0]
    block_n, max_block_k, target, warps = config or (BLOCK_N, MAX_BLOCK_K, TARGET_PROGRAMS, NUM_WARPS)
    block_k, chunks, split_k = blocks(n, k, block_n, target, max_block_k)
    tiles = -(-n // block_n)
    out = torch.empty((rows, n), device=x.device, dtype=x.dtype)
    slot = slot_size(block_n)
    partial, count = _workspace(x.device, tiles * split_k * slot if split_k > 1 else 1, tiles)
    given = [t.contiguous() if t is not None else out for t in (bias, row_sums, residual)]
    _triton_kernel()[(tiles, split_k)](
        x, weight, *given, out, partial, count, n, float(eps), K=k, ROWS=rows, HAS_BIAS=bias is not None,
        NORM=row_sums is not None, GELU=activation == "gelu", RESIDUAL=residual is not None, PDL=pdl,
        BLOCK_N=block_n, BLOCK_K=block_k, CHUNKS=chunks, SPLIT_K=split_k, SLOT=slot, num_warps=warps,
        launch_pdl=pdl)
    return out


def _workspace(device: torch.device, partials: int, tiles: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A float32 buffer of at least ``partials`` values and ``tiles`` zeroed int32 counts on ``device``. A larger
    one is added when needed and the old ones kept: a captured CUDA graph's kernels hold their addresses."""
    import torch

    kept = _WORKSPACES.setdefault((device.type, device.index), [])
    if kept and kept[-1][0].numel() >= partials and kept[-1][1].numel() >= tiles:
        return kept[-1]
    size = max(partials, kept[-1][0].numel() if kept else 0)
    counts = max(tiles, kept[-1][1].numel() if kept else 0)
    kept.append((torch.empty(size, device=device, dtype=torch.float32),
                 torch.zeros(counts, device=device, dtype=torch.int32)))
    return kept[-1]


def _triton_kernel() -> Any:
    global _kernel, _epilogue
    if _kernel is not None:
        return _kernel
    import triton
    import triton.language as tl

    @triton.jit
    def epilogue(acc, s, ss, x0, rm, rn, N, eps, b_ptr, rs_ptr, r_ptr, y_ptr, K: tl.constexpr, ROWS: tl.constexpr,
                 HAS_BIAS: tl.constexpr, NORM: tl.constexpr, GELU: tl.constexpr, RESIDUAL: tl.constexpr):
        """The rows' outputs from their float32 products ``acc`` (rows × BLOCK_N) and, for the layer norm, the sums
        of d and d² over each whole row (d = x − x₀, x₀ the row's first value: small sums where the mean is large):
        gemv_fused's epilogue."""
        dtype = y_ptr.dtype.element_ty
        row_in = rm < ROWS
        col_in = rn < N
        y = acc
        if NORM:
            mean_d = s / K
            rstd = tl.rsqrt(tl.maximum(ss / K - mean_d * mean_d, 0.0) + eps)
            sums = tl.load(rs_ptr + rn, mask=col_in, other=0.0)
            y = rstd[:, None] * (y - (x0 + mean_d)[:, None] * sums[None, :])
        if HAS_BIAS:
            y += tl.load(b_ptr + rn, mask=col_in, other=0.0).to(tl.float32)[None, :]
        if GELU:
            y = y.to(dtype).to(tl.float32)
            y = 0.5 * y * (1.0 + tl.erf(y * 0.7071067811865476))
        inside = row_in[:, None] & col_in[None, :]
        if RESIDUAL:
            y = y.to(dtype).to(tl.float32) + tl.load(r_ptr + rm[:, None] * N + rn[None, :], mask=inside,
                                                     other=0.0).to(tl.float32)
        tl.store(y_ptr + rm[:, None] * N + rn[None, :], y.to(dtype), mask=inside)

    _epilogue = epilogue  # a module global: Triton resolves what a kernel calls in its module's globals

    # A part's slot in the workspace (SLOT floats, slot_size): its (16 × BLOCK_N) partial products, then its sums
    # of d and d² per row.
    @triton.jit
    def gemv_mma(x_ptr, w_ptr, b_ptr, rs_ptr, r_ptr, y_ptr, part_ptr, count_ptr, N, eps, K: tl.constexpr,
                 ROWS: tl.constexpr, HAS_BIAS: tl.constexpr, NORM: tl.constexpr, GELU: tl.constexpr,
                 RESIDUAL: tl.constexpr, PDL: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                 CHUNKS: tl.constexpr, SPLIT_K: tl.constexpr, SLOT: tl.constexpr):
        tile = tl.program_id(0)
        part = tl.program_id(1)
        rn = tile * BLOCK_N + tl.arange(0, BLOCK_N)
        rm = tl.arange(0, 16)
        row_in = rm < ROWS
        rk = part * (CHUNKS * BLOCK_K) + tl.arange(0, BLOCK_K)
        w_ptrs = w_ptr + rn[:, None] * K + rk[None, :]
        x_ptrs = x_ptr + rm[:, None] * K + rk[None, :]
        if PDL:
            tl.extra.cuda.gdc_launch_dependents()  # the next kernel may be scheduled as these programs end
        # One block before the wait. Two (a pipeline two deep) were measured on the H200 and dropped: fc2 alone 6.8
        # against 8.0 µs, but the dependent out → fc1 → fc2 chain 5.91 against 5.96, the LM head (5 blocks a
        # program) 65 against 39 µs, and the large-v3 b8 step 2.08 against 2.05 ms.
        w = tl.load(w_ptrs, mask=rn[:, None] < N, other=0.0)
        if PDL:
            tl.extra.cuda.gdc_wait()  # x (and the workspace) after the kernel before has finished
        acc = tl.zeros([16, BLOCK_N], tl.float32)
        s = tl.zeros([16], tl.float32)
        ss = tl.zeros([16], tl.float32)
        x0 = tl.zeros([16], tl.float32)
        if NORM:
            x0 = tl.load(x_ptr + rm * K, mask=row_in, other=0.0).to(tl.float32)
        for c in range(CHUNKS):  # each next weight block loaded before this one's product
            w_next = tl.load(w_ptrs + (c + 1) * BLOCK_K, mask=(rn[:, None] < N) & (c + 1 < CHUNKS), other=0.0)
            x = tl.load(x_ptrs + c * BLOCK_K, mask=row_in[:, None], other=0.0)
            if NORM:  # the norm's statistics over the x this program reads anyway: no pass of its own
                d = tl.where(row_in[:, None], x.to(tl.float32) - x0[:, None], 0.0)
                s += tl.sum(d, 1)
                ss += tl.sum(d * d, 1)
            acc = tl.dot(x, tl.trans(w), acc)  # (16 × BLOCK_N), float32
            w = w_next
        if SPLIT_K == 1:
            _epilogue(acc, s, ss, x0, rm, rn, N, eps, b_ptr, rs_ptr, r_ptr, y_ptr, K, ROWS, HAS_BIAS, NORM, GELU,
                      RESIDUAL)
        else:
            base = part_ptr + tile * (SPLIT_K * SLOT)
            tiles = base + rm[:, None] * BLOCK_N + tl.arange(0, BLOCK_N)[None, :]
            tl.store(tiles + part * SLOT, acc)
            if NORM:
                tl.store(base + part * SLOT + 16 * BLOCK_N + rm, s)
                tl.store(base + part * SLOT + 16 * BLOCK_N + 16 + rm, ss)
            tl.debug_barrier()  # every thread's store made before the count says this part is in
            arrived = tl.atomic_add(count_ptr + tile, 1, sem="acq_rel")
            if arrived == SPLIT_K - 1:  # the last part of this column tile: sum the parts in order
                total = tl.zeros([16, BLOCK_N], tl.float32)
                s = tl.zeros([16], tl.float32)
                ss = tl.zeros([16], tl.float32)
                for p in tl.static_range(SPLIT_K):
                    # .cg: from L2, where the other programs' stores are; this SM's L1 may hold a past launch's
                    total += tl.load(tiles + p * SLOT, cache_modifier=".cg")
                    if NORM:
                        s += tl.load(base + p * SLOT + 16 * BLOCK_N + rm, cache_modifier=".cg")
                        ss += tl.load(base + p * SLOT + 16 * BLOCK_N + 16 + rm, cache_modifier=".cg")
                tl.atomic_xchg(count_ptr + tile, 0)  # ready for the next launch
                _epilogue(total, s, ss, x0, rm, rn, N, eps, b_ptr, rs_ptr, r_ptr, y_ptr, K, ROWS, HAS_BIAS, NORM,
                          GELU, RESIDUAL)

    _kernel = gemv_mma
    return _kernel
