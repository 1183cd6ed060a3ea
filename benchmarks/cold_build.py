"""Benchmark: a cold `qeffbuild build` of the checked-in defaults, and where its time goes.

    python benchmarks/cold_build.py                 # the README's main job; target ≤ 180 s on 2 cores
    python benchmarks/cold_build.py --warm-inductor # keep Inductor's own compiler cache between runs

Copies manifests/ to a temporary folder and builds with an empty qeffbuild cache and (unless
--warm-inductor) an empty Inductor cache, as a fresh machine would. Prints the wall time, the
time per step kind, and the slowest steps (each step's own duration, from `build --json`).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("targets", nargs="*", help="Targets (default: the manifests' defaults).")
    ap.add_argument("--warm-inductor", action="store_true", help="Reuse Inductor's compiler cache.")
    ap.add_argument("-j", "--jobs", type=int, default=None)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="qeffbuild-cold-"))
    try:
        shutil.copytree(REPO / "manifests", tmp / "manifests")
        env = dict(os.environ)
        env.pop("QEFFBUILD_CACHE_DIR", None)
        if not args.warm_inductor:
            env["TORCHINDUCTOR_CACHE_DIR"] = str(tmp / "inductor")
        cmd = [sys.executable, "-m", "qeffbuild", "build", "--json", *args.targets]
        if args.jobs:
            cmd += ["-j", str(args.jobs)]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, cwd=tmp, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            sys.exit(f"build failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
        steps = json.loads(proc.stdout)["steps"]
        by_kind: dict[str, float] = defaultdict(float)
        for sid, info in steps.items():
            by_kind[sid.split(":")[0]] += info["duration_s"]
        slowest = sorted(steps.items(), key=lambda kv: -kv[1]["duration_s"])[:8]
        print(json.dumps({
            "wall_s": round(wall, 1),
            "target_s": 180,
            "steps": len(steps),
            "cpus": os.cpu_count(),
            "inductor_cache": "warm" if args.warm_inductor else "cold",
            "seconds_per_kind": {k: round(v, 1) for k, v in sorted(by_kind.items(), key=lambda kv: -kv[1])},
            "slowest_steps": {sid: info["duration_s"] for sid, info in slowest},
        }, indent=1))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
