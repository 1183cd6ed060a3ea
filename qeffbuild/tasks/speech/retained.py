"""The retained-state rewrite (worker side): the model's own encoder and decoder over an explicit cache.

Nothing of a decoder layer is copied. The decoder step runs the model's own forward with a
transformers ``EncoderDecoderCache`` built from the graph's inputs:

- self-attention: one :class:`RetainedLayer` per layer holding past keys/values of a fixed
  ``ctx_len``; the step writes its new key/value functionally at ``position`` (a select, as
  QEfficient's CtxScatter) and the updated tensors are the graph's outputs. The model's own mask
  code sizes the causal mask from the layer (``ctx_len`` slots, the query at ``position``), so
  slots not yet written are never attended.
- cross-attention: one :class:`FixedLayer` per layer holding the keys/values the encoder side
  computed once; the cache marks them ready, so the model's cross-attention reads them instead
  of projecting the encoder output at every step.

The two cache layers are the decoding core's (``qeffbuild.decoding.cache``), shared with every family
that decodes. The encoder side runs the model's encoder and then one decoder call on a throwaway cache: the
model's cross-attention projects the encoder output and stores it in that cache, which is what
the graph returns. Nothing lives in module buffers, so an exported graph cannot bake a cache into
its constants.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
from transformers.cache_utils import Cache, DynamicCache, EncoderDecoderCache

from ...decoding.cache import FixedLayer, RetainedLayer
from .families import named


class Adapter:
    """How to run one architecture's own encoder and decoder (no layer code: calls into the model, through the
    architecture's entry in :mod:`.families`)."""

    def __init__(self, model: Any, arch: str) -> None:
        self.model, self.arch = model, named(arch)
        cfg = model.config
        self.start = int(getattr(cfg, "decoder_start_token_id", None) or 0)

    def encoder_inputs(self) -> list[str]:
        return list(self.arch.encoder_inputs)

    def has_mask(self) -> bool:
        return self.arch.has_mask

    def encode(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(encoder hidden states as the decoder sees them, their attention mask or None)."""
        hidden, mask = self.arch.encode(self.model, *inputs)
        return hidden, mask

    def decoder(self) -> Any:
        return self.arch.decoder(self.model)

    def logits(self, ids: torch.Tensor, cache: EncoderDecoderCache, position: torch.Tensor | None,
               hidden: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """The model's own decoder (and LM head) for ``ids`` at ``position`` over ``cache``."""
        decoder = self.decoder()
        kwargs: dict[str, Any] = {"input_ids": ids, "encoder_hidden_states": hidden, "past_key_values": cache,
                                  "use_cache": True}
        if mask is not None:
            kwargs["encoder_attention_mask"] = mask
        if position is not None and "position_ids" in inspect.signature(decoder.forward).parameters:
            kwargs["position_ids"] = (position + torch.zeros_like(ids)).to(torch.long)
        logits: torch.Tensor = self.arch.logits(self.model, decoder(**kwargs))
        return logits


def cross_cache(adapter: Adapter, hidden: torch.Tensor, mask: torch.Tensor | None) -> tuple[Cache, Cache]:
    """Run one decoder call on a throwaway cache: the model stores each layer's cross keys/values in it."""
    cache = EncoderDecoderCache(DynamicCache(), DynamicCache())
    ids = torch.full((hidden.shape[0], 1), adapter.start, dtype=torch.long, device=hidden.device)
    adapter.logits(ids, cache, None, hidden, mask)
    return cache.self_attention_cache, cache.cross_attention_cache


class EncoderSide(torch.nn.Module):
    """Audio → each decoder layer's cross-attention keys/values (padded to ``encoder_len``) [+ their mask]."""

    def __init__(self, adapter: Adapter, encoder_len: int) -> None:
        super().__init__()
        self.adapter = adapter
        self.model = adapter.model
        self.encoder_len = encoder_len

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        hidden, mask = self.adapter.encode(*inputs)
        _, cross = cross_cache(self.adapter, hidden, mask)
        pad = self.encoder_len - hidden.shape[1]
        out: list[torch.Tensor] = []
        layers: list[Any] = list(cross.layers)
        for layer in layers:
            out += [torch.nn.functional.pad(layer.keys, (0, 0, 0, pad)),
                    torch.nn.functional.pad(layer.values, (0, 0, 0, pad))]
        if mask is not None:  # padded positions are masked out: a shorter bucket fits the decoder's length
            out.append(torch.nn.functional.pad(mask.to(torch.long), (0, pad)))
        return tuple(out)


class DecoderStep(torch.nn.Module):
    """(token, position, past keys/values, cross keys/values [, encoder mask]) → (logits, updated past)."""

    def __init__(self, adapter: Adapter, n_layers: int, hidden_size: int) -> None:
        super().__init__()
        self.adapter = adapter
        self.model = adapter.model
        self.n_layers = n_layers
        self.hidden_size = hidden_size

    def forward(self, input_ids: torch.Tensor, position: torch.Tensor, *state: torch.Tensor) -> tuple[Any, ...]:
        n = self.n_layers
        past, cross = state[: 2 * n], state[2 * n: 4 * n]
        mask = state[4 * n] if len(state) > 4 * n else None
        self_cache = Cache(layers=[RetainedLayer(past[2 * i], past[2 * i + 1], position) for i in range(n)])
        cross_layers = Cache(layers=[FixedLayer(cross[2 * i], cross[2 * i + 1]) for i in range(n)])
        cache = EncoderDecoderCache(self_cache, cross_layers)
        # Only the shape of the encoder states is read (by the masks): their keys/values are in the cache.
        dummy = torch.zeros(input_ids.shape[0], cross[0].shape[-2], self.hidden_size, dtype=cross[0].dtype,
                            device=input_ids.device)
        logits = self.adapter.logits(input_ids, cache, position, dummy, mask)
        present: list[torch.Tensor] = []
        layers: list[Any] = list(self_cache.layers)
        for layer in layers:
            present += [layer.keys, layer.values]
        return (logits, *present)


def probe(adapter: Adapter, encoder_inputs: list[torch.Tensor]) -> dict[str, Any]:
    """Shapes the graphs need, learnt by running the model once: layers, heads and head sizes."""
    with torch.no_grad():
        hidden, mask = adapter.encode(*encoder_inputs)
        self_cache, cross = cross_cache(adapter, hidden, mask)
    first: Any = self_cache.layers[0]
    cross0: Any = cross.layers[0]
    k = first.keys
    return {"n_layers": len(self_cache.layers), "heads": int(k.shape[1]), "head_dim": int(k.shape[-1]),
            "cross_heads": int(cross0.keys.shape[1]), "cross_head_dim": int(cross0.keys.shape[-1]),
            "hidden_size": int(hidden.shape[-1])}


def past_names(n_layers: int) -> list[str]:
    return [f"past_{kv}_{i}" for i in range(n_layers) for kv in ("key", "value")]


def present_names(n_layers: int) -> list[str]:
    return [f"present_{kv}_{i}" for i in range(n_layers) for kv in ("key", "value")]


def cross_names(n_layers: int) -> list[str]:
    return [f"cross_{kv}_{i}" for i in range(n_layers) for kv in ("key", "value")]
