"""Where a fresh process's start-up goes: cProfile over `Transcriber.load` and the first token, on `inductor`.

    python benchmarks/profile_startup.py out/whisper-tiny-dims-cuda-b1 [--top 45]

Prints the load and first-token times, the compile counters, each Triton kernel that still benchmarked its
launch configs (and where it looked for the build's result), and the functions that took the time
(cumulative, then own time). Watching the kernels imports Inductor's runtime before the load, so the
load here is shorter than a user's: benchmarks/gpu_startup.py gives the medians over fresh processes.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import pstats
import time
from pathlib import Path
from typing import Any


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
    tuned = _watch_autotuning()
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
    # a cache hit adds the counts its compile made (the build's): benchmark and compile counts here are the build's
    print({k: dict(v) for k, v in counters.items() if k in ("inductor", "stats", "aot_autograd")})
    print(f"{len(tuned)} kernels benchmarked their launch configs; the first 5:")
    for row in tuned[:5]:
        print("  " + json.dumps(row))
    for order in ("cumulative", "tottime"):
        out = io.StringIO()
        pstats.Stats(profile, stream=out).sort_stats(order).print_stats(args.top)
        print(out.getvalue())
    # who asks for the costly calls seen so far (custom op definitions, Jinja templates, Triton's source hash)
    out = io.StringIO()
    stats = pstats.Stats(profile, stream=out).sort_stats("cumulative")
    for name in ("library.py.*define", "_template_from_string", "triton_key", "graph_info_provider"):
        stats.print_callers(name, 6)
    print(out.getvalue())


def _watch_autotuning() -> list[dict[str, Any]]:
    """Record each Triton kernel that benchmarks its launch configs (the build's recorded choice did not apply):
    its name, its candidate count and the file it was compiled from."""
    from torch._inductor.runtime.triton_heuristics import CachingAutotuner

    seen: list[dict[str, Any]] = []
    original = CachingAutotuner.autotune_to_one_config

    def watched(self: Any, *args: Any, **kwargs: Any) -> Any:
        from qeffbuild.backends.inductor import _PINNED, _config_of, _kernel_keys

        filename = str(getattr(self, "filename", "") or "")
        seen.append({"kernel": getattr(getattr(self, "fn", None), "__name__", "?"),
                     "launchers": len(getattr(self, "launchers", [])), "compiled_from": filename,
                     # why the build's record did not apply: no entry for this source, or no candidate equal to it
                     "recorded": next((_PINNED[k] for k in _kernel_keys(self) if k in _PINNED), None),
                     "keys": _kernel_keys(self), "records": len(_PINNED),
                     "candidates": [_config_of(launcher) for launcher in getattr(self, "launchers", None) or []]})
        return original(self, *args, **kwargs)

    CachingAutotuner.autotune_to_one_config = watched  # type: ignore[method-assign]
    return seen


if __name__ == "__main__":
    main()
