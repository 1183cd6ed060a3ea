"""`ort` sessions that never spin between calls, against the old rule (every session but a decoder step's spun).

    qeffbuild build minilm-b4 whisper-tiny-dims-b1 whisper-tiny-dims-b4 whisper-tiny-dims-int8
    python benchmarks/ort_thread_pools.py [--runs 15]

A process calls several sessions in turn: an embedding validation or `qeffbuild run` its graph per seq_len, a
transcription its encoder and then decoder steps; each session has its own thread pool. Each way
(``backends.ort.SPIN_UNLESS_DECODER``) runs in a fresh process; the ways take turns, ``--rounds`` times, so a
slow minute of the host lands on both. ``--global-pool`` adds a third way, every session on ONNX Runtime's global
pool (not what qeffbuild does: once made, every other session of the process must opt in or fails to open).
Per round and way, medians of ``--runs``:
- the real all-MiniLM-L6-v2 at batch 4 (out/minilm-b4): its seq 16 and seq 64 graphs called as a validation
  calls them (16, 16, 64 in turn) and back to back;
- whole transcriptions of manifests/data/speech (features, encoder, 24 greedy tokens) on whisper-tiny dims at
  batch 1 (one file), batch 4 (four) and int8 batch 1, through `Transcriber` as a user calls it.
Every way gives the same embeddings and tokens (checked).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
WAYS = ["spinning", "no spinning", "global pool"]
SPEECH = REPO / "manifests" / "data" / "speech"


def child(way: str, runs: int) -> dict[str, Any]:
    import numpy as np

    from qeffbuild.backends import ort as ort_backend

    ort_backend.SPIN_UNLESS_DECODER = way == "spinning"
    if way == "global pool":
        import onnxruntime as ort

        ort.set_global_thread_pool_sizes(0, 0)
        options = ort_backend._session_options

        def shared(ort: Any, retained: bool) -> Any:
            so = options(ort, retained)
            so.use_per_session_threads = False
            return so

        ort_backend._session_options = shared
    out: dict[str, Any] = {}
    sessions = {n: ort_backend.OrtSession(REPO / "out" / "minilm-b4" / "ort" / f"seq{n}") for n in (16, 64)}
    rng = np.random.default_rng(0)
    feeds = {n: {"input_ids": rng.integers(1000, 2000, (4, n), dtype=np.int64),
                 "attention_mask": np.ones((4, n), dtype=np.int64)} for n in (16, 64)}

    def call(n: int) -> float:
        t0 = time.perf_counter()
        sessions[n].run(feeds[n])
        return (time.perf_counter() - t0) * 1000

    for n in (16, 64):
        call(n)
    turns: dict[int, list[float]] = {16: [], 64: []}
    for _ in range(runs):
        for n in (16, 16, 64):
            turns[n].append(call(n))
    out["embedding, in turn: seq 16"] = statistics.median(turns[16])
    out["embedding, in turn: seq 64"] = statistics.median(turns[64])
    for n in (16, 64):
        call(n)
        out[f"embedding, back to back: seq {n}"] = statistics.median([call(n) for _ in range(runs)])
    out["embedding checksum"] = float(sum(float(np.asarray(sessions[n].run(feeds[n])[0]).sum()) for n in (16, 64)))

    from qeffbuild.transcribe import Transcriber

    wavs = sorted(SPEECH.glob("*.wav"))
    for spec, files in (("whisper-tiny-dims-b1", wavs[:1]), ("whisper-tiny-dims-b4", [*wavs, wavs[0]]),
                        ("whisper-tiny-dims-int8", wavs[:1])):
        t = Transcriber.load(REPO / "out" / spec, "onnxruntime")
        texts = t.transcribe(files, 24)  # warm
        times = []
        for _ in range(runs):
            t0 = time.perf_counter()
            assert t.transcribe(files, 24) == texts
            times.append((time.perf_counter() - t0) * 1000)
        out[f"transcribe {spec} ({len(files)} files)"] = statistics.median(times)
        out[f"{spec} texts"] = texts
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=15)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--global-pool", action="store_true")
    ap.add_argument("--child", choices=WAYS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.runs)))
        return
    results: dict[str, list[dict[str, Any]]] = {w: [] for w in WAYS if w != "global pool" or args.global_pool}
    for _ in range(args.rounds):
        for way in results:
            done = subprocess.run([sys.executable, __file__, "--child", way, "--runs", str(args.runs)],
                                  capture_output=True, text=True, cwd=REPO)
            if done.returncode != 0:
                sys.exit(f"the {way} child failed:\n{done.stderr[-3000:]}")
            results[way].append(json.loads(done.stdout.strip().splitlines()[-1]))
    first = results["no spinning"][0]
    rows = [k for k, v in first.items() if isinstance(v, float) and "checksum" not in k]
    print(f"{'ms (median per round)':<52}" + "".join(f"{w:>24}" for w in results))
    for k in rows:
        print(f"{k:<52}" + "".join(f"{' / '.join(f'{r[k]:.2f}' for r in rs):>24}" for rs in results.values()))
    same = all(r[k] == first[k] for way in results.values() for r in way for k in first if k.endswith("texts"))
    sums = {round(r["embedding checksum"], 3) for way in results.values() for r in way}
    print(f"same transcripts every way: {same}; embedding checksums: {sorted(sums)}")


if __name__ == "__main__":
    main()
