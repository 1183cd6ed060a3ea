"""Benchmark: time a no-op rebuild of N generated `command` targets, process start included.

    python benchmarks/noop_rebuild.py --targets 1000        # the issue's target: ≤ 0.5 s
    python benchmarks/noop_rebuild.py --manifests manifests  # the checked-in manifests: ≤ 0.3 s

Generates a project in a temporary folder (one input file per target), builds it once,
then runs `qeffbuild build` as a fresh process REPEAT times and reports wall times.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def generate(root: Path, n: int) -> None:
    (root / "manifests" / "data").mkdir(parents=True)
    lines = ['[project]\nname = "bench"\n']
    for i in range(n):
        (root / "manifests" / "data" / f"in{i}.txt").write_text(f"input {i}\n")
        lines.append(
            f'[steps.t{i}]\ncmd = ["cp", "{{root}}/data/in{i}.txt", "out.txt"]\n'
            f'inputs = ["data/in{i}.txt"]\noutputs = ["out.txt"]\n'
        )
    (root / "manifests" / "bench.toml").write_text("\n".join(lines))


def timed(cmd: list[str], cwd: Path) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    dt = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr}")
    return dt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--targets", type=int, default=1000)
    ap.add_argument("--manifests", type=Path, default=None, help="Time these manifests instead (built first).")
    ap.add_argument("--repeat", type=int, default=7)
    args = ap.parse_args()
    exe = [sys.executable, "-m", "qeffbuild"]
    tmp = Path(tempfile.mkdtemp(prefix="qeffbuild-bench-"))
    try:
        if args.manifests:
            cwd = Path.cwd()
            cmd = [*exe, "-m", str(args.manifests.resolve()), "build", "-q"]
            label = str(args.manifests)
        else:
            generate(tmp, args.targets)
            cwd = tmp
            cmd = [*exe, "build", "-q"]
            label = f"{args.targets} generated command targets"
        first = timed(cmd, cwd)
        times = [timed(cmd, cwd) for _ in range(args.repeat)]
        result = {
            "what": label,
            "first_build_s": round(first, 3),
            "noop_median_s": round(statistics.median(times), 3),
            "noop_min_s": round(min(times), 3),
            "noop_max_s": round(max(times), 3),
            "repeat": args.repeat,
            "cpus": os.cpu_count(),
        }
        print(json.dumps(result, indent=1))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
