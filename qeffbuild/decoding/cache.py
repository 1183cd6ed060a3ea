"""Retained state through transformers' Cache API (worker side): the cache is graph inputs and outputs.

A decoder step graph takes each layer's past keys/values (a fixed ``ctx_len``) as inputs and returns them
updated; nothing lives in module buffers, so an export cannot bake a cache into its constants. The model's
own attention code runs unchanged over a ``Cache`` whose layers are:

- :class:`RetainedLayer`: self-attention keys/values of ``ctx_len`` slots. One token is written at
  ``position`` (a select, as QEfficient's CtxScatter); a prefill of ``S`` tokens writes slots ``0..S-1``.
  The layer sizes the model's causal mask (``ctx_len`` slots, the query at ``position``), so slots not yet
  written — or padding written beyond a prompt — are never attended.
- :class:`FixedLayer`: keys/values computed once and only read (an encoder-decoder's cross-attention).

The layout is contiguous (slot = position); a paged layout would replace how ``update`` writes and how the
mask is sized, and nothing else.
"""

from __future__ import annotations

from typing import Any, cast

import torch
from transformers.cache_utils import CacheLayerMixin


class RetainedLayer(CacheLayerMixin):
    """Self-attention keys/values of a fixed length, written functionally at ``position`` (a prefill: from 0)."""

    is_compileable = True  # the mask is always materialized (it must hide the slots not written yet)
    is_sliding = False

    def __init__(self, keys: torch.Tensor, values: torch.Tensor, position: torch.Tensor) -> None:
        super().__init__()
        self.keys, self.values, self.position = keys, values, position
        self.ctx_len = keys.shape[-2]
        self.is_initialized = True

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        return None

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any,
               **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        slots = torch.arange(self.ctx_len, device=key_states.device)
        keys, values = cast(torch.Tensor, self.keys), cast(torch.Tensor, self.values)
        new = key_states.shape[-2]
        if not isinstance(new, int):  # one graph for every length (a QPC's prefill and decode): a symbolic
            # count of tokens written from ``position`` on, each slot taking the token that lands in it
            offset = slots - self.position
            write = ((offset >= 0) & (offset < new)).view(1, 1, -1, 1)
            pick = offset.clamp(0, new - 1)
            self.keys = torch.where(write, key_states.to(keys.dtype).index_select(-2, pick), keys)
            self.values = torch.where(write, value_states.to(values.dtype).index_select(-2, pick), values)
        elif new == 1:  # a decode step: this step's slot; the rest keep the past
            write = (slots == self.position).view(1, 1, -1, 1)
            self.keys = torch.where(write, key_states.to(keys.dtype), keys)
            self.values = torch.where(write, value_states.to(values.dtype), values)
        else:  # a prefill of `new` tokens from slot 0 (shapes are fixed: the prefill length is the graph's)
            write = (slots < new).view(1, 1, -1, 1)
            pad = (0, 0, 0, self.ctx_len - new)
            self.keys = torch.where(write, torch.nn.functional.pad(key_states.to(keys.dtype), pad), keys)
            self.values = torch.where(write, torch.nn.functional.pad(value_states.to(values.dtype), pad), values)
        return self.keys, self.values

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        return self.ctx_len, 0

    def get_seq_length(self) -> Any:
        return self.position

    def get_max_length(self) -> int:
        return self.ctx_len


class FixedLayer(CacheLayerMixin):
    """Cross-attention keys/values computed once, by the encoder side."""

    is_compileable = True
    is_sliding = False

    def __init__(self, keys: torch.Tensor, values: torch.Tensor) -> None:
        super().__init__()
        self.keys, self.values = keys, values
        self.is_initialized = True

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        return None

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any,
               **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        raise RuntimeError("cross-attention keys/values are inputs of the decoder step; this model recomputed them, "
                           "so qeffbuild's retained-state rewrite does not support it")

    @property
    def length(self) -> int:
        return int(cast(torch.Tensor, self.keys).shape[-2])

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        return self.length, 0

    def get_seq_length(self) -> int:
        return self.length

    def get_max_length(self) -> int:
        return self.length
