"""The roofline columns: a decode step's bytes from its graph's io.json and the model's distinct weights."""

from __future__ import annotations

import pytest

from qeffbuild.decoding.roofline import roofline, state_bytes, weight_bytes


def test_state_bytes_count_every_cache_and_cross_state_at_its_dtype() -> None:
    io = {"inputs": {"input_ids": "int64", "position": "int64", "past_key_0": "float16", "past_value_0": "float16",
                     "cross_key_0": "float16", "cross_value_0": "float16"},
          "shapes": {"input_ids": [8, 1], "position": [], "past_key_0": [8, 20, 448, 64],
                     "past_value_0": [8, 20, 448, 64], "cross_key_0": [8, 20, 1500, 64],
                     "cross_value_0": [8, 20, 1500, 64]}}
    assert state_bytes(io) == 2 * 2 * 8 * 20 * 64 * (448 + 1500)
    # a step attends over the slots up to its position: the cross states stay whole
    assert state_bytes(io, slots=68) == 2 * 2 * 8 * 20 * 64 * (68 + 1500)
    assert state_bytes(io, slots=10_000) == state_bytes(io)


def test_a_tied_lm_head_counts_once() -> None:
    import torch

    emb = torch.nn.Embedding(100, 16)
    head = torch.nn.Linear(16, 100, bias=False)
    head.weight = emb.weight
    assert weight_bytes(emb, head) == 100 * 16 * 4
    assert weight_bytes(emb, torch.nn.Linear(16, 100, bias=False), None) == 2 * 100 * 16 * 4


def test_whisper_large_v3_dims_at_batch_1_move_what_the_issue_estimates() -> None:
    """Issue #21 estimates 1.85 GB a token for whisper-large-v3 dims fp16 at batch 1; counted from the graph, the
    weights are 1.81 GB, the self-attention cache (448 slots) 0.07 GB and the cross-attention states 0.25 GB."""
    import torch
    import transformers

    cfg = transformers.WhisperConfig(d_model=1280, decoder_layers=32, decoder_attention_heads=20,
                                     decoder_ffn_dim=5120, encoder_layers=1, encoder_attention_heads=20,
                                     vocab_size=51866, num_mel_bins=128)
    with torch.device("meta"):
        model = transformers.WhisperForConditionalGeneration(cfg).to(torch.float16)
    weights = sum(p.numel() * 2 for p in model.get_decoder().parameters())  # meta tensors share no storage
    io = {"inputs": {f"{k}_{i}": "float16" for i in range(32) for k in ("past_key", "past_value", "cross_key",
                                                                        "cross_value")},
          "shapes": {**{f"{k}_{i}": [1, 20, 448, 64] for i in range(32) for k in ("past_key", "past_value")},
                     **{f"{k}_{i}": [1, 20, 1500, 64] for i in range(32) for k in ("cross_key", "cross_value")}}}
    step = weights + state_bytes(io)
    assert 1.80e9 < weights < 1.82e9 and 2.1e9 < step < 2.2e9
    cols = roofline(step, 1.3e-3, 4e12)
    assert cols["roofline_frac"] == pytest.approx(step / 1.3e-3 / 4e12)
    assert 0.5 < cols["roofline_bound_ms"] < 0.55 and cols["step_mb"] == pytest.approx(step / 1e6)
