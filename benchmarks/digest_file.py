"""How fast qeffbuild hashes a large file (``core.hashing.digest_file``), against the one-thread read-and-hash
it replaced, on the same file in one run.

    python benchmarks/digest_file.py [--gb 2] [--path FILE] [--runs 3]

Opening a saved folder (``Transcriber.load``) reads every graph file it will use in full against its recorded
digest: whisper-large-v3's fp16 artifacts are ~3 GB, on the start-up path of a fresh process (issue #21). The
file (random bytes, made once) is read from the page cache after the first pass, as a folder just built is.
Prints each way's best of ``--runs`` in s and GB/s, and checks that both give the same digest.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def one_thread(path: Path) -> str:
    """The former digest_file: 1 MiB reads, one thread."""
    from blake3 import blake3

    h = blake3()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return str(h.hexdigest())


def main() -> None:
    from qeffbuild.core.hashing import digest_file

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gb", type=float, default=2.0)
    ap.add_argument("--path", type=Path, default=Path("/tmp/qeffbuild-digest-bench.bin"))
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    size = int(args.gb * (1 << 30)) // (16 << 20) * (16 << 20)
    if not args.path.exists() or args.path.stat().st_size != size:
        with open(args.path, "wb") as f:
            for _ in range(size // (16 << 20)):
                f.write(os.urandom(16 << 20))
    digests = {}
    print(f"{size / 1e9:.2f} GB, {os.cpu_count()} cores")
    for name, fn in (("one thread, 1 MiB reads (before)", one_thread), ("digest_file (shipped)", digest_file)):
        fn(args.path)  # warm the page cache
        best = float("inf")
        for _ in range(args.runs):
            t0 = time.perf_counter()
            digests[name] = fn(args.path)
            best = min(best, time.perf_counter() - t0)
        print(f"  {name:34s} {best:6.3f} s  {size / best / 1e9:5.2f} GB/s")
    print(f"  same digest: {len(set(digests.values())) == 1}")


if __name__ == "__main__":
    main()
