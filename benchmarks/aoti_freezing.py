"""An `aoti` CPU package frozen and not, against the exported program run eagerly: one graph's call, 2 cores.

    qeffbuild build whisper-large-v3-dims-cpu-b1          # or any specialization with torch programs
    python benchmarks/aoti_freezing.py out/whisper-large-v3-dims-cpu-b1/transform-decoder [--calls 12]

The folder is a transform step's output (``program.pt2``, ``io.json``). The program is compiled as the `aoti`
compile step compiles it (re-exported at the io's shapes), once with Inductor's ``freezing`` (the weights folded
in and prepacked for oneDNN) and once without; each package is loaded and called with the same deterministic
inputs. Prints the median and best call, the package sizes, the rows of the graph's products and what the
compile step chooses (``aoti.freezing_for``: frozen unless every product has one row), and the largest
difference of each package's outputs from the eager program's.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any


def _median_best(fn: Any, calls: int) -> tuple[float, float]:
    times = []
    for _ in range(calls):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    times.sort()
    return times[len(times) // 2] * 1e3, times[0] * 1e3


def main() -> None:
    import torch

    from qeffbuild.backends.aoti import freezing_for, product_rows
    from qeffbuild.pipeline.torchutil import example_inputs, load_program

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folder", type=Path, help="a transform step's output: program.pt2 and io.json")
    ap.add_argument("--calls", type=int, default=12)
    args = ap.parse_args()
    io = json.loads((args.folder / "io.json").read_text())
    values = tuple(example_inputs(io["shapes"], io["inputs"]).values())
    with torch.no_grad():
        module = load_program(args.folder / "program.pt2").module()
        static = torch.export.export(module, values, strict=False)
        rows = sorted(set(product_rows(static)))
        print(f"{args.folder}: product rows {rows}; the compile step freezes: {freezing_for(static)}")
        expected = module(*values)
        median, best = _median_best(lambda: module(*values), args.calls)
        print(f"  {'eager (the exported program)':30s} {median:9.2f} ms (best {best:.2f})")
        for frozen in (True, False):
            with tempfile.TemporaryDirectory() as tmp:
                path = torch._inductor.aoti_compile_and_package(static, package_path=f"{tmp}/model.pt2",
                                                                inductor_configs={"freezing": frozen})
                size = Path(path).stat().st_size / 1e6
                runner = torch._inductor.aoti_load_package(path)
                got = runner(*values)
                err = max(float((a - b).abs().max()) for a, b in zip(got, expected, strict=True))
                median, best = _median_best(lambda runner=runner: runner(*values), args.calls)
                label = "aoti, frozen" if frozen else "aoti, not frozen"
                print(f"  {label:30s} {median:9.2f} ms (best {best:.2f})  package {size:,.0f} MB  "
                      f"max |diff| {err:.1e}")
                del runner


if __name__ == "__main__":
    main()
