"""Benchmark: 200 command steps of 0.5 s each, on a two-node Ray cluster (loopback) and locally with -j.

    python benchmarks/ray_vs_local.py [--steps 200] [--seconds 0.5]

Starts the same cluster the tests use (`ray start --head` + `ray start --address`, 2 CPUs each,
on this machine), builds a generated project of independent `sleep` steps there and, with a cold
cache each time, locally at -j 2 (this machine's cores) and -j 4 (the cluster's slots). Prints:

- the wall clock of each, and the ratio;
- the fixed cost of a build (a one-step build's wall clock less its step): process start and
  planning, and for Ray importing it, connecting and starting the job's workers;
- the scheduling overhead per step in steady state:
  ``((wall − fixed) × slots − Σ step durations) / steps``, the time a slot waited between steps
  (for Ray: task dispatch and result; the issue's target is ≤ 50 ms);
- for Ray, each step's dispatch as the executor measures it (submit → result, less the step's time).
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
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from tests.raycluster import ray_cluster  # noqa: E402

# Ray's raylets tell each other their free resources every 100 ms by default: a step sent to the other node
# can wait up to that long. A cluster's operator can shorten it (a daemon setting, not a qeffbuild one).
TUNED = {"RAY_raylet_report_resources_period_milliseconds": "10"}


def project(root: Path, steps: int, seconds: float) -> Path:
    (root / "manifests").mkdir(parents=True, exist_ok=True)
    lines = ['[project]\nname = "wide"\n']
    lines += [f'[steps.s{i}]\ncmd = ["sh", "-c", "sleep {seconds}; echo {i} > o.txt"]\noutputs = ["o.txt"]\n'
              for i in range(steps)]
    (root / "manifests" / "wide.toml").write_text("\n".join(lines))
    return root


def build(root: Path, env: dict[str, str], *args: str) -> tuple[float, dict[str, dict[str, float]]]:
    """A cold build (empty cache and out/): its wall clock and its steps."""
    shutil.rmtree(root / "cache", ignore_errors=True)
    shutil.rmtree(root / "out", ignore_errors=True)
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "qeffbuild", "build", "--json", *args], cwd=root, text=True,
                          capture_output=True, env={**os.environ, **env, "QEFFBUILD_CACHE_DIR": str(root / "cache")})
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"build {' '.join(args)} failed:\n{proc.stderr[-3000:]}")
    steps: dict[str, dict[str, float]] = json.loads(proc.stdout)["steps"]
    return wall, steps


def fixed_cost(one: Path, env: dict[str, str], *args: str) -> float:
    build(one, env, *args)  # warm the page cache (and, for Ray, the cluster)
    wall, steps = build(one, env, *args)
    return wall - sum(s["duration_s"] for s in steps.values())


def per_step(wall: float, fixed: float, slots: int, steps: dict[str, dict[str, float]]) -> float:
    busy = sum(s["duration_s"] for s in steps.values())
    return ((wall - fixed) * slots - busy) / len(steps)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--seconds", type=float, default=0.5)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="qeffbuild-ray-bench-"))
    try:
        root = project(tmp / "p", args.steps, args.seconds)
        one = project(tmp / "one", 1, args.seconds)
        rows = []
        local_fixed = fixed_cost(one, {}, "-j", "1")
        for jobs in (2, 4):
            wall, steps = build(root, {}, "-j", str(jobs))
            rows.append((f"local -j {jobs}", jobs, wall, local_fixed, per_step(wall, local_fixed, jobs, steps)))
        dispatch = {}
        for label, config in (("ray, default settings", {}), ("ray, resource reports every 10 ms", TUNED)):
            with ray_cluster(config) as cluster:
                ray_fixed = fixed_cost(one, cluster.env, "--executor", "ray")
                build(root, cluster.env, "--executor", "ray")  # warm the cluster once
                wall, steps = build(root, cluster.env, "--executor", "ray")
                nodes = {str(s.get("where", "")).split("/")[-1] for s in steps.values()}
                rows.append((f"{label} ({len(nodes)} nodes)", 4, wall, ray_fixed, per_step(wall, ray_fixed, 4, steps)))
                dispatch[label] = sorted(float(s["dispatch_s"]) for s in steps.values())
        ideal = args.steps * args.seconds
        print(f"{args.steps} steps × {args.seconds:g} s (ideal: {ideal / 2:.1f} s on 2 slots, {ideal / 4:.1f} s on 4); "
              f"this machine: {os.cpu_count()} cores")
        print(f"{'executor':<44} {'slots':>5} {'wall s':>8} {'fixed s':>8} {'overhead ms/step':>17}")
        for name, slots, wall, fixed, over in rows:
            print(f"{name:<44} {slots:>5} {wall:>8.2f} {fixed:>8.2f} {over * 1000:>17.1f}")
        for label, d in dispatch.items():
            print(f"{label}: dispatch per step as the executor measures it: median {d[len(d) // 2] * 1000:.1f} ms, "
                  f"p90 {d[int(len(d) * 0.9)] * 1000:.1f} ms, max {d[-1] * 1000:.0f} ms (a new worker's first task)")
        for row in rows[2:]:
            print(f"wall-clock ratio, {row[0]}: / local -j 2 = {row[2] / rows[0][2]:.2f}, "
                  f"/ local -j 4 = {row[2] / rows[1][2]:.2f}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
