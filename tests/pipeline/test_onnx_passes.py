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


def _attention_inputs_and_ffn(gelu_half: float = 0.5) -> object:
    """q/k/v projections of one tensor (k without a bias, as Whisper's), a fourth reader of that tensor whose
    product is also a graph output (never packed), and an FFN with the exact GELU exactly as torch.export writes
    it: ``Mul(x, Mul(0.5, Add(Erf(Div(x, √2)), 1)))``."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(1)
    w = {n: rng.standard_normal(s).astype(np.float32) for n, s in
         {"wq": (8, 8), "wk": (8, 8), "wv": (8, 4), "wo": (8, 8), "bq": (8,), "bv": (4,), "w1": (16, 12)}.items()}
    consts = {"sqrt2": np.float32(np.sqrt(2)), "one": np.float32(1), "half": np.float32(gelu_half)}
    nodes = [helper.make_node("MatMul", ["x", "wq"], ["q0"]), helper.make_node("Add", ["q0", "bq"], ["q"]),
             helper.make_node("MatMul", ["x", "wk"], ["k"]),
             helper.make_node("MatMul", ["x", "wv"], ["v0"]), helper.make_node("Add", ["bv", "v0"], ["v"]),
             helper.make_node("MatMul", ["x", "wo"], ["side"]),
             helper.make_node("Concat", ["q", "k"], ["qk"], axis=-1),
             helper.make_node("MatMul", ["qk", "w1"], ["h"]),
             helper.make_node("Div", ["h", "sqrt2"], ["h1"]), helper.make_node("Erf", ["h1"], ["h2"]),
             helper.make_node("Add", ["h2", "one"], ["h3"]), helper.make_node("Mul", ["half", "h3"], ["h4"]),
             helper.make_node("Mul", ["h", "h4"], ["y"])]
    out = [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in (("y", [2, 3, 12]), ("v", [2, 3, 4]),
                                                                       ("side", [2, 3, 8]))]
    graph = helper.make_graph(nodes, "block", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 8])], out,
                              initializer=[numpy_helper.from_array(a, n) for n, a in {**w, **consts}.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def _run(model: object, x: np.ndarray) -> list[np.ndarray]:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])  # type: ignore[attr-defined]
    return list(session.run(None, {"x": x}))


def test_ort_fusions_pack_the_projections_and_fuse_gelu_without_changing_an_answer(tmp_path: Path) -> None:
    import onnx

    from qeffbuild.pipeline.onnx_passes import ort_fusions

    model = _attention_inputs_and_ffn()
    x = np.random.default_rng(2).standard_normal((2, 3, 8)).astype(np.float32)
    want = _run(model, x)
    said = ort_fusions(model, {}, tmp_path)
    onnx.checker.check_model(model)  # type: ignore[arg-type]
    assert said == "3 linear layer(s) packed into 1 MatMul(s) (one Split each); 1 GELU(s) fused into " \
                   "com.microsoft.Gelu", said
    ops = [n.op_type for n in model.graph.node]  # type: ignore[attr-defined]
    assert ops.count("MatMul") == 3 and "Erf" not in ops and ops.count("Gelu") == 1 and ops.count("Split") == 1
    names = {t.name for t in model.graph.initializer}  # type: ignore[attr-defined]
    assert not names & {"wq", "wk", "wv", "bq", "bv", "sqrt2", "one", "half"} and {"wo", "w1"} <= names
    got = _run(model, x)
    np.testing.assert_array_equal(got[1], want[1])  # the Split hands back exactly v's columns
    np.testing.assert_array_equal(got[2], want[2])
    np.testing.assert_allclose(got[0], want[0], rtol=1e-5, atol=1e-5)


def test_a_look_alike_gelu_is_left_alone(tmp_path: Path) -> None:
    from qeffbuild.pipeline.onnx_passes import fuse_gelu

    model = _attention_inputs_and_ffn(gelu_half=0.6)
    assert fuse_gelu(model, {}, tmp_path) == "no exact GELU found"
    assert "Erf" in [n.op_type for n in model.graph.node]  # type: ignore[attr-defined]
