"""One matmul for the query, key and value projections of a self-attention (worker side).

At batch 1 a decoder step is a chain of small matrix-vector products, each too small to reach the
memory bandwidth (on an H200 a 1280×1280 GEMV takes 5.1 µs: 16 % of it). Self-attention projects the
same hidden states three times; one GEMV over the three weights stacked does the same work in one kernel.

The model's own attention code still runs unchanged: its ``q_proj``, ``k_proj`` and ``v_proj`` become
:class:`FusedSlice` views of one :class:`FusedProjection`, which computes ``x @ [Wq; Wk; Wv]ᵀ`` once for a
given input tensor and hands each caller its columns. A call on a different input (a cross-attention's
keys/values project the encoder's states, not the query's) computes its own product, so a grouping can
never change results, only how many kernels compute them. Each output element is the same dot product as
before; the exported graph has one ``linear`` and three slices where it had three ``linear`` calls.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable
from typing import Any

import torch

PROJECTIONS = ("q_proj", "k_proj", "v_proj")


class FusedProjection(torch.nn.Module):
    """The stacked weights (and biases: zeros where a projection has none) of several linear layers."""

    def __init__(self, linears: list[torch.nn.Linear]) -> None:
        super().__init__()
        first = linears[0].weight
        self.weight = torch.nn.Parameter(torch.cat([lin.weight.detach() for lin in linears]), requires_grad=False)
        biases = [lin.bias.detach() if lin.bias is not None else
                  torch.zeros(lin.out_features, dtype=first.dtype, device=first.device) for lin in linears]
        self.bias = torch.nn.Parameter(torch.cat(biases), requires_grad=False)
        self._last: tuple[Any, torch.Tensor] | None = None  # (weakref to the input, the product)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._last is not None and self._last[0]() is x:
            return self._last[1]
        y = torch.nn.functional.linear(x, self.weight, self.bias)
        self._last = (weakref.ref(x), y)
        return y


class FusedSlice(torch.nn.Module):
    """One projection's columns of a :class:`FusedProjection` (held outside the module tree: its owner holds it)."""

    def __init__(self, fused: FusedProjection, start: int, end: int) -> None:
        super().__init__()
        self._fused = [fused]  # a list: not a submodule, so its weights are counted once, under the attention
        self.start, self.end = start, end
        self.out_features = end - start
        self.in_features = fused.weight.shape[1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._fused[0](x)[..., self.start:self.end]


def fuse_projections(root: torch.nn.Module, attention_names: Iterable[str]) -> int:
    """Fuse q/k/v of every submodule of ``root`` whose last name is one of ``attention_names`` and which has the
    three projections as ``nn.Linear`` of one input width. Returns how many were fused."""
    names = set(attention_names)
    fused = 0
    for path, module in list(root.named_modules()):
        if path.rsplit(".", 1)[-1] not in names:
            continue
        linears = [getattr(module, p, None) for p in PROJECTIONS]
        if not all(isinstance(lin, torch.nn.Linear) for lin in linears):
            continue
        found: list[torch.nn.Linear] = [lin for lin in linears if isinstance(lin, torch.nn.Linear)]
        if len({lin.in_features for lin in found}) != 1:
            continue
        group = FusedProjection(found)
        module.fused_qkv = group
        start = 0
        for name, lin in zip(PROJECTIONS, found, strict=True):
            setattr(module, name, FusedSlice(group, start, start + lin.out_features))
            start += lin.out_features
        fused += 1
    return fused
