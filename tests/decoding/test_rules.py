"""The decoding core's logits rules give exactly what Hugging Face's processors give, step after step."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from qeffbuild.decoding.rules import LogitRules, Timestamps

VOCAB, EOS, NOTS = 120, 50, 60  # text < 50 (EOS), specials 50..60, timestamps 61.. (as Whisper lays them out)


def _hf(rules: LogitRules, begin_index: int) -> list[object]:
    from transformers import GenerationConfig
    from transformers.generation.logits_process import (
        SuppressTokensAtBeginLogitsProcessor,
        SuppressTokensLogitsProcessor,
        WhisperTimeStampLogitsProcessor,
    )

    procs: list[object] = []
    if rules.begin_suppress:
        procs.append(SuppressTokensAtBeginLogitsProcessor(list(rules.begin_suppress), begin_index))
    if rules.suppress:
        procs.append(SuppressTokensLogitsProcessor(list(rules.suppress)))
    if rules.timestamps is not None:
        gc = GenerationConfig(no_timestamps_token_id=rules.timestamps.no_timestamps, eos_token_id=rules.eos,
                              max_initial_timestamp_index=rules.timestamps.max_initial_index)
        procs.append(WhisperTimeStampLogitsProcessor(gc, begin_index=begin_index))
    return procs


@pytest.mark.parametrize("initial", [None, 5])
@pytest.mark.parametrize("seed", range(6))
def test_rules_equal_hf_processors_over_a_whole_decode(seed: int, initial: int | None) -> None:
    """Random logits biased towards timestamps (so pairs, repeats and monotonicity all get exercised), 4 rows,
    40 steps, a 3-token prompt: each step's processed scores and greedy choice equal HF's."""
    g = torch.Generator().manual_seed(seed)
    rules = LogitRules(EOS, suppress=(3, 7, 200), begin_suppress=(9, EOS),
                       timestamps=Timestamps(NOTS + 1, NOTS, initial))
    state = rules.state(4, VOCAB, "cpu")
    hf = _hf(rules, begin_index=3)
    ids = torch.tensor([[1, 2, 4]] * 4)
    for i in range(40):
        logits = torch.randn(4, VOCAB, generator=g) * 3
        logits[:, NOTS + 1:] += torch.randn(4, 1, generator=g) * 2  # timestamps likelier in some rows, some steps
        want = logits.clone()
        for p in hf:
            want = p(ids, want)  # type: ignore[operator]
        got = state.apply(logits, first=i == 0)
        assert torch.equal(torch.isinf(got), torch.isinf(want)), f"step {i}"
        assert torch.equal(got.argmax(-1), want.argmax(-1)), f"step {i}"
        chosen = want.argmax(-1)
        state.advance(chosen, i)
        ids = torch.cat([ids, chosen[:, None]], dim=1)
    assert (ids[:, 3:] > NOTS).any()  # timestamps were chosen: the rules were exercised


def test_without_timestamps_only_suppression_applies() -> None:
    rules = LogitRules(EOS, suppress=(3,), begin_suppress=(9,))
    state = rules.state(2, VOCAB, "cpu")
    logits = torch.zeros(2, VOCAB)
    first, later = state.apply(logits, first=True), state.apply(logits, first=False)
    assert torch.isinf(first[:, [3, 9]]).all() and torch.isinf(later[:, 3]).all() and not torch.isinf(later[:, 9]).any()


def test_best_tokens_on_the_cpu_are_the_tokens_torch_argmax_picks() -> None:
    """The first of tied highest scores, a suppressed (-inf) row's first token, a NaN where torch puts it: the
    numpy reduction the CPU loops use is torch.argmax's answer, row for row."""
    from qeffbuild.decoding.rules import best_tokens

    inf, nan = float("-inf"), float("nan")
    scores = torch.tensor([[0.5, 2.0, 2.0, 1.0], [inf, inf, inf, inf], [1.0, nan, 3.0, nan], [-1.0, -3.0, -2.0, -1.0]])
    rows = np.random.default_rng(0).standard_normal((4, 51865)).astype(np.float32)
    for case in (scores, torch.from_numpy(rows)):
        chosen = best_tokens(case).numpy()
        assert chosen.dtype == np.int64 and chosen.tolist() == case.argmax(-1).tolist()
