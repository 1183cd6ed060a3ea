"""Where an `ort` decode step's retained state lives: fresh arrays a step, or bound in place.

    qeffbuild build whisper-tiny-dims-b1 whisper-tiny-dims-b8
    python benchmarks/ort_state.py out/whisper-tiny-dims-b1/ort/decoder out/whisper-tiny-dims-b8/ort/decoder

Per decoder folder (an `ort` artifact of a speech specialization), the greedy host loop of the decoding core
runs two ways in one process, round-robin (``--blocks`` blocks of 3 samples each, in turn):
- ``run``: every step through ``OrtSession.run`` — ONNX Runtime allocates each present state and the
  state write (a ScatterND) copies the whole past into it (what every step did before the state was bound);
- ``bound in place``: the loop's state bound once as both the past inputs and the present outputs
  (``OrtSession.bind``; the ``state.json`` the compile step writes says which pairs may share a buffer): a step
  writes its one slot.
Per step = (T(steps) − T(1)) / (steps − 1), median of the samples; both ways must give the same tokens (random
encoder states, EOS never chosen). The state is small at ctx_len 48; build specializations with
``ctx_len = 448`` (a real Whisper's default) to see it at real scale.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path
from typing import Any


class _RunOnly:
    """The session seen through ``run`` alone: the loop cannot bind its state."""

    def __init__(self, session: Any) -> None:
        self.session, self.io = session, session.io

    def run(self, feeds: dict[str, Any]) -> list[Any]:
        return list(self.session.run(feeds))


def main() -> None:
    import numpy as np

    from qeffbuild.backends.ort import OrtSession
    from qeffbuild.decoding.greedy import decoder_inputs, greedy
    from qeffbuild.decoding.rules import LogitRules

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folders", nargs="+", type=Path, help="ort decoder folders (SPEC/ort/decoder)")
    ap.add_argument("--steps", type=int, default=24)
    ap.add_argument("--blocks", type=int, default=6)
    args = ap.parse_args()
    rules = LogitRules(eos=-1)  # no token is EOS: every decode runs its steps
    cases: dict[tuple[str, str], tuple[Any, dict[str, Any], list[Any], Any]] = {}
    for folder in args.folders:
        session = OrtSession(folder)
        io = session.io
        rng = np.random.default_rng(0)
        fixed = [rng.standard_normal(io["shapes"][n]).astype(np.float32) for n in decoder_inputs(io)[0]]
        prompts = np.zeros((io["shapes"]["input_ids"][0], 1), np.int64)
        label = f"{folder} (batch {prompts.shape[0]}, ctx {io['shapes'][decoder_inputs(io)[1][0]][2]})"
        if not session.in_place_state:
            print(f"{label}: no state.json pairs (built by an older qeffbuild?); only `run` is timed")
        cases[(label, "run")] = (_RunOnly(session), io, fixed, prompts)
        if session.in_place_state:
            cases[(label, "bound in place")] = (session, io, fixed, prompts)
        tokens = [greedy(s, i, f, p, rules, 16).tokens for (lab, _), (s, i, f, p) in cases.items() if lab == label]
        if any(not np.array_equal(tokens[0], t) for t in tokens):
            raise SystemExit(f"{label}: the two ways decoded different tokens")
    samples: dict[tuple[str, str], list[float]] = {k: [] for k in cases}
    for _ in range(args.blocks):
        for key, (session, io, fixed, prompts) in cases.items():
            greedy(session, io, fixed, prompts, rules, args.steps)  # opens the block, untimed
            for _ in range(3):
                t0 = time.perf_counter()
                greedy(session, io, fixed, prompts, rules, 1)
                one = time.perf_counter() - t0
                t0 = time.perf_counter()
                greedy(session, io, fixed, prompts, rules, args.steps)
                samples[key].append((time.perf_counter() - t0 - one) / (args.steps - 1))
    for (label, way), values in samples.items():
        print(f"{label} {way:15s} {statistics.median(values) * 1000:7.2f} ms a step "
              f"(samples {min(values) * 1000:.2f}–{max(values) * 1000:.2f})")


if __name__ == "__main__":
    main()
