"""Benchmark: the nightly case at 1,000 targets — a matrix of 10 models × 10 batch sizes × 10 runtimes.

    python benchmarks/matrix_1000.py [--axis 10] [--bytes 20000]

One manifest table with a matrix expands into axis³ command steps (each writes ``--bytes`` of output, as a
small artifact would, after reading a shared input step's output). Measured in one run, each in a fresh
process as a user would run it:

- ``qeffbuild ls`` and ``qeffbuild plan`` on the expanded manifest (load, expand the matrix, key every step);
- a cold local build at ``-j 2`` (this machine's cores) and ``-j 4``; then the no-op rebuild;
- a cold build on a two-node Ray cluster on loopback whose nodes have separate local caches and no shared
  disk, exchanging artifacts through a real S3 server (SeaweedFS on loopback): wall clock, and the bytes the
  nodes and the driver moved through S3 (from the build's own counters).

The driver's out/ is compared with the local build's, byte for byte.
"""

from __future__ import annotations

import argparse
import filecmp
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
from tests.s3server import s3_server  # noqa: E402

TUNED = {"RAY_raylet_report_resources_period_milliseconds": "10"}


def project(root: Path, axis: int, size: int) -> Path:
    values = lambda prefix: "[" + ", ".join(f'"{prefix}{i}"' for i in range(axis)) + "]"  # noqa: E731
    (root / "manifests").mkdir(parents=True, exist_ok=True)
    tag = "echo ${matrix.model} ${matrix.batch} ${matrix.runtime} >> a.bin"  # each target's bytes differ
    (root / "manifests" / "nightly.toml").write_text(f"""
[project]
name = "nightly-1000"

[steps.weights]
cmd = ["sh", "-c", "head -c {size * 4} /dev/zero | tr '\\\\0' w > weights.bin"]
outputs = ["weights.bin"]

[steps."${{matrix.model}}-${{matrix.batch}}-${{matrix.runtime}}"]
matrix = {{ model = {values("m")}, batch = {values("b")}, runtime = {values("r")} }}
cmd = ["sh", "-c", "cat {{dep:weights}}/weights.bin | head -c {size} > a.bin; {tag}"]
outputs = ["a.bin"]
deps = ["weights"]
""")
    return root


def run(root: Path, env: dict[str, str], *args: str) -> tuple[float, subprocess.CompletedProcess[str]]:
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "qeffbuild", *args], cwd=root, text=True, capture_output=True,
                          env={**os.environ, **env})
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"qeffbuild {' '.join(args)} failed:\n{proc.stderr[-3000:]}")
    return wall, proc


def cold(root: Path, env: dict[str, str], *args: str) -> tuple[float, dict[str, object]]:
    shutil.rmtree(root / "cache", ignore_errors=True)
    shutil.rmtree(root / "out", ignore_errors=True)
    wall, proc = run(root, {**env, "QEFFBUILD_CACHE_DIR": str(root / "cache")}, "build", "--json", *args)
    return wall, json.loads(proc.stdout)


def same_out(a: Path, b: Path) -> bool:
    cmp = filecmp.dircmp(a, b, ignore=[".qeffbuild-stamp", "provenance.json"])

    def clean(d: filecmp.dircmp[str]) -> bool:
        if d.left_only or d.right_only or d.diff_files or d.funny_files:
            return False
        return all(clean(sub) for sub in d.subdirs.values())

    _, mismatch, errors = filecmp.cmpfiles(a, b, [], shallow=False)
    return clean(cmp) and not mismatch and not errors


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--axis", type=int, default=10, help="values per axis (targets: axis³ + 1)")
    ap.add_argument("--bytes", type=int, default=20000, help="output bytes per step")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="qeffbuild-matrix-"))
    rows: list[tuple[str, float, str]] = []
    try:
        root = project(tmp / "local", args.axis, args.bytes)
        env = {"QEFFBUILD_CACHE_DIR": str(root / "cache")}
        wall, proc = run(root, env, "ls", "--json")
        targets = len(json.loads(proc.stdout))
        rows.append(("ls (load + expand the matrix)", wall, f"{targets} targets"))
        wall, proc = run(root, env, "plan", "--json")
        rows.append(("plan, empty cache", wall, f"{json.loads(proc.stdout)['to_run']} steps to run"))
        for jobs in (2, 4):
            wall, result = cold(root, {}, "-j", str(jobs))
            rows.append((f"local build -j {jobs}, cold", wall, f"{result['counts']}"))
        wall, proc = run(root, env, "build", "--json")
        rows.append(("no-op rebuild", wall, f"{json.loads(proc.stdout)['counts']}"))
        wall, proc = run(root, env, "plan", "--json")
        rows.append(("plan, everything cached", wall, f"{json.loads(proc.stdout)['to_run']} to run"))

        with s3_server(tmp / "s3", volume_mb=512) as s3:
            caches = [tmp / "node-a", tmp / "node-b"]
            node_env = [{**s3.env, "QEFFBUILD_NODE_CACHE": str(c)} for c in caches]
            with ray_cluster(TUNED, node_env=node_env) as cluster:
                ray_root = project(tmp / "ray", args.axis, args.bytes)
                renv = {**cluster.env, **s3.env, "QEFFBUILD_REMOTE_TRUST": "any"}
                url = s3.url + "/nightly"
                wall, result = cold(ray_root, renv, "--executor", "ray", "--remote-cache", url)
                steps = result["steps"]
                assert isinstance(steps, dict)
                nodes = {str(s.get("where", "")).split("/")[-1] for s in steps.values()}
                moved = next((n for n in result.get("notes", []) if "Ray nodes moved" in n), "")
                rows.append((f"ray, 2 nodes × 2 CPUs, separate caches + S3, cold ({len(nodes)} nodes ran steps)", wall,
                             f"{result['counts']}"))
                state = json.loads(run(ray_root, {**renv, "QEFFBUILD_CACHE_DIR": str(ray_root / "cache")}, "cache",
                                       "stats")[1].stdout)
                driver = {k.removeprefix("remote."): v for k, v in state.get("totals", {}).items()
                          if k.startswith("remote.") and not k.startswith("remote.nodes.")}
                print(f"driver through S3 (reads what out/ needs): bytes_down {driver.get('bytes_down', 0)}, "
                      f"hits {driver.get('hits', 0)}")
                print(moved)
                print("out/ equal to the local build's, byte for byte:", same_out(root / "out", ray_root / "out"))
        print(f"\n{targets} targets ({args.axis}³ matrix rows + 1 input step), {args.bytes} B per output; "
              f"this machine: {os.cpu_count()} cores")
        print(f"{'what':<70} {'wall s':>8}  detail")
        for name, secs, detail in rows:
            print(f"{name:<70} {secs:>8.2f}  {detail}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
