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


def test_every_session_of_a_process_shares_one_thread_pool(monkeypatch: pytest.MonkeyPatch) -> None:
    """Sessions called in turn (an embedding's graph per seq_len, an encoder then decoder steps) run on ONNX
    Runtime's global pool, made once; with a pool each, the session called last spun beside the one called now
    (`benchmarks/ort_thread_pools.py`: 2x slower in turn). The per-session way keeps its decoder rule."""
    import onnxruntime as ort

    from qeffbuild.backends import ort as backend

    made: list[tuple[int, int]] = []
    monkeypatch.setattr(ort, "set_global_thread_pool_sizes", lambda *sizes: made.append(sizes))
    monkeypatch.setattr(backend, "_pool_made", False)
    first, second = backend._session_options(ort, False), backend._session_options(ort, True)
    assert not first.use_per_session_threads and not second.use_per_session_threads
    assert made == [(0, 0)]  # ONNX Runtime's default size, set before the first session and only then
    with pytest.raises(RuntimeError):  # shared: no per-session rule is set
        second.get_session_config_entry("session.intra_op.allow_spinning")

    monkeypatch.setattr(backend, "SHARED_THREAD_POOL", False)
    decoder, encoder = backend._session_options(ort, True), backend._session_options(ort, False)
    assert decoder.use_per_session_threads
    assert decoder.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert encoder.use_per_session_threads and made == [(0, 0)]
