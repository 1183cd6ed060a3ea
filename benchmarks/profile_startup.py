"""Where a fresh process's start-up goes: cProfile over `Transcriber.load` and the first token, on `inductor`.

    python benchmarks/profile_startup.py out/whisper-tiny-dims-cuda-b1 [--top 45]

Prints the load and first-token times, the compile counters, and the functions that took the time
(cumulative, then own time). benchmarks/gpu_startup.py gives the medians over fresh processes.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folder", type=Path)
    ap.add_argument("--audio", type=Path, default=Path("manifests/data/speech/hello.wav"))
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--top", type=int, default=45)
    args = ap.parse_args()
    t0 = time.perf_counter()
    import torch

    from qeffbuild.tasks.speech.transcriber import Transcriber

    print(f"import {time.perf_counter() - t0:.2f} s")
    profile = cProfile.Profile()
    profile.enable()
    t1 = time.perf_counter()
    tr = Transcriber.load(args.folder, "inductor", args.device)
    t2 = time.perf_counter()
    tr.transcribe([args.audio], max_new_tokens=1)
    if args.device == "cuda":
        torch.cuda.synchronize()
    t3 = time.perf_counter()
    profile.disable()
    from torch._dynamo.utils import counters  # after: imported earlier, Inductor's import would leave the load
    print(f"load {t2 - t1:.2f} s, first token {t3 - t2:.2f} s")
    print({k: dict(v) for k, v in counters.items() if k in ("inductor", "stats", "aot_autograd")})
    _autotuners()
    for order in ("cumulative", "tottime"):
        out = io.StringIO()
        pstats.Stats(profile, stream=out).sort_stats(order).print_stats(args.top)
        print(out.getvalue())


def _autotuners() -> None:
    """The loaded Triton kernels that still had several launch configs at their first call (each benchmarked them),
    and where each looked for its autotuning result."""
    import gc
    import os

    from torch._inductor.runtime.autotune_cache import AutotuneCache
    from torch._inductor.runtime.triton_heuristics import CachingAutotuner

    kernels = [k for k in gc.get_objects() if isinstance(k, CachingAutotuner)]
    tuned = [k for k in kernels if len(getattr(k, "configs", None) or []) > 1]
    print(f"{len(kernels)} Triton kernels loaded, {len(tuned)} with several configs")
    for k in tuned[:5]:
        filename = str(getattr(k, "filename", ""))
        from torch._inductor.codecache import torch_key  # noqa: F401 (the key the cache path includes)

        key = AutotuneCache._prepare_key(filename)
        path = AutotuneCache._make_local_cache_key(os.path.dirname(filename), key)
        print(f"  {getattr(k.fn, '__name__', '?')}: {len(k.configs)} configs, {len(k.launchers)} launchers, "
              f"compiled from {filename}; best config at {path}: {'found' if os.path.exists(path) else 'missing'}")


if __name__ == "__main__":
    main()
