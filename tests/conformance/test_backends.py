"""Backend and ONNX-pass conformance: every registered one is well formed, plans without heavy imports,
and (for passes) leaves a model's numbers alone where it has nothing to change."""

from __future__ import annotations

import json
from pathlib import Path
from typing import get_args

import numpy as np
import pytest

from qeffbuild.core.plugins import Backend, load_attr, plugins
from qeffbuild.core.tables import Dtype, Table
from qeffbuild.templating import shipped_templates

BACKENDS = plugins().backends.names()
PASSES = plugins().onnx_passes.names()


@pytest.mark.parametrize("name", BACKENDS)
def test_backend_is_well_formed(name: str) -> None:
    b = plugins().backends.get(name)
    assert isinstance(b, Backend) and b.name == name and b.description
    assert b.consumes in ("onnx", "program") and b.devices and b.version >= 1
    for device in b.devices:
        why = b.unavailable(device)
        assert why is None or (isinstance(why, str) and why)  # a reason a user can act on, never ""
    assert callable(load_attr(b.compile))
    if b.session:
        assert callable(load_attr(b.session))
    for runtime in b.runtimes:
        assert plugins().runtimes.get(runtime.name).opens == name
    if b.options is not None:
        assert issubclass(b.options, Table)
        b.options.model_validate({})  # every option has a default: the sub-table is optional
    if b.builds_on is not None:
        assert plugins().backends.get(b.builds_on).consumes == b.consumes
    for p in b.onnx_passes:
        assert p in plugins().onnx_passes
    for template in b.templates:
        assert (shipped_templates() / template).is_file()
    for dtype, why in b.refused_dtypes.items():
        assert dtype in get_args(Dtype) and why


def _tiny_onnx(folder: Path) -> Path:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.linspace(-3, 3, 12, dtype=np.float32).reshape(3, 4), "w")
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])], [w])
    folder.mkdir()
    onnx.save_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(folder / "model.onnx"))
    (folder / "io.json").write_text(json.dumps({"inputs": {"x": "float32"}, "outputs": ["y"]}))
    return folder


@pytest.mark.parametrize("name", PASSES)
def test_onnx_pass_keeps_an_ordinary_model_numerically_identical(name: str, tmp_path: Path) -> None:
    import onnxruntime as ort

    from qeffbuild.core.steps import StepContext
    from qeffbuild.pipeline import onnx_passes

    p = plugins().onnx_passes.get(name)
    assert p.version >= 1 and p.description and callable(load_attr(p.apply))
    src = _tiny_onnx(tmp_path / "src")
    out = tmp_path / "out"
    out.mkdir()
    onnx_passes.run(StepContext("t", {"pass": name, "pass_params": dict(p.params)}, {"onnx": src}, {}, out))
    assert json.loads((out / "io.json").read_text()) == json.loads((src / "io.json").read_text())
    record = json.loads((out / "pass.json").read_text())
    assert record["pass"] == name and record["summary"]
    x = np.random.default_rng(0).normal(size=(2, 3)).astype(np.float32)
    before = ort.InferenceSession(str(src / "model.onnx")).run(None, {"x": x})[0]
    after = ort.InferenceSession(str(out / "model.onnx")).run(None, {"x": x})[0]
    if p.exact:
        np.testing.assert_array_equal(before, after)
    else:  # a lossy pass (quantization): close, not equal; its real bound is the family's validation
        scale = float(np.abs(before).max())
        assert float(np.abs(before - after).max()) <= 0.05 * scale, (before, after)
