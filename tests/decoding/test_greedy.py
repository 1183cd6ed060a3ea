"""The host greedy loop (sessions that take numpy): its torch work runs on one thread, and the thread count
is given back."""

from __future__ import annotations

from typing import Any

import numpy as np


class _CountingThreads:
    """A decoder step (vocab 5, one retained state) that records torch's thread count at every call."""

    def __init__(self) -> None:
        self.threads: list[int] = []

    def run(self, feeds: dict[str, Any]) -> list[Any]:
        import torch

        self.threads.append(torch.get_num_threads())
        logits = np.zeros((1, 1, 5), np.float32)
        logits[..., (int(feeds["position"]) + 1) % 4] = 1.0  # token = position + 1 (mod 4): never EOS (4)
        return [logits, feeds["past_key_0"] + 1]


def test_the_host_loop_runs_torch_on_one_thread_and_restores_the_count() -> None:
    """ONNX Runtime keeps its own threads spinning between calls; torch's pool waking beside them for the logits
    rules doubled a whisper-tiny step on 2 cores. The loop's answer is the same whatever the thread count."""
    import torch

    from qeffbuild.decoding.greedy import greedy
    from qeffbuild.decoding.rules import LogitRules

    io = {"inputs": {"input_ids": "int64", "position": "int64", "past_key_0": "float32"},
          "outputs": ["logits", "present_key_0"], "shapes": {"past_key_0": [1, 2]}}
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        session = _CountingThreads()
        out = greedy(session, io, [], np.array([[0, 1]]), LogitRules(eos=4), steps=3)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
    assert out.tokens.tolist() == [[2, 3, 0]]
    assert session.threads[2:] == [1, 1]  # the generating steps (the prompt's run before the loop's guard)

