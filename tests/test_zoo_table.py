"""scripts/zoo_table.py: the GPU zoo's bench JSON and build logs become docs/gpu.md's table."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from .helpers import REPO


def test_the_table_has_every_row_and_each_builds_time(tmp_path: Path) -> None:
    speech = [{"runtime": "generate (HF, eager)", "specialization": "w-b1-float16", "dtype": "float16",
               "batch_size": 1, "p50_ms": 16.45, "throughput_per_s": 60.8, "unit": "tokens",
               "utterances_per_s": 0.43},
              {"runtime": "inductor", "specialization": "w-b1-float16", "dtype": "float16", "batch_size": 1,
               "p50_ms": 2.35, "throughput_per_s": 425.3, "unit": "tokens", "utterances_per_s": 2.29,
               "roofline_frac": 0.21, "speedup_per_token_vs_generate": 6.99},
              {"runtime": "inductor", "specialization": "w-b8-float16", "dtype": "float16", "batch_size": 8,
               "unavailable": "every sample took as long for 1 token as for 128"}]
    (tmp_path / "bench-w-parity.json").write_text(json.dumps(speech))
    (tmp_path / "bench-e-parity.json").write_text("Traceback ...")
    (tmp_path / "build-w-parity.txt").write_text("ok\n66.33user 8.77system 2:23.15elapsed 141%CPU\n")
    (tmp_path / "build-e-parity.txt").write_text("ok\nreal\t1m5.50s\nuser\t0m1s\n")
    done = subprocess.run([sys.executable, str(REPO / "scripts" / "zoo_table.py"), str(tmp_path)],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert "| w-b1-float16 | 1 | float16 | inductor | 2.35 ms/token | 425 tokens/s | 21 % | ×6.99 | 2.29 |" in lines
    assert any("w-b8-float16" in line and "not measured: every sample" in line for line in lines)
    assert any("bench-e-parity.json is not JSON" in line for line in lines)
    assert lines[-1] == "Build and validation time: e-parity 66 s, w-parity 143 s"


def test_an_empty_results_folder_says_what_to_run(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, str(REPO / "scripts" / "zoo_table.py"), str(tmp_path)],
                          capture_output=True, text=True)
    assert done.returncode == 1 and "gpu-run.sh" in done.stderr and "Traceback" not in done.stderr
