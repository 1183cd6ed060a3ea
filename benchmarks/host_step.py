"""The host side of a greedy decode step on the CPU: the logits rules and the choice of each row's token.

    python benchmarks/host_step.py [--vocab 51865] [--iters 300]

Between two decoder calls the CPU loop (``decoding/greedy.py``) applies the logits rules (torch, one thread) and
picks each row's highest score. Per batch size (1, 4, 8), on random logits of Whisper's vocabulary, it times:
``torch.argmax`` (what the loops did before), their numpy reduction now (``rules.best_tokens``: the same
tokens), and the rules' ``apply``. At batch 4 a whisper-tiny decoder step is ~8.5 ms on 2 cores: torch's argmax
was 0.26 ms of it, per token. The two reductions are checked to agree on every row.
"""

from __future__ import annotations

import argparse
import timeit
from collections.abc import Callable
from typing import Any


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--vocab", type=int, default=51865)
    ap.add_argument("--iters", type=int, default=300)
    args = ap.parse_args()
    import torch

    from qeffbuild.decoding.rules import LogitRules

    torch.set_num_threads(1)  # as the loop runs its host work (greedy._torch_on_one_thread)
    rules = LogitRules(eos=50257, suppress=tuple(range(1, 400, 7)), begin_suppress=(220, 50257))
    print(f"{'batch':>5}  {'torch.argmax':>13}  {'numpy argmax':>13}  {'rules.apply':>12}   (ms a step, best of 5)")
    for batch in (1, 4, 8):
        torch_ms, numpy_ms, apply_ms = _times(rules, batch, args.vocab, args.iters)
        print(f"{batch:>5}  {torch_ms:>13.4f}  {numpy_ms:>13.4f}  {apply_ms:>12.4f}")


def _times(rules: Any, batch: int, vocab: int, iters: int) -> tuple[float, float, float]:
    """ms a step: torch.argmax, the loop's numpy argmax, the rules' apply (after checking the two argmaxes agree)."""
    import numpy as np
    import torch

    from qeffbuild.decoding.rules import best_tokens

    logits = torch.from_numpy(np.random.default_rng(batch).standard_normal((batch, vocab), np.float32))
    state = rules.state(batch, vocab, "cpu")
    scores = state.apply(logits, first=False)
    assert np.array_equal(best_tokens(scores).numpy(), scores.argmax(-1).numpy()), "the two reductions disagree"

    def best(fn: Callable[[], object]) -> float:
        return min(timeit.repeat(fn, number=iters, repeat=5)) / iters * 1e3

    return (best(lambda: scores.argmax(-1)), best(lambda: best_tokens(scores).numpy()),
            best(lambda: state.apply(logits, first=False)))

if __name__ == "__main__":
    main()
