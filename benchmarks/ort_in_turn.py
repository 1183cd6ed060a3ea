"""Two or more compiled `ort` graphs of the same inputs, timed in turn: which one is faster, and by how much.

    python benchmarks/ort_in_turn.py out/whisper-tiny-dims-b1/ort/encoder OLD/ort/encoder [--iters 40]

Each argument is a compiled `ort` artifact folder (model.onnx and io.json, as `out/<spec>/ort/<graph>` holds
it). Each graph is opened as the runtime opens it (``backends.ort.OrtSession``: its thread and spinning policy)
and called on the same random inputs at its io.json's shapes (int64 inputs a constant 3, a scalar ``position``
included); samples are taken in blocks, round-robin (``reports.timing.interleave``), so a slow minute of the
machine lands on every graph alike. Prints per graph p50 and p10 and the ratio of each p50 to the first's,
and the largest difference of each output from the first graph's (a change meant to be exact says so here).

To compare an artifact before and after a change of its passes, copy the old folder aside before rebuilding.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from qeffbuild.reports.timing import interleave

sys.path.insert(0, str(Path(__file__).resolve().parent))

from ort_graphs import random_feeds  # type: ignore[import-not-found]


def main() -> None:
    import numpy as np

    from qeffbuild.backends.ort import OrtSession
    from qeffbuild.runtimes.io import read_io

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("graphs", nargs="+", type=Path, help="compiled `ort` artifact folders")
    ap.add_argument("--iters", type=int, default=40, help="timed calls per graph (in 5 blocks)")
    args = ap.parse_args()
    sessions = [OrtSession(folder) for folder in args.graphs]
    inputs = random_feeds(read_io(args.graphs[0]))
    samples: list[list[float]] = [[] for _ in sessions]

    def probe(i: int) -> Any:
        def take(k: int) -> None:
            sessions[i].run(inputs)  # untimed: caches and threads back from the other graph
            for _ in range(k):
                t0 = time.perf_counter()
                sessions[i].run(inputs)
                samples[i].append(time.perf_counter() - t0)
        return take

    interleave([probe(i) for i in range(len(sessions))], args.iters)
    first = sessions[0].run(inputs)
    base = statistics.median(samples[0])
    for folder, session, took in zip(args.graphs, sessions, samples, strict=True):
        p50 = statistics.median(took)
        diff = max(float(np.abs(a - b).max()) for a, b in zip(session.run(inputs), first, strict=True))
        print(f"{folder!s:60s} p50 {p50 * 1e3:8.2f} ms  p10 {np.percentile(took, 10) * 1e3:8.2f} ms  "
              f"×{p50 / base:.3f} of the first  max |Δ| {diff:.2e}  ({len(took)} calls)")


if __name__ == "__main__":
    main()
