"""qeffbuild::gemv_fused against what it replaces, at whisper-large-v3's decoder shapes (float16, batch 1).

    python benchmarks/gemv_fused.py [--layers 32]

Per product kind of a decoder layer (the self-attention's q/k/v with its layer norm, the output projections with
their residual add, the cross-attention's query with its layer norm, fc1 with its layer norm and GELU, fc2 with its
residual add), three ways, each over ``--layers`` distinct weights inside one CUDA graph (as a decode step runs
them): the fused op; the unfused ops as the step ran them before (Inductor's layer-norm / GELU / add kernels are
stood in for by torch's, one kernel each); and the plain GEMV alone (the floor a fusion can reach). Also the fused
op's largest difference from the float32 definition, beside the unfused ops'.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

KINDS = {  # name: (out, in, layer norm before, activation, residual add after)
    "qkv 3840x1280 + norm": (3840, 1280, True, "none", False),
    "out-proj 1280x1280 + residual": (1280, 1280, False, "none", True),
    "cross q 1280x1280 + norm": (1280, 1280, True, "none", False),
    "fc1 5120x1280 + norm + gelu": (5120, 1280, True, "gelu", False),
    "fc2 1280x5120 + residual": (1280, 5120, False, "none", True),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--layers", type=int, default=32)
    args = ap.parse_args()
    print(f"{'product':34s} {'fused':>9s} {'unfused':>9s} {'gemv alone':>11s}   max |err| fused / unfused vs float32")
    for name, kind in KINDS.items():
        print(f"{name:34s} " + _row(*kind, args.layers))


def _row(n: int, k: int, norm: bool, activation: str, residual: bool, layers: int) -> str:
    import torch
    from gemv_variants import _graph_us

    from qeffbuild.backends import gemv

    gemv.register()
    torch.manual_seed(0)
    half = torch.float16
    x = (torch.randn(1, k, device="cuda") * 3 + 1).to(half)
    ws = [(torch.randn(n, k, device="cuda") * 0.02).to(half) for _ in range(layers)]
    b = torch.randn(n, device="cuda").to(half)
    r = torch.randn(1, n, device="cuda").to(half) if residual else None
    lw = (1 + 0.1 * torch.randn(k, device="cuda")).to(half) if norm else None
    lb = (0.1 * torch.randn(k, device="cuda")).to(half) if norm else None
    # each layer's operands as the compile step hands them to the fused op (the layer norm folded in)
    operands = [gemv.fold_norm(w, b, lw, lb) if norm else (w, None, b) for w in ws]
    ys = [torch.empty(1, n, device="cuda", dtype=half) for _ in ws]

    def unfused(x: Any, w: Any, b: Any, lw: Any, lb: Any, r: Any) -> Any:
        y = torch.addmm(b, torch.nn.functional.layer_norm(x, (k,), lw, lb, 1e-5) if norm else x, w.t())
        y = torch.nn.functional.gelu(y) if activation == "gelu" else y
        return y if r is None else y + r

    def fused(i: int) -> Any:
        weight, row_sums, shift = operands[i]
        return torch.ops.qeffbuild.gemv_fused(x, weight, shift, row_sums, 1e-5, activation, r)

    def each(fn: Any) -> Any:
        return lambda: [y.copy_(fn(i)) for i, y in enumerate(ys)]

    fused_us = _graph_us(each(fused)) / layers
    unfused_us = _graph_us(each(lambda i: unfused(x, ws[i], b, lw, lb, r))) / layers
    alone_us = _graph_us(each(lambda i: torch.ops.qeffbuild.gemv(x, ws[i], b))) / layers
    as_float = [t.float() if t is not None else None for t in (x, ws[0], b, lw, lb, r)]
    exact = unfused(*as_float)
    err_f = (fused(0).float() - exact).abs().max().item()
    err_u = (unfused(x, ws[0], b, lw, lb, r).float() - exact).abs().max().item()
    return f"{fused_us:7.2f}µs {unfused_us:7.2f}µs {alone_us:9.2f}µs   {err_f:.2e} / {err_u:.2e}"


if __name__ == "__main__":
    main()
