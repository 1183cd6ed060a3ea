"""The reference's self-check against ``model.generate``: where they first differ, and by how much."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from qeffbuild.tasks.speech.driver import DecodeConfig, reference_decode
from qeffbuild.tasks.speech.validate import first_difference, logit_gap

EOS = 2


@pytest.mark.parametrize(("ref", "gen", "expected"), [
    ([5, 6, 7, EOS, 9], [5, 6, 7], None),  # generate stops at the reference's EOS
    ([5, 6, 7, 8], [5, 6, 7, 8], None),  # neither reaches EOS within the steps
    ([5, 6, 7, 8], [5, 9, 7, 8], 1),
    ([5, 6, 7, 8], [5, 6], 2),  # generate ended early: its EOS is the difference
    ([5, EOS, 7, 8], [5, 6, 7], 1),  # generate went past the reference's EOS
])
def test_the_first_difference_counts_eos_as_a_token(ref: list[int], gen: list[int], expected: int | None) -> None:
    assert first_difference(ref, gen, EOS, steps=4) == expected


@pytest.fixture(scope="module")
def tiny_whisper() -> Any:
    import torch
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    torch.manual_seed(0)
    cfg = WhisperConfig(vocab_size=96, num_mel_bins=8, d_model=16, encoder_layers=1, decoder_layers=1,
                        encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32,
                        max_source_positions=8, max_target_positions=32, decoder_start_token_id=1,
                        eos_token_id=EOS, pad_token_id=EOS)
    return WhisperForConditionalGeneration(cfg).eval()


def test_the_logit_gap_is_the_references_own_margin(tiny_whisper: Any) -> None:
    dc = DecodeConfig("whisper", [1], EOS)
    feeds = {"input_features": np.random.default_rng(0).standard_normal((1, 8, 16)).astype(np.float32)}
    ref = [int(t) for t in reference_decode(tiny_whisper, "whisper", feeds, dc, steps=4)[0]]
    other = (ref[3] + 1) % 96
    gap = logit_gap(tiny_whisper, dc, feeds, ref[:3], ref[3], other)
    assert gap > 0  # the reference chose its token: by argmax it is at least as likely as any other
    assert logit_gap(tiny_whisper, dc, feeds, ref[:3], other, ref[3]) == pytest.approx(-gap)
    assert logit_gap(tiny_whisper, dc, feeds, ref[:3], ref[3], ref[3]) == 0.0
