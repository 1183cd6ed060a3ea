"""Benchmark: fetch a 1 GiB artifact from the remote cache (SeaweedFS S3 on loopback) beside a plain s3fs get.

    python benchmarks/remote_fetch.py [--mib 1024] [--repeat 3]

Machine A builds a step whose output is a MIB-MiB file of random bytes and uploads it. Then, each
round, on an empty local cache:

- plain:     ``s3fs`` ``get_file`` of the blob (no verification) — what a user would otherwise run;
- qeffbuild: :meth:`RemoteCache.fetch` of the step: the entry, the blob downloaded, hashed (blake3),
  fsynced and moved into the local cache;
- build:     the whole ``qeffbuild build`` on machine B (process start, plan, the fetch, and the copy
  into ``out/`` every build makes).

Prints the best of the rounds in MiB/s and the ratio qeffbuild / plain.
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
from tests.s3server import s3_server  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mib", type=int, default=1024)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="qeffbuild-remote-bench-"))
    manifest = ('[project]\nname = "big"\n[steps.big]\n'
                f'cmd = ["sh", "-c", "head -c {args.mib}M /dev/urandom > big.bin"]\noutputs = ["big.bin"]\n')
    try:
        with s3_server(tmp / "s3", volume_mb=1024) as server:
            os.environ.update(server.env)

            def build(name: str) -> float:
                root = tmp / name
                shutil.rmtree(root, ignore_errors=True)
                (root / "manifests").mkdir(parents=True)
                (root / "manifests" / "big.toml").write_text(manifest)
                env = {**os.environ, "QEFFBUILD_CACHE_DIR": str(root / "cache"), "QEFFBUILD_REMOTE_CACHE": server.url}
                t0 = time.perf_counter()
                proc = subprocess.run([sys.executable, "-m", "qeffbuild", "build", "--json", "-q"], cwd=root,
                                      env=env, capture_output=True, text=True)
                if proc.returncode != 0:
                    sys.exit(proc.stderr[-3000:])
                return time.perf_counter() - t0

            upload_s = build("a")
            entry = json.loads(next((tmp / "a" / "cache" / "ac").glob("*/*.json")).read_text())
            digest, key = entry["outputs"]["big.bin"], entry["key"]
            from qeffbuild.store import LocalStore
            from qeffbuild.store.remote import RemoteCache

            fs = RemoteCache(server.url, LocalStore(tmp / "probe")).fs
            blob = f"{server.url.removeprefix('s3://')}/cas/{digest[:2]}/{digest}"
            plain, fetched, whole = [], [], []
            for i in range(args.repeat):
                t0 = time.perf_counter()
                fs.get_file(blob, str(tmp / "plain.bin"))
                plain.append(time.perf_counter() - t0)
                (tmp / "plain.bin").unlink()
                local = LocalStore(tmp / f"fresh{i}")
                remote = RemoteCache(server.url, local, upload=False)
                t0 = time.perf_counter()
                assert remote.fetch(key) is not None, remote.notes
                fetched.append(time.perf_counter() - t0)
                shutil.rmtree(tmp / f"fresh{i}")
                whole.append(build("b"))
                shutil.rmtree(tmp / "b")
        mib = args.mib
        print(f"{mib} MiB artifact, SeaweedFS S3 on loopback, {os.cpu_count()} cores; best of {args.repeat}")
        print(f"  build on A (run the step + upload):  {upload_s:6.2f} s")
        print(f"  plain s3fs get_file:                 {min(plain):6.2f} s  {mib / min(plain):7.1f} MiB/s")
        print(f"  qeffbuild remote fetch (verified):   {min(fetched):6.2f} s  {mib / min(fetched):7.1f} MiB/s  "
              f"ratio to plain {min(plain) / min(fetched):.2f}")
        print(f"  whole qeffbuild build on B:          {min(whole):6.2f} s  {mib / min(whole):7.1f} MiB/s  "
              "(+ process start, plan, copy into out/)")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
