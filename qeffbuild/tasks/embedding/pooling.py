"""Pooling heads for embedding models (QEfficient's POOLING_MAP) and the pooled wrapper."""

from __future__ import annotations

from typing import Any


def pool(name: str, hidden: Any, mask: Any) -> Any:
    """Pool ``hidden`` [batch, seq, dim] with ``mask`` [batch, seq] into [batch, dim]."""
    import torch

    if name == "none":
        return hidden
    m = mask.unsqueeze(-1).to(hidden.dtype)
    if name == "mean":  # sentence-transformers' mean pooling
        return (hidden * m).sum(1) / torch.clamp(m.sum(1), min=1e-9)
    if name == "avg":  # E5-style average pooling: no clamp
        return hidden.masked_fill(m == 0, 0.0).sum(1) / m.sum(1)
    if name == "cls":
        return hidden[:, 0]
    if name == "max":
        return hidden.masked_fill(m == 0, torch.finfo(hidden.dtype).min).max(1).values
    if name == "last":  # the last non-pad token (right padding): decoder-only embedding models
        last = (mask.sum(1) - 1).clamp(min=0)
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
    raise ValueError(f"unknown pooling {name!r}")


def make_pooled(model: Any, pooling: str, normalize: bool) -> Any:
    """Wrap a Hugging Face encoder: (input_ids, attention_mask) -> pooled embeddings."""
    import torch

    class Pooled(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids: Any, attention_mask: Any) -> Any:
            hidden = self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            out = pool(pooling, hidden, attention_mask)
            if normalize:
                out = torch.nn.functional.normalize(out, p=2, dim=-1)
            return out

    return Pooled().eval()
