"""The KV-cache retained-state rewrite of Whisper: an encoder graph and a decoder-step graph.

The decoder step takes the past self-attention keys/values as explicit inputs of a fixed
``ctx_len`` and returns them updated: the new key/value is written at ``position_ids`` by a
select (QEfficient's CtxScatter), and attention is masked to positions ≤ ``position_ids``.
Nothing lives in module buffers, so an exported graph cannot bake a cache into constants.
Cross-attention keys/values are recomputed from the encoder output each step (simple and
exact; precomputing them once is a known optimization left for later).
"""

from __future__ import annotations

from typing import Any


def cache_names(n_layers: int) -> list[str]:
    return [f"past_{kv}_{i}" for i in range(n_layers) for kv in ("key", "value")]


def present_names(n_layers: int) -> list[str]:
    return [f"present_{kv}_{i}" for i in range(n_layers) for kv in ("key", "value")]


def build_graphs(model: Any, ctx_len: int) -> tuple[Any, Any]:
    """(encoder, decoder_step) modules sharing ``model``'s weights."""
    import torch

    class Encoder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.encoder = model.model.encoder

        def forward(self, input_features: Any) -> Any:
            return self.encoder(input_features=input_features).last_hidden_state

    class DecoderStep(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.decoder = model.model.decoder
            self.proj_out = model.proj_out
            cfg = model.config
            self.heads = cfg.decoder_attention_heads
            self.head_dim = cfg.d_model // self.heads
            self.embed_scale = cfg.d_model**0.5 if cfg.scale_embedding else 1.0
            self.ctx_len = ctx_len

        def _split(self, x: Any) -> Any:  # [B, T, D] -> [B, H, T, hd]
            b, t, _ = x.shape
            return x.view(b, t, self.heads, self.head_dim).transpose(1, 2)

        def _attend(self, q: Any, k: Any, v: Any, mask: Any | None) -> Any:
            scores = torch.matmul(q, k.transpose(-1, -2))
            if mask is not None:
                scores = scores + mask
            probs = torch.softmax(scores.float(), dim=-1).to(v.dtype)
            out = torch.matmul(probs, v).transpose(1, 2)
            return out.reshape(out.shape[0], out.shape[1], -1)

        def forward(self, input_ids: Any, position_ids: Any, encoder_hidden_states: Any, *past: Any) -> Any:
            dec = self.decoder
            h = dec.embed_tokens(input_ids) * self.embed_scale + dec.embed_positions.weight[position_ids]
            slots = torch.arange(self.ctx_len, device=input_ids.device)[None, :]  # [1, C]
            write = (slots == position_ids)[:, None, :, None]  # [B, 1, C, 1]: where this step's k/v go
            visible = slots <= position_ids  # [B, C]
            mask = torch.where(visible, 0.0, torch.finfo(h.dtype).min).to(h.dtype)[:, None, None, :]
            present = []
            for i, layer in enumerate(dec.layers):
                sa = layer.self_attn
                x = layer.self_attn_layer_norm(h)
                q = self._split(sa.q_proj(x) * sa.scaling)
                k = torch.where(write, self._split(sa.k_proj(x)), past[2 * i])
                v = torch.where(write, self._split(sa.v_proj(x)), past[2 * i + 1])
                h = h + sa.out_proj(self._attend(q, k, v, mask))
                ca = layer.encoder_attn
                x = layer.encoder_attn_layer_norm(h)
                q = self._split(ca.q_proj(x) * ca.scaling)
                ck = self._split(ca.k_proj(encoder_hidden_states))
                cv = self._split(ca.v_proj(encoder_hidden_states))
                h = h + ca.out_proj(self._attend(q, ck, cv, None))
                x = layer.final_layer_norm(h)
                h = h + layer.fc2(layer.activation_fn(layer.fc1(x)))
                present += [k, v]
            logits = self.proj_out(dec.layer_norm(h))
            return (logits, *present)

    return Encoder().eval(), DecoderStep().eval()


def cache_shape(config: Any, batch: int, ctx_len: int) -> list[int]:
    heads = config["decoder_attention_heads"]
    return [batch, heads, ctx_len, config["d_model"] // heads]
