"""Benchmark: a fresh process from `Transcriber.load(...)` to the first token, on the `inductor` runtime.

    qeffbuild build whisper-tiny-dims-cuda-b1          # on a GPU host (manifests/gpu.toml)
    python benchmarks/gpu_startup.py [--runs 3] [--spec whisper-tiny-dims-cuda-b1]

Each run is a new Python process (nothing warm but the OS page cache): it imports qeffbuild,
loads the built specialization (each graph's precompiled Inductor artifact and its weights), and
transcribes one utterance with max_new_tokens=1 (encoder + prompt + one token: every graph loaded,
run and captured), then 128 tokens more. Printed per run: import, load, first token, and the
counters that say nothing was compiled: FX graph cache misses (Inductor code generation), Dynamo
captures (a trace), and the Triton kernel benchmarks this process ran (counted by a hook: Inductor's
own counter, on a cache hit, adds what the build's compile counted). Beside it, the build-time compile of the same
graphs from empty caches (inductor.json's compile_s). Target (issue #21): load → first token ≤ 3 s
for whisper-tiny dims, ≤ 6 s for large-v3 dims.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

CHILD = r"""
import json, os, sys, time
t0 = time.perf_counter()
from qeffbuild.backends.inductor import count_kernel_benchmarks
BENCHMARKS = count_kernel_benchmarks()  # an import hook: imports nothing now
from pathlib import Path
from qeffbuild.tasks.speech.transcriber import Transcriber
import torch
t1 = time.perf_counter()
print(f"imported in {t1 - t0:.2f} s", file=sys.stderr, flush=True)
tr = Transcriber.load(Path(sys.argv[1]), "inductor", "cuda")
t2 = time.perf_counter()
print(f"loaded in {t2 - t1:.2f} s", file=sys.stderr, flush=True)
tr.transcribe([Path(sys.argv[2])], max_new_tokens=1)
torch.cuda.synchronize()
t3 = time.perf_counter()
print(f"first token after {t3 - t2:.2f} s more", file=sys.stderr, flush=True)
tr.transcribe([Path(sys.argv[2])], max_new_tokens=128)
t4 = time.perf_counter()
def children():  # processes this one started (Inductor's compile-worker pool is one, with its workers below it)
    n = 0
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as f:
                n += int(f.read().rsplit(")", 1)[1].split()[1]) == os.getpid()
        except (OSError, ValueError, IndexError):
            pass
    return n
from torch._dynamo.utils import counters  # only now: imported earlier, Inductor's import would leave the load
print(json.dumps({"import_s": t1 - t0, "start_to_first_token_s": t3 - t0,
                  "load_s": t2 - t1, "first_token_s": t3 - t2, "load_to_first_token_s": t3 - t1,
                  "then_128_tokens_s": t4 - t3, "fxgraph_cache_hit": counters["inductor"]["fxgraph_cache_hit"],
                  "fxgraph_cache_miss": counters["inductor"]["fxgraph_cache_miss"],
                  "kernel_benchmarks": BENCHMARKS[0],
                  "build_benchmarks_replayed": counters["inductor"]["benchmarking.InductorBenchmarker.benchmark_gpu"],
                  "dynamo_captures": counters["stats"]["calls_captured"], "child_processes": children()}))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--spec", default="whisper-tiny-dims-cuda-b1")
    ap.add_argument("--out", type=Path, default=Path("out"))
    ap.add_argument("--audio", type=Path, default=Path("manifests/data/speech/hello.wav"))
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--timeout", type=float, default=120, help="seconds one fresh process may take")
    args = ap.parse_args()
    folder = args.out / args.spec
    if not (folder / "inductor").is_dir():
        sys.exit(f"{folder}/inductor not found: build it first (qeffbuild build {args.spec})")
    runs = []
    for _ in range(args.runs):
        try:
            done = subprocess.run([sys.executable, "-c", CHILD, str(folder), str(args.audio)], capture_output=True,
                                  text=True, timeout=args.timeout)
        except subprocess.TimeoutExpired as e:
            sys.exit(f"the child process ran past {args.timeout} s; it had printed:\n{_text(e.stdout)}\n"
                     f"{_text(e.stderr)[-3000:]}")
        if done.returncode != 0:
            sys.exit(f"the child process failed:\n{done.stderr[-3000:]}")
        runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
    built = {d.name: json.loads((d / "inductor.json").read_text())["compile_s"]
             for d in sorted((folder / "inductor").iterdir()) if (d / "inductor.json").is_file()}
    median = statistics.median(r["load_to_first_token_s"] for r in runs)
    summary = {"runs": runs, "median_load_to_first_token_s": median, "build_time_compile_s": built}
    if args.json:
        print(json.dumps(summary, indent=1))
        return
    for r in runs:
        print(f"import {r['import_s']:.2f} s | load {r['load_s']:.2f} s | first token {r['first_token_s']:.2f} s | "
              f"load→first token {r['load_to_first_token_s']:.2f} s | process start→first token "
              f"{r['start_to_first_token_s']:.2f} s | then 128 tokens {r['then_128_tokens_s']:.3f} s | "
              f"FX graph cache {r['fxgraph_cache_hit']} hits, {r['fxgraph_cache_miss']} misses | "
              f"{r['kernel_benchmarks']} kernel benchmarks (Inductor's counter replays the build's "
              f"{r['build_benchmarks_replayed']}) | {r['dynamo_captures']} Dynamo captures | "
              f"{r.get('child_processes', '?')} child processes")
    print(f"median load→first token: {summary['median_load_to_first_token_s']:.2f} s (target ≤ 3 s tiny dims, "
          f"≤ 6 s large-v3 dims); "
          f"the same graphs compiled from empty caches at build time: {built}")


def _text(out: bytes | str | None) -> str:
    return out.decode(errors="replace") if isinstance(out, bytes) else (out or "")


if __name__ == "__main__":
    main()
