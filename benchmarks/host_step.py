"""The host side of a greedy decode step on the CPU: the logits rules and the choice of each row's token.

    python benchmarks/host_step.py [--vocab 51865] [--iters 300]

Between two decoder calls the CPU loop (``decoding/greedy.py``) applies the logits rules (torch, one thread) and
picks each row's highest score. Per batch size (1, 4, 8), on random logits of Whisper's vocabulary, it times:
``torch.argmax`` (what the loop did before), the loop's numpy reduction (``greedy._argmax``: the same tokens), and
the rules' ``apply``. At batch 4 a whisper-tiny decoder step is ~8.5 ms on 2 cores: torch's argmax was 0.26 ms of
it, per token, with nothing to show for it. The two reductions are checked to agree on every row.
"""

from __future__ import annotations

import argparse
import timeit


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--vocab", type=int, default=51865)
    ap.add_argument("--iters", type=int, default=300)
    args = ap.parse_args()
    import numpy as np
    import torch

    from qeffbuild.decoding.greedy import _argmax
    from qeffbuild.decoding.rules import LogitRules

    torch.set_num_threads(1)  # as the loop runs its host work (greedy._torch_on_one_thread)
    rules = LogitRules(eos=50257, suppress=tuple(range(1, 400, 7)), begin_suppress=(220, 50257))
    print(f"{'batch':>5}  {'torch.argmax':>13}  {'numpy argmax':>13}  {'rules.apply':>12}   (ms a step, best of 5)")
    for batch in (1, 4, 8):
        logits = torch.from_numpy(np.random.default_rng(batch).standard_normal((batch, args.vocab), np.float32))
        state = rules.state(batch, args.vocab, "cpu")
        scores = state.apply(logits, first=False)
        assert np.array_equal(_argmax(scores.numpy()), scores.argmax(-1).numpy()), "the two reductions disagree"

        def best(fn: object) -> float:
            return min(timeit.repeat(fn, number=args.iters, repeat=5)) / args.iters * 1e3  # type: ignore[arg-type]

        torch_ms = best(lambda: scores.argmax(-1))
        numpy_ms = best(lambda: _argmax(scores.numpy()))
        apply_ms = best(lambda: state.apply(logits, first=False))  # noqa: B023 (called within this iteration)
        print(f"{batch:>5}  {torch_ms:>13.4f}  {numpy_ms:>13.4f}  {apply_ms:>12.4f}")


if __name__ == "__main__":
    main()
