"""The cross-attention over the encoder's output instead of per-layer keys and values, on a GPU.

    python benchmarks/encoder_output_attention.py [--layers 32] [--batch 8]

A Whisper decoder layer's cross-attention keys and values are projections of one tensor, the encoder's output E
(1,500 × 1,280 a row at whisper-large-v3's size): K = E·W_kᵀ, V = E·W_vᵀ + b_v. So, per head h, exactly in real
arithmetic,

    scores_h = q_h·K_hᵀ = (q_h·W_k,h)·Eᵀ        out_h = p_h·V_h = (p_h·E)·W_v,hᵀ + b_v,h   (Σ p_h = 1)

A step then reads E (3.8 MB a row, the same for all 32 layers) in place of each layer's K and V (7.7 MB a row a
layer: 61 MB a layer at batch 8, half of a batch-8 step's bytes), and W_k, W_v (3.3 MB each a layer) — at the
cost of 20× the arithmetic, which the tensor cores have to spare. On the CPU this form lost (twelfth session,
``cross_attention_forms.py``): there the products are compute-bound.

Measured in the layer model of ``l2_prefetch.py`` (per layer six chained products of large-v3's sizes and the
cross-attention, ``--layers`` layers in one CUDA graph), µs a layer:

- shipped: ``qeffbuild::decode_attention`` over the layer's K and V (loaded before the PDL wait);
- E form: the fold (q·W_k per head), scores (a batched product with E), softmax, p·E, the unfold (·W_vᵀ), as
  cuBLAS products and torch ops; with E shared by the layers (as in the model) and one E a layer (no reuse in L2).

Then each form's largest difference from the float32 attention, on the same half-precision E and weights.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from l2_prefetch import DIM, FRAMES, HEADS, WIDTH, layer_args, layer_model


def e_form(q: Any, e: Any, wk_h: Any, wv_ht: Any, bv: Any, scale: float) -> Any:
    """q [b, H·D] → the attention's output [b, H·D], over E [b, F, W]; wk_h [H, D, W], wv_ht [H, W, D]."""
    import torch

    b = q.shape[0]
    qk = torch.bmm(q.view(b, HEADS, DIM).transpose(0, 1), wk_h)  # [H, b, W]
    scores = torch.bmm(qk.transpose(0, 1), e.transpose(1, 2))  # [b, H, F]
    p = torch.softmax(scores.float() * scale, dim=-1).to(q.dtype)
    pe = torch.bmm(p, e)  # [b, H, W]
    out = torch.bmm(pe.transpose(0, 1), wv_ht)  # [H, b, D]
    return (out.transpose(0, 1).reshape(b, HEADS * DIM) + bv)


def main() -> None:
    import torch
    from gemv_variants import _graph_us

    from qeffbuild.backends import attention

    args = layer_args(__doc__)
    b, n = args.batch, args.layers
    layers, x0 = layer_model(n, b)
    scale = DIM ** -0.5
    torch.manual_seed(1)
    e_shared = torch.randn(b, FRAMES, WIDTH, device="cuda").half()
    e_each = [torch.randn(b, FRAMES, WIDTH, device="cuda").half() for _ in range(n)]
    wk = [(torch.randn(WIDTH, WIDTH, device="cuda") / WIDTH ** 0.5).half() for _ in range(n)]
    wv = [(torch.randn(WIDTH, WIDTH, device="cuda") / WIDTH ** 0.5).half() for _ in range(n)]
    bv = [(torch.randn(WIDTH, device="cuda") * 0.1).half() for _ in range(n)]
    wk_h = [w.view(HEADS, DIM, WIDTH).contiguous() for w in wk]
    wv_ht = [w.view(HEADS, DIM, WIDTH).transpose(1, 2).contiguous() for w in wv]

    def kv(e: Any, i: int) -> tuple[Any, Any]:  # what the encoder hands the shipped form: [b, H, F, D]
        k = (e @ wk[i].t()).view(b, FRAMES, HEADS, DIM).transpose(1, 2).contiguous()
        v = (e @ wv[i].t() + bv[i]).view(b, FRAMES, HEADS, DIM).transpose(1, 2).contiguous()
        return k, v

    states = [kv(e_shared, i) for i in range(n)]

    def step(form: str, attention_only: bool = False) -> Any:
        def run() -> Any:
            x = x0
            for i, (ws, _, _) in enumerate(layers):
                for w in ws:
                    if w is None:
                        if form == "shipped":
                            k, v = states[i]
                            a = attention._launch(x.view(b, HEADS, 1, DIM), k, v, None, scale, kv_ready=True)
                            x = a.view(b, WIDTH)
                        else:
                            e = e_shared if form == "shared" else e_each[i]
                            x = e_form(x, e, wk_h[i], wv_ht[i], bv[i], scale)
                    elif not attention_only:
                        x = torch.ops.qeffbuild.gemv(x, w, None)
            return x
        return run

    print(f"batch {b}, {n} layers; K and V {2 * b * FRAMES * WIDTH * 2 / 1e6:.0f} MB a layer, "
          f"E {b * FRAMES * WIDTH * 2 / 1e6:.0f} MB; µs a layer")
    for label, form in (("shipped (K, V a layer)", "shipped"), ("E form, E shared by the layers", "shared"),
                        ("E form, one E a layer", "each")):
        whole = _graph_us(step(form)) / n
        alone = _graph_us(step(form, attention_only=True)) / n
        print(f"  {label:34s} layer {whole:8.2f}   attention alone {alone:8.2f}")

    # numerics: one layer, one query per row, against float32 arithmetic on the same half-precision values
    q = torch.randn(b, WIDTH, device="cuda").half()
    e = e_shared
    k32 = (e.float() @ wk[0].float().t()).view(b, FRAMES, HEADS, DIM).transpose(1, 2)
    v32 = (e.float() @ wv[0].float().t() + bv[0].float()).view(b, FRAMES, HEADS, DIM).transpose(1, 2)
    exact = torch.nn.functional.scaled_dot_product_attention(q.float().view(b, HEADS, 1, DIM), k32, v32,
                                                             scale=scale).reshape(b, WIDTH)
    k, v = states[0]
    shipped = attention._launch(q.view(b, HEADS, 1, DIM), k, v, None, scale).reshape(b, WIDTH).float()
    ours = e_form(q, e, wk_h[0], wv_ht[0], bv[0], scale).float()
    print(f"  max |err| against float32: shipped {(shipped - exact).abs().max().item():.2e}, "
          f"E form {(ours - exact).abs().max().item():.2e}  (output range {exact.abs().max().item():.2f})")


if __name__ == "__main__":
    main()
