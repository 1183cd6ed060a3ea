"""The `ort` backend's compile step on models built here."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.pipeline.test_onnx_passes import linear_with_external_data


def test_a_model_over_protobufs_limit_compiles_with_its_weights_in_its_own_data_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Over protobuf's 2 GiB (whisper-large-v3's decoder in float32 is 3.2 GB) the compile step writes the weights
    to the artifact's own ``model.onnx.data``: saved in one protobuf the model cannot be written, and ONNX Runtime's
    optimized model would otherwise point at the step's temporary input. The limit is lowered here to the test
    model's size; its input's data file is hard-linked, as the store keeps it."""
    import onnx
    import onnxruntime as ort

    from qeffbuild.backends.ort import STATE_FILE, compile_model
    from qeffbuild.core.steps import StepContext
    from qeffbuild.pipeline import onnx_passes

    monkeypatch.setattr(onnx_passes, "PROTOBUF_LIMIT", 1024)
    src, w = linear_with_external_data(tmp_path / "src")
    out = tmp_path / "scratch" / "out"
    out.mkdir(parents=True)
    compile_model(StepContext("t", {"device": "cpu"}, {"onnx": src}, {}, out))
    assert sorted(p.name for p in out.iterdir()) == ["model.onnx", "model.onnx.data", STATE_FILE]
    assert sorted(p.name for p in out.parent.iterdir()) == ["out"]  # the temporary input is gone
    model = onnx.load(str(out / "model.onnx"), load_external_data=False)
    locations = {e.value for t in model.graph.initializer for e in t.external_data if e.key == "location"}
    assert locations == {"model.onnx.data"}
    x = np.random.default_rng(2).standard_normal((2, 6, 32)).astype(np.float32)
    got = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.testing.assert_allclose(got, x @ w + 1, rtol=1e-5, atol=1e-5)
    assert json.loads((out / STATE_FILE).read_text()) == {"in_place": []}


def test_a_compile_the_disk_cannot_hold_is_refused_before_it_writes(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """The compile writes its model twice (the shape-fixed input and the optimized output); where the disk has less
    room it stops first, saying how much it needs and has. ONNX Runtime's own failure ("Failed to write external
    initializers") names no cause, and its partial files are gone before the runner can see a full disk: a
    1.2 B-parameter model's compile failed so on a nearly full disk."""
    import shutil
    from collections import namedtuple

    from qeffbuild.backends.ort import compile_model
    from qeffbuild.core.steps import StepContext
    from qeffbuild.errors import BuildError

    src, _ = linear_with_external_data(tmp_path / "src")
    out = tmp_path / "scratch" / "out"
    out.mkdir(parents=True)
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(1 << 30, (1 << 30) - (100 << 20), 100 << 20))
    with pytest.raises(BuildError, match=r"writes about 0\.0 GB .* and 0\.1 GB are free on the disk of the cache"):
        compile_model(StepContext("t", {"device": "cpu"}, {"onnx": src}, {}, out))
    assert list(out.iterdir()) == []


def test_no_session_keeps_its_threads_spinning_after_a_call(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A process calls its sessions in turn (an embedding's graph per seq_len, an encoder then decoder steps): a
    session that spun on after its call took the cores from the next (`benchmarks/ort_thread_pools.py`: 2x slower in
    turn); one that never spins hands every operator to a parked thread. Each spins within a call and stops when it
    returns. Nor does one join ONNX Runtime's global pool, which would make every other session of the user's process
    fail to open. SPINNING restores the older rules, for that benchmark."""
    import time

    import onnxruntime as ort

    from qeffbuild.backends import ort as backend

    for retained in (False, True):
        so = backend._session_options(ort, retained)
        assert so.get_session_config_entry("session.intra_op.allow_spinning") == "1"
        assert so.get_session_config_entry("session.force_spinning_stop") == "1"
        assert so.use_per_session_threads
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [256, 256])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [256, 256])
    w = numpy_helper.from_array(np.full((256, 256), 1 / 256, np.float32), "w")
    nodes = [helper.make_node("MatMul", ["x" if i == 0 else f"h{i}", "w"], [f"h{i + 1}"]) for i in range(8)]
    nodes.append(helper.make_node("Relu", ["h8"], ["y"]))
    onnx.save(helper.make_model(helper.make_graph(nodes, "g", [x], [y], [w])), str(tmp_path / "m.onnx"))
    so.intra_op_num_threads = 2  # a worker thread beside the caller's, whatever the machine's cores
    ours = ort.InferenceSession(str(tmp_path / "m.onnx"), so, providers=["CPUExecutionProvider"])
    feed = {"x": np.ones((256, 256), np.float32)}
    got = ours.run(None, feed)[0]
    before = time.process_time()
    time.sleep(0.3)  # ONNX Runtime's default spins ~40 ms of CPU here after a call; a parked worker none
    assert time.process_time() - before < 0.02
    theirs = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])  # a user's own
    assert np.array_equal(got, theirs.run(None, feed)[0])
    monkeypatch.setattr(backend, "SPINNING", "unless-decoder")
    assert backend._session_options(ort, True).get_session_config_entry("session.intra_op.allow_spinning") == "0"
    with pytest.raises(RuntimeError):  # unset: ONNX Runtime's default, spinning
        backend._session_options(ort, False).get_session_config_entry("session.intra_op.allow_spinning")
    monkeypatch.setattr(backend, "SPINNING", "never")
    assert backend._session_options(ort, False).get_session_config_entry("session.intra_op.allow_spinning") == "0"


@pytest.mark.parametrize("fixed", [True, False])
def test_a_sessions_outputs_are_numpys_own_arrays(tmp_path: Path, fixed: bool) -> None:
    """ONNX Runtime's output buffers start 64 bytes into a page, where a batch-4 decoder step reading the encoder's
    outputs ran ~0.5 ms slower (`benchmarks/decoder_inputs.py`): a session of fixed-shape outputs has ONNX Runtime
    write them into arrays numpy allocated, one set a call, with the same values as its own run; a graph whose
    output shape is not fixed runs as before."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from qeffbuild.backends.ort import OrtSession

    shape: list[int | str] = [4, 300] if fixed else ["batch", 300]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)
    ids = helper.make_tensor_value_info("n", TensorProto.INT64, [1])
    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((300, 300)).astype(np.float32), "w")
    nodes = [helper.make_node("MatMul", ["x", "w"], ["y"]), helper.make_node("Shape", ["x"], ["s"]),
             helper.make_node("Slice", ["s", "zero", "one"], ["n"])]
    starts = [numpy_helper.from_array(np.array([0], np.int64), "zero"),
              numpy_helper.from_array(np.array([1], np.int64), "one")]
    folder = tmp_path / "graph"
    folder.mkdir()
    onnx.save(helper.make_model(helper.make_graph(nodes, "g", [x], [y, ids], [w, *starts])), str(folder / "model.onnx"))
    (folder / "io.json").write_text(json.dumps({"inputs": {"x": "float32"}, "outputs": ["y", "n"],
                                                "shapes": {"x": [4, 300]}}))
    session = OrtSession(folder)
    feed = {"x": np.random.default_rng(1).standard_normal((4, 300)).astype(np.float32)}
    first, second = session.run(feed), session.run(feed)
    theirs = session.sess.run(None, feed)
    for got, want in zip(first, theirs, strict=True):
        assert got.dtype == want.dtype and np.array_equal(got, want)
    assert (first[0].base is None and first[0] is not second[0]) == fixed  # numpy's own, a new one a call
