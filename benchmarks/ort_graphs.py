"""Where a CPU transcription's time goes: each `ort` graph of a built speech specialization alone, then one whole
transcription split into its phases, as the runtime opens and runs them.

    qeffbuild build whisper-tiny-dims-int8 whisper-tiny-dims-b1
    python benchmarks/ort_graphs.py out/whisper-tiny-dims-int8 out/whisper-tiny-dims-b1 [--runs 10] [--tokens 24]

Per specialization folder: the encoder call and one decoder step alone (median of ``--runs`` after 3 warm-up
calls, random inputs at the graph's shapes), then features → encoder → greedy decode of ``--tokens`` tokens on
manifests/data/speech/hello.wav (median of ``--runs``). `qeffbuild bench` gives the same rows beside
faster-whisper; this script says which phase a change moved.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from qeffbuild.reports.timing import time_calls

REPO = Path(__file__).resolve().parent.parent


def median_ms(fn: Callable[[], Any], runs: int, warmup: int = 3) -> float:
    return statistics.median(time_calls(fn, warmup, runs)) * 1000


def random_feeds(io: dict[str, Any]) -> dict[str, Any]:
    import numpy as np

    rng = np.random.default_rng(0)
    return {name: np.array(np.full(io["shapes"][name], 3, np.int64)) if dtype == "int64"
            else rng.standard_normal(io["shapes"][name]).astype(np.float32) for name, dtype in io["inputs"].items()}


def phases(spec: Path, runs: int, tokens: int) -> dict[str, float]:
    import numpy as np
    import soundfile as sf

    from qeffbuild.backends.ort import OrtSession
    from qeffbuild.decoding.greedy import greedy
    from qeffbuild.tasks.speech.driver import DecodeConfig, Frontend, encode

    encoder, decoder = OrtSession(spec / "ort" / "encoder"), OrtSession(spec / "ort" / "decoder")
    arch = decoder.io["arch"]
    frontend = Frontend(spec / "model", arch)
    dc = DecodeConfig.from_model_dir(spec / "model", None, arch, None)
    audio, _ = sf.read(REPO / "manifests" / "data" / "speech" / "hello.wav", dtype="float32")
    samples = encoder.io["samples"]
    prompts = np.array([dc.prompt] * decoder.io["shapes"]["input_ids"][0], dtype=np.int64)
    enc_feeds, dec_feeds = random_feeds(encoder.io), random_feeds(decoder.io)
    out = {"encoder alone": median_ms(lambda: encoder.run(enc_feeds), runs),
           "decoder step alone": median_ms(lambda: decoder.run(dec_feeds), runs * 5)}
    split: list[tuple[float, float, float]] = []

    def transcribe() -> None:
        t0 = time.perf_counter()
        feats = frontend.features([audio] * len(prompts), samples)
        t1 = time.perf_counter()
        fixed = encode(encoder, decoder, feats)
        t2 = time.perf_counter()
        greedy(decoder, decoder.io, fixed, prompts, dc.rules(), tokens)
        split.append((t1 - t0, t2 - t1, time.perf_counter() - t2))

    whole = median_ms(transcribe, runs)
    for i, name in enumerate(("features", "encoder", f"prompt + {tokens} tokens")):
        out[f"transcription: {name}"] = statistics.median(s[i] for s in split[3:]) * 1000
    out["transcription: whole"] = whole
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("specs", nargs="+", type=Path, help="built specialization folders (out/<spec>)")
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--tokens", type=int, default=24)
    args = ap.parse_args()
    for spec in args.specs:
        print(spec)
        for name, ms in phases(spec, args.runs, args.tokens).items():
            print(f"  {name:<36} {ms:8.1f} ms")


if __name__ == "__main__":
    main()
