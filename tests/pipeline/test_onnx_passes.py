"""The ONNX passes on small graphs built here: what each rewrites, and that the result still runs."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _tied_head() -> tuple[object, np.ndarray]:
    """An embedding and an LM head sharing one table, exported as torch exports a tied head:
    ``MatMul(x, Transpose(table))`` beside ``Gather(table, ids)``."""
    from onnx import TensorProto, helper, numpy_helper

    table = np.random.default_rng(0).standard_normal((64, 16)).astype(np.float32)
    nodes = [helper.make_node("Gather", ["table", "ids"], ["x"]),
             helper.make_node("Transpose", ["table"], ["table_t"], perm=[1, 0]),
             helper.make_node("MatMul", ["x", "table_t"], ["logits"])]
    graph = helper.make_graph(nodes, "tied", [helper.make_tensor_value_info("ids", TensorProto.INT64, [1, 3])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 3, 64])],
                              initializer=[numpy_helper.from_array(table, "table")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), table


def test_int8_quantizes_a_tied_head_through_its_transpose(tmp_path: Path) -> None:
    """The largest matmul of a decoder step (the LM head) has its weight behind a Transpose: the pass folds it
    into a constant, so the head runs on int8 weights too, and the embedding keeps reading its float table."""
    import onnxruntime as ort

    from qeffbuild.pipeline.onnx_passes import PASSES, int8_dynamic

    model, table = _tied_head()
    params = next(p for p in PASSES if p.name == "int8-dynamic").params
    said = int8_dynamic(model, dict(params), tmp_path)
    ops = [n.op_type for n in model.graph.node]  # type: ignore[attr-defined]
    assert "Transpose" not in ops and "MatMul" not in ops and "Gather" in ops, ops
    assert "1 of 1 MatMul/Gemm node(s) now run on int8 weights" in said and "1 transposed weight(s) folded" in said
    ids = np.array([[1, 5, 9]])
    got = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(  # type: ignore[attr-defined]
        None, {"ids": ids})[0]
    want = table[ids] @ table.T
    cos = (got * want).sum(-1) / np.linalg.norm(got, axis=-1) / np.linalg.norm(want, axis=-1)
    assert cos.min() > 0.99 and np.abs(got - want).max() > 0  # int8: close, not exact
