"""HF `generate` per token in a plain script, as a user would time it — the yardstick for the bench's
`generate (HF, eager)` row (issue #21: the two must agree within 15 %).

    python benchmarks/plain_generate.py MODEL_DIR [--device cuda] [--dtype float16] [--batch 1] [--tokens 128]

MODEL_DIR is a saved Whisper (``out/<validation>/…/model`` or any ``save_pretrained`` folder). Per token =
(T(N) − T(1)) / (N − 1) with ``min_new_tokens = max_new_tokens``, device-synchronised, median of ``--samples``
(15) after 2 warm-up calls, on 30 s of random log-mel features. Eager ``generate`` is host-bound: its samples
move with the host's CPU (5 samples on the H200 host spanned 3.53–4.96 ms), so the median takes more than 5.

One decode of the window (``force_unique_generate_call``): a random Whisper emits timestamp tokens, and HF's
short-form ``generate`` then seeks into the window and decodes it again (at batch 8 that doubled the time per
token on an H200), which a trained checkpoint never does. ``--seek`` leaves generate's default on.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from transformers import WhisperForConditionalGeneration


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("model_dir")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--samples", type=int, default=15)
    ap.add_argument("--seek", action="store_true", help="let generate seek and decode the window again")
    args = ap.parse_args()
    dtype = getattr(torch, args.dtype)
    model = WhisperForConditionalGeneration.from_pretrained(args.model_dir, dtype=dtype).to(args.device).eval()
    mels = model.config.num_mel_bins
    x = torch.randn(args.batch, mels, 3000, dtype=dtype, device=args.device)

    def timed(n: int) -> float:
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        with torch.no_grad():
            model.generate(x, min_new_tokens=n, max_new_tokens=n, do_sample=False, num_beams=1,
                           force_unique_generate_call=not args.seek)
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        return time.perf_counter() - t0

    for _ in range(2):
        timed(args.tokens)
    per = [(timed(args.tokens) - timed(1)) / (args.tokens - 1) for _ in range(args.samples)]
    ms = statistics.median(per) * 1000
    print(f"plain generate: {args.model_dir} {args.device} {args.dtype} b{args.batch}: {ms:.2f} ms/token "
          f"({args.batch * 1000 / ms:.0f} tokens/s), samples {min(per) * 1000:.2f}–{max(per) * 1000:.2f} "
          f"({len(per)})")


if __name__ == "__main__":
    main()
