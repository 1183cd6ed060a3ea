"""The `inductor` backend on CPU (its CUDA path is in tests/test_gpu.py): the artifact is the program plus
Inductor's cache artifacts, and a session in a fresh process compiles from them to the eager answers."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from qeffbuild.backends.inductor import ARTIFACT, AUTOTUNED, _best_configs

slow = pytest.mark.slow


def _program(folder: Path) -> dict[str, np.ndarray]:
    import torch

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.GELU(), torch.nn.Linear(16, 4)).eval()
    x = torch.randn(2, 8)
    folder.mkdir()
    torch.export.save(torch.export.export(model, (x,)), folder / "program.pt2")
    (folder / "io.json").write_text(json.dumps({"inputs": {"x": "float32"}, "outputs": ["y"],
                                                "shapes": {"x": [2, 8]}, "call": "positional"}))
    with torch.no_grad():
        return {"x": x.numpy(), "y": model(x).numpy()}


@slow
def test_a_fresh_process_runs_the_compiled_program_from_its_artifacts(tmp_path: Path) -> None:
    options: dict[str, bool] = {}
    data = _program(tmp_path / "program")
    out = tmp_path / "compiled"
    out.mkdir()
    # the compile runs in its own process, as a build's worker does: Inductor's kernels depend on the
    # process's thread count, which earlier tests in this one may have changed
    build = ("import sys; from pathlib import Path; from qeffbuild.backends.inductor import compile_model\n"
             "from qeffbuild.core.steps import StepContext\n"
             "compile_model(StepContext('compile:inductor:t', {'device': 'cpu', 'options': json.loads(sys.argv[3])},"
             " {'program': Path(sys.argv[1])}, {}, Path(sys.argv[2])))")
    build = "import json\n" + build
    done = subprocess.run([sys.executable, "-c", build, str(tmp_path / "program"), str(out), json.dumps(options)],
                          capture_output=True,
                          text=True, env=_fresh_inductor_cache(tmp_path / "build"))
    assert done.returncode == 0, done.stderr[-2000:]
    assert (out / ARTIFACT).stat().st_size > 0 and json.loads((out / AUTOTUNED).read_text()) == {}
    meta = json.loads((out / "inductor.json").read_text())
    assert meta["shapes"] == {"x": [2, 8]} and meta["options"] == options
    np.save(tmp_path / "x.npy", data["x"])
    child = ("import sys, numpy as np; from pathlib import Path; from torch._dynamo.utils import counters\n"
             "from qeffbuild.backends.inductor import InductorSession\n"
             "s = InductorSession(Path(sys.argv[1]), 'cpu')\n"
             "np.save(sys.argv[3], s.run({'x': np.load(sys.argv[2])})[0])\n"
             "print(counters['inductor']['fxgraph_cache_hit'], counters['inductor']['fxgraph_cache_miss'])")
    done = subprocess.run([sys.executable, "-c", child, str(out), str(tmp_path / "x.npy"), str(tmp_path / "y.npy")],
                          capture_output=True, text=True, env=_fresh_inductor_cache(tmp_path))
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["1", "0"]  # Inductor compiled nothing: the graph came from the artifacts
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), data["y"], rtol=1e-5, atol=1e-6)


def _fresh_inductor_cache(tmp_path: Path) -> dict[str, str]:
    import os

    return {**os.environ, "TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "fresh-cache"), "OMP_NUM_THREADS": "2"}


def test_autotuning_results_are_kept_by_their_path_under_the_cache(tmp_path: Path) -> None:
    (tmp_path / "ab").mkdir()
    (tmp_path / "ab" / "kernel.best_config").write_text('{"XBLOCK": 128}')
    (tmp_path / "ab" / "kernel.py").write_text("# not a config")
    assert _best_configs(tmp_path) == {"ab/kernel.best_config": '{"XBLOCK": 128}'}


def test_autotuning_results_are_restored_inside_the_cache_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from qeffbuild.backends.inductor import _restore_best_configs

    cache = tmp_path / "cache"
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(cache))
    (tmp_path / AUTOTUNED).write_text(json.dumps({"ab/k.best_config": "{}", "../../escape.best_config": "{}"}))
    _restore_best_configs(tmp_path)
    assert (cache / "ab" / "k.best_config").read_text() == "{}"
    assert not list(tmp_path.parent.glob("escape*")) and not list(tmp_path.glob("escape*"))


def test_a_session_compiles_with_the_options_its_build_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """[specializations.X.inductor] options reach torch.compile in the session exactly as in the build (else the
    session would miss the saved graph and compile again); none set: the default mode, as before options."""
    import torch

    from qeffbuild.backends import inductor

    _program(tmp_path / "p")
    calls: list[dict[str, object]] = []
    monkeypatch.setattr(torch, "compile", lambda fn, **kw: calls.append(kw) or fn)
    inductor.InductorSession(tmp_path / "p", "cpu", artifacts=False)
    (tmp_path / "p" / inductor.TUNING).write_text(json.dumps(
        inductor.InductorOptions(coordinate_descent_tuning=True).compile_options()))
    inductor.InductorSession(tmp_path / "p", "cpu", artifacts=False)
    assert calls == [{"mode": "default", "fullgraph": True, "dynamic": False},
                     {"options": {"coordinate_descent_tuning": True}, "fullgraph": True, "dynamic": False}]
