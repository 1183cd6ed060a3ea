"""Benchmark: plan a chain of N command steps (each depends on the previous), process start included.

    python benchmarks/chain_plan.py --steps 20000     # target ≤ 2 s
    python benchmarks/chain_plan.py --scaling         # 1,000 / 2,000 / 4,000 / 8,000 / 16,000: linear?

Planning was quadratic in chain length (1,000 / 2,000 / 4,000 steps: 3.5 / 8.9 / 30.4 s); this
prints the `qeffbuild plan` wall time for each length, median of --repeat runs.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def generate(root: Path, n: int) -> None:
    (root / "manifests").mkdir(parents=True)
    lines = ['[project]\nname = "chain"\n']
    for i in range(n):
        dep = f'deps = ["s{i - 1}"]\n' if i else ""
        lines.append(f'[steps.s{i}]\ncmd = ["true"]\noutputs = ["o"]\n{dep}')
    (root / "manifests" / "chain.toml").write_text("\n".join(lines))


def plan_seconds(n: int, repeat: int) -> float:
    tmp = Path(tempfile.mkdtemp(prefix="qeffbuild-chain-"))
    try:
        generate(tmp, n)
        times = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            proc = subprocess.run([sys.executable, "-m", "qeffbuild", "plan", f"s{n - 1}"], cwd=tmp,
                                  capture_output=True, text=True)
            times.append(time.perf_counter() - t0)
            if proc.returncode != 0:
                sys.exit(proc.stderr)
        return statistics.median(times)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=20000)
    ap.add_argument("--scaling", action="store_true")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    sizes = [1000, 2000, 4000, 8000, 16000] if args.scaling else [args.steps]
    result = {str(n): round(plan_seconds(n, args.repeat), 3) for n in sizes}
    print(json.dumps({"plan_seconds_by_chain_length": result, "target_s_for_20000": 2.0}, indent=1))


if __name__ == "__main__":
    main()
