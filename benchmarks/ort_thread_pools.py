"""How `ort` sessions' threads wait: spinning within a call (the rule), never spinning, spinning between calls too.

    qeffbuild build minilm-b4 whisper-tiny-dims-b1 whisper-tiny-dims-b4 whisper-tiny-dims-int8
    python benchmarks/ort_thread_pools.py [--runs 15]

A process calls several sessions in turn: an embedding validation or `qeffbuild run` its graph per seq_len, a
transcription its encoder and then decoder steps; each session has its own thread pool. Each way
(``backends.ort.SPINNING``) runs in a fresh process; the ways take turns, ``--rounds`` times, so a
slow minute of the host lands on each. ``--global-pool`` adds a last way, every session on ONNX Runtime's global
pool (not what qeffbuild does: once made, every other session of the process must opt in or fails to open).
Per round and way, medians of ``--runs``:
- the real all-MiniLM-L6-v2 at batch 4 (out/minilm-b4): its seq 16 and seq 64 graphs called as a validation
  calls them (16, 16, 64 in turn) and back to back;
- whole transcriptions of manifests/data/speech (features, encoder, 24 greedy tokens) on whisper-tiny dims at
  batch 1 (one file), batch 4 (four) and int8 batch 1, through `Transcriber` as a user calls it;
- a decoder step alone at batch 1 and 4, as `qeffbuild bench` times it: (T(24 tokens) - T(1)) / 23.
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
WAYS = ["spinning", "no spinning", "spin within a call", "global pool"]
SPINNING = {"spinning": "unless-decoder", "no spinning": "never", "spin within a call": "within-call",
            "global pool": "within-call"}
SPEECH = REPO / "manifests" / "data" / "speech"


def child(way: str, runs: int) -> dict[str, Any]:
    import numpy as np

    from qeffbuild.backends import ort as ort_backend

    ort_backend.SPINNING = SPINNING[way]
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
        if spec != "whisper-tiny-dims-int8":
            out[f"decoder step {spec}, ms a token"] = _per_token(t, files[0], runs)
    return out


def _per_token(t: Any, wav: Path, runs: int, n: int = 24) -> float:
    """A decoder step's time as `qeffbuild bench` measures it: the greedy loop over one encoding, N tokens less 1."""
    import numpy as np

    from qeffbuild.decoding.greedy import greedy
    from qeffbuild.reports.timing import per_step_seconds
    from qeffbuild.tasks.speech.driver import encode, load_dataset

    graph = min(t.graphs, key=lambda g: t.graphs[g])
    utt = load_dataset([wav])[0]
    fixed = encode(t.encoders[graph], t.decoder, t.frontend.features([utt.audio] * t.batch_size, t.graphs[graph]))
    prompts = np.array([t.decode_config.prompt] * t.batch_size, dtype=np.int64)

    def decode(steps: int) -> float:
        t0 = time.perf_counter()
        greedy(t.decoder, t.decoder_io, fixed, prompts, t.decode_config.rules(), steps)
        return time.perf_counter() - t0

    for _ in range(3):
        decode(n), decode(1)
    per, _ = per_step_seconds(decode, n, runs)  # bench's pairs: a pair the host disturbed gives no figure
    return statistics.median(per) * 1000 if per else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=15)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--global-pool", action="store_true")
    ap.add_argument("--ways", nargs="+", choices=WAYS[:-1], default=WAYS[:-1], help="which of the ways (default: all)")
    ap.add_argument("--child", choices=WAYS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.runs)))
        return
    ways = [*args.ways, *(["global pool"] if args.global_pool else [])]
    results: dict[str, list[dict[str, Any]]] = {w: [] for w in ways}
    for _ in range(args.rounds):
        for way in results:
            done = subprocess.run([sys.executable, __file__, "--child", way, "--runs", str(args.runs)],
                                  capture_output=True, text=True, cwd=REPO)
            if done.returncode != 0:
                sys.exit(f"the {way} child failed:\n{done.stderr[-3000:]}")
            results[way].append(json.loads(done.stdout.strip().splitlines()[-1]))
    first = next(iter(results.values()))[0]
    rows = [k for k, v in first.items() if isinstance(v, float) and "checksum" not in k]
    print(f"{'ms (median per round)':<52}" + "".join(f"{w:>24}" for w in results))
    for k in rows:
        print(f"{k:<52}" + "".join(f"{' / '.join(f'{r[k]:.2f}' for r in rs):>24}" for rs in results.values()))
    same = all(r[k] == first[k] for way in results.values() for r in way for k in first if k.endswith("texts"))
    sums = {round(r["embedding checksum"], 3) for way in results.values() for r in way}
    print(f"same transcripts every way: {same}; embedding checksums: {sorted(sums)}")


if __name__ == "__main__":
    main()
