"""The GPU zoo's table for docs/gpu.md, from the bench JSON files and build logs `gpu-run.sh R zoo` writes.

    python scripts/zoo_table.py R          # reads R/bench-*.json and R/build-*.txt, prints markdown

One row per (specialization, runtime) a bench measured: ms per token (or per batch), throughput, the
roofline fraction (GPU rows), the speed-up over the baseline the bench put beside it, and each
validation's build time (load, transform, compile, validation: the `real` of `time`). A row the bench
could not measure says why.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any


def rows(results: Path) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for path in sorted(results.glob("bench-*.json")):
        try:
            data = json.loads(path.read_text())
        except ValueError:
            out.append({"runtime": "-", "specialization": path.stem.removeprefix("bench-"),
                        "unavailable": f"{path.name} is not JSON (the bench failed: see its .err)"})
            continue
        out.extend(data if isinstance(data, list) else data.get("rows", []))
    return out


def build_seconds(results: Path) -> dict[str, float]:
    """Validation name → seconds, from `time`'s `real` line (POSIX `real 123.45` or bash's `real 2m3.4s`)."""
    found = {}
    for path in sorted(results.glob("build-*.txt")):
        text = path.read_text(errors="replace")
        if m := re.search(r"^real\s+(\d+)m([\d.]+)s", text, re.M):
            found[path.stem.removeprefix("build-")] = int(m[1]) * 60 + float(m[2])
        elif m := re.search(r"^real\s+([\d.]+)", text, re.M) or re.search(r"([\d:.]+)elapsed", text):
            value = m[1]
            parts = [float(p) for p in value.split(":")]
            found[path.stem.removeprefix("build-")] = sum(p * 60 ** i for i, p in enumerate(reversed(parts)))
    return found


def cell(row: dict[str, Any]) -> list[str]:
    if "unavailable" in row:
        return [row.get("specialization", "-"), str(row.get("batch_size", "-")), row.get("dtype", "-"),
                row["runtime"], f"not measured: {row['unavailable']}", "", "", "", ""]
    per = "token" if row.get("unit") == "tokens" else "batch"
    speedup = row.get("speedup_per_token_vs_generate") or row.get("speedup_vs_baseline") or \
        row.get("speedup_vs_sentence_transformers")
    roof = f"{100 * row['roofline_frac']:.0f} %" if "roofline_frac" in row else ""
    utts = f"{row['utterances_per_s']:.2f}" if "utterances_per_s" in row else ""
    return [row.get("specialization", "-"), str(row.get("batch_size", "-")), row.get("dtype", "-"), row["runtime"],
            f"{row['p50_ms']:.2f} ms/{per}", f"{row.get('throughput_per_s', 0):,.0f} {row.get('unit', '')}/s",
            roof, f"×{speedup:.2f}" if speedup else "", utts]


def main() -> None:
    if len(sys.argv) != 2 or not Path(sys.argv[1]).is_dir():
        sys.exit("usage: python scripts/zoo_table.py RESULTS_DIR (the folder `sh scripts/gpu-run.sh R zoo` wrote)")
    results = Path(sys.argv[1])
    found = rows(results)
    if not found:
        sys.exit(f"{results} holds no bench-*.json: run `sh scripts/gpu-run.sh {results} zoo` on a GPU host first")
    head = ["specialization", "batch", "dtype", "runtime", "p50", "throughput", "roofline", "vs baseline",
            "utterances/s"]
    print("| " + " | ".join(head) + " |")
    print("|" + " --- |" * len(head))
    for row in found:
        print("| " + " | ".join(cell(row)) + " |")
    builds = build_seconds(results)
    if builds:
        print()
        print("Build and validation time: " + ", ".join(f"{name} {s:.0f} s" for name, s in builds.items()))


if __name__ == "__main__":
    main()
