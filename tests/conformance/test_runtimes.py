"""Runtime conformance: every runtime that opens an artifact runs the same tiny model the same way.

One tiny two-input module is exported, converted to ONNX and compiled by every backend that can
run here (through the real pipeline steps); each runtime then takes named numpy inputs and must
return one float32 output per declared output name, equal to eager PyTorch.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from qeffbuild.core.plugins import plugins
from qeffbuild.core.steps import StepContext
from qeffbuild.runtimes import open_session

SHAPES = {"x": [2, 4], "scale": [2, 1]}
pytestmark = pytest.mark.slow


def _module() -> Any:
    import torch

    class Tiny(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(0)
            self.lin = torch.nn.Linear(4, 3)

        def forward(self, x: Any, scale: Any) -> Any:
            return torch.tanh(self.lin(x)) * scale

    return Tiny().eval()


def _ctx(out: Path, params: dict[str, Any], **inputs: Path) -> StepContext:
    out.mkdir(parents=True)
    return StepContext("test", params, dict(inputs), {}, out)


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    import torch

    from qeffbuild.pipeline import compile as compile_step
    from qeffbuild.pipeline import export as export_step

    root = tmp_path_factory.mktemp("conformance")
    program = root / "program"
    program.mkdir()
    example = {"x": torch.randn(*SHAPES["x"]), "scale": torch.ones(*SHAPES["scale"])}
    torch.export.save(torch.export.export(_module(), (), example, strict=False), program / "program.pt2")
    (program / "io.json").write_text(json.dumps({"inputs": {"x": "float32", "scale": "float32"}, "outputs": ["y"],
                                                 "shapes": SHAPES, "dtype": "float32"}))
    folders = {"program": program}
    export_step.run(_ctx(root / "onnx", {"opset": 18}, program=program))
    for backend in plugins().backends.values():
        name = backend.name
        if backend.unavailable("cpu") is not None or not backend.session:  # a bundle is not run
            continue
        upstream = {"onnx": root / "onnx"} if backend.consumes == "onnx" else {"program": program}
        compile_step.run(_ctx(root / name, {"backend": name, "device": "cpu", "dtype": "float32", "shapes": SHAPES},
                              **upstream))
        folders[name] = root / name
    return folders


def _runtimes() -> list[str]:
    return [r.name for r in plugins().runtimes.values() if r.opens != "reference"]


@pytest.mark.parametrize("runtime", _runtimes())
def test_runtime_runs_named_inputs_to_named_float32_outputs(runtime: str, artifacts: dict[str, Path]) -> None:
    import torch

    opens = plugins().runtimes.get(runtime).opens
    if opens not in artifacts:
        pytest.skip(f"backend {opens!r} cannot run on this machine")
    folder = artifacts[opens]
    session = open_session(plugins(), runtime, folder)
    rng = np.random.default_rng(1)
    feeds = {"x": rng.normal(size=SHAPES["x"]).astype(np.float32), "scale": np.array([[2.0], [-1.0]], np.float32)}
    outputs = session.run(dict(reversed(list(feeds.items()))))  # feeds are matched by name, not position
    io = json.loads((folder / "io.json").read_text())
    assert len(outputs) == len(io["outputs"]) == 1
    (y,) = outputs
    assert y.dtype == np.float32 and y.shape == (2, 3)
    with torch.no_grad():
        expected = _module()(torch.from_numpy(feeds["x"]), torch.from_numpy(feeds["scale"])).numpy()
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-6)
    again = session.run({k: v.astype(np.float64) for k, v in feeds.items()})  # float64 feeds are cast, not refused
    np.testing.assert_allclose(again[0], y, rtol=1e-6, atol=1e-7)
