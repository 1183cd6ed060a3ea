"""The chaos suite, long form: kills, concurrent builders, gc beside builds, corruptions, fuzzed manifests.

    python benchmarks/chaos.py --kills 200 --corruptions 250 --fuzz 3000
    python benchmarks/chaos.py --kills 5 --corruptions 20 --fuzz 100      # a quick look

Prints what must stay zero: wrong outputs with exit 0, tracebacks, writes outside out/ and the
cache, leftover staging folders, committed steps run again, steps run twice by concurrent
builders, builds that did not heal; plus the fuzzer's crashes and hangs. Exit 1 if any is not zero.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.chaos.harness import (  # noqa: E402
    CORRUPTIONS,
    SEED_MANIFESTS,
    ChaosProject,
    Tally,
    concurrent_scenario,
    corruption_scenario,
    fuzz_case,
    kill_scenario,
    mutate,
)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kills", type=int, default=200)
    ap.add_argument("--corruptions", type=int, default=250)
    ap.add_argument("--fuzz", type=int, default=3000)
    ap.add_argument("--concurrent", type=int, default=4, help="rounds of 8 concurrent builders (half with gc)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    tally = Tally()
    tmp = Path(tempfile.mkdtemp(prefix="qeffbuild-chaos-"))
    t0 = time.time()
    try:
        project = ChaosProject(tmp / "p", n=20, seed=args.seed)
        for i in range(args.kills):
            kill_scenario(project, tally, rng, f"kill {i}")
        for i in range(args.concurrent):
            concurrent_scenario(project, tally, 8, f"concurrent {i}", with_gc=i % 2 == 1)
        for i in range(args.corruptions):
            kind = CORRUPTIONS[i % len(CORRUPTIONS)]
            corruption_scenario(project, tally, kind, rng, f"corruption {i} {kind}")
        fuzz_root = tmp / "fuzz"
        shutil.copytree(REPO / "manifests" / "data", fuzz_root / "manifests" / "data")
        seeds = [(REPO / "manifests" / name).read_text() for name in SEED_MANIFESTS]
        crashes: list[str] = []
        for i in range(args.fuzz):
            problem = fuzz_case(fuzz_root, mutate(rng.choice(seeds), rng))
            if problem:
                crashes.append(f"case {i}: {problem}")
        report = {**tally.summary(), "fuzz_cases": args.fuzz, "fuzz_crashes_or_hangs": len(crashes),
                  "seconds": round(time.time() - t0)}
        print(json.dumps(report, indent=1))
        problems = {**tally.problems(), **({"fuzz": crashes} if crashes else {})}
        if problems:
            print(json.dumps({k: v[:5] for k, v in problems.items()}, indent=1), file=sys.stderr)
            sys.exit(1)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
