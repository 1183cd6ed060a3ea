"""Where a decoder step's encoder-side inputs lie in memory, and what it costs: a CPU `ort` speech artifact.

    qeffbuild build whisper-tiny-dims-b4
    python benchmarks/decoder_inputs.py out/whisper-tiny-dims-b4 [--blocks 8]

The encoder's outputs (the cross-attention keys and values, 74 MB at whisper-tiny's batch 4) are the decoder's
fixed inputs for every step. They are decoded from, round-robin in one process (``--blocks`` blocks of 3
samples each, per step = (T(24) − T(1)) / 23, the greedy loop bound in place):
- as ``OrtSession.run`` returns them (numpy's arrays, which ONNX Runtime writes into);
- as ONNX Runtime's own ``InferenceSession.run`` returns them (its buffers, 64 bytes into a 4 KiB page: what
  ``OrtSession.run`` returned before the twenty-second session);
- copied into buffers at several offsets into a page.
Every way decodes the same tokens.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import time
from pathlib import Path
from typing import Any

OFFSETS = (0, 16, 32, 64, 128, 2048)


def _at(x: Any, offset: int) -> Any:
    """A copy of ``x`` whose data starts ``offset`` bytes into a page."""
    import numpy as np

    buf = np.empty(x.nbytes + offset + 4096, np.uint8)
    start = (-buf.ctypes.data) % 4096 + offset
    y = buf[start:start + x.nbytes].view(x.dtype).reshape(x.shape)
    y[...] = x
    return y


def main() -> None:
    import numpy as np

    from qeffbuild.backends.ort import OrtSession
    from qeffbuild.decoding.greedy import greedy
    from qeffbuild.decoding.rules import LogitRules
    from qeffbuild.reports.timing import StepSamples

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("spec", type=Path, help="a built speech specialization's folder (out/SPEC) with an ort artifact")
    ap.add_argument("--steps", type=int, default=24)
    ap.add_argument("--blocks", type=int, default=8)
    ap.add_argument("--offsets", type=int, nargs="+", default=list(OFFSETS),
                    help="bytes into a page for the copies (4096 + 64 tells a 4 KiB alias from 64 itself)")
    args = ap.parse_args()
    decoder = OrtSession(args.spec / "ort" / "decoder")
    encoder = OrtSession(sorted(p for p in (args.spec / "ort").iterdir() if p.name.startswith("encoder"))[0])
    rng = np.random.default_rng(0)
    feeds = {n: rng.standard_normal(encoder.io["shapes"][n]).astype(np.float32) for n in encoder.names}
    ours = encoder.run(feeds)
    theirs = encoder.sess.run(None, feeds)
    ways: dict[str, list[Any]] = {"OrtSession.run (numpy's arrays)": ours,
                                  "InferenceSession.run (ONNX Runtime's buffers)": theirs}
    for off in args.offsets:
        ways[f"copies {off} bytes into a page"] = [_at(x, off) for x in ours]
    print("where they start:", {k: sorted({x.ctypes.data % 4096 for x in v}) for k, v in list(ways.items())[:2]})
    b = decoder.io["shapes"]["input_ids"][0]
    prompts = np.tile(np.array([[50258, 50259, 50360, 50364]], np.int64), (b, 1))
    rules = LogitRules(eos=-1)  # no token is EOS: every decode runs its steps
    tokens = [greedy(decoder, decoder.io, fixed, prompts, rules, 8).tokens for fixed in ways.values()]
    if any(not np.array_equal(tokens[0], t) for t in tokens):
        raise SystemExit("the ways decoded different tokens")
    def timed(fixed: list[Any], n: int) -> float:
        t0 = time.perf_counter()
        greedy(decoder, decoder.io, fixed, prompts, rules, n)
        return time.perf_counter() - t0

    # per step = (T(N) − T(1)) / (N − 1); a pair a loaded host spoiled (T(N) ≤ T(1)) is taken again, never kept
    pairs = {name: StepSamples(functools.partial(timed, fixed), args.steps) for name, fixed in ways.items()}
    for _ in range(args.blocks):
        for name, fixed in ways.items():
            greedy(decoder, decoder.io, fixed, prompts, rules, args.steps)  # opens the block, untimed
            for _ in range(3):
                pairs[name].take()
    for name, values in ((name, p.per) for name, p in pairs.items() if p.per):
        print(f"  {name:48s} {statistics.median(values) * 1000:6.2f} ms a step "
              f"(samples {min(values) * 1000:.2f}–{max(values) * 1000:.2f})")


if __name__ == "__main__":
    main()
