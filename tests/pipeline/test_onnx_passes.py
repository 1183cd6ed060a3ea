"""The ONNX passes on small graphs built here: what each rewrites, and that the result still runs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest


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


def _linear(opset: int) -> tuple[object, np.ndarray]:
    """One linear layer over [2, 6, 32] activations, ``MatMul(x, W) + b``, and its weight."""
    from onnx import TensorProto, helper, numpy_helper

    w = np.random.default_rng(5).standard_normal((32, 24)).astype(np.float32)
    nodes = [helper.make_node("MatMul", ["x", "w"], ["xw"], name="proj"), helper.make_node("Add", ["xw", "b"], ["y"])]
    graph = helper.make_graph(nodes, "linear", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 6, 32])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 6, 24])],
                              initializer=[numpy_helper.from_array(w, "w"),
                                           numpy_helper.from_array(np.ones(24, np.float32), "b")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)]), w


@pytest.mark.parametrize("opset", [17, 23])
def test_int8_per_token_scales_each_row_by_its_own_largest_value(tmp_path: Path, opset: int) -> None:
    """Per token, a row with an outlier channel (x100) costs only itself: the other rows keep int8's precision,
    where one scale for the whole tensor (ONNX Runtime's dynamic quantization) coarsens every row. The float
    weight is gone, and a row of zeros (padding) stays finite."""
    import onnxruntime as ort

    from qeffbuild.pipeline.onnx_passes import PASSES, int8_dynamic

    x = np.random.default_rng(6).standard_normal((2, 6, 32)).astype(np.float32)
    x[0, 1, 3] = 100.0  # one token's outlier
    x[1, 5] = 0.0  # a padding row
    errors = {}
    for activations in ("per-tensor", "per-token"):
        model, w = _linear(opset)
        params = {**next(p for p in PASSES if p.name == "int8-dynamic").params, "activations": activations}
        said = int8_dynamic(model, params, tmp_path)
        assert "1 of 1 MatMul/Gemm node(s) now run on int8 weights" in said, said
        names = {t.name for t in model.graph.initializer}  # type: ignore[attr-defined]
        assert "w" not in names and "MatMul" not in [n.op_type for n in model.graph.node]  # type: ignore[attr-defined]
        got = ort.InferenceSession(model.SerializeToString(),  # type: ignore[attr-defined]
                                   providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
        want = x @ w + 1
        assert np.isfinite(got).all()
        others = np.ones((2, 6), bool)
        others[0, 1] = False
        errors[activations] = float(np.abs(got - want)[others].max())
    assert errors["per-token"] < errors["per-tensor"] / 5, errors


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
    assert said == "3 linear layer(s) packed into 1 MatMul(s) (one Split each); no attention found; 1 GELU(s) " \
                   "fused into com.microsoft.Gelu; no state write found; no empty Pad found", said
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


def _state_write(slots: np.ndarray, position_shape: list[int] | None = None, reader: bool = False,
                 axis: int = 2) -> object:
    """A decode step's two state writes as torch.export writes RetainedLayer's:
    ``Where(Reshape(Equal(slots, position), [1, 1, -1, 1]), new, past)`` for a key and a value of 6 slots (on
    ``axis`` of [2, 3, 6, 4], or of [6, 2, 3, 4] … for another axis); ``reader``: a second node reads
    ``past_key_0`` (an attention over the old state)."""
    from onnx import TensorProto, helper, numpy_helper

    cache = [2, 3, 4]
    cache.insert(axis, 6)
    slot = [1 if k == axis else d for k, d in enumerate(cache)]
    target = [-1 if k == axis else 1 for k in range(4)]

    nodes = [helper.make_node("Equal", ["slots", "position"], ["eq"]),
             helper.make_node("Reshape", ["eq", "target"], ["write"])]
    inputs = [helper.make_tensor_value_info("position", TensorProto.INT64, position_shape or [])]
    outputs = []
    for kv in ("key", "value"):
        nodes.append(helper.make_node("Where", ["write", f"new_{kv}", f"past_{kv}_0"], [f"present_{kv}_0"]))
        inputs += [helper.make_tensor_value_info(f"new_{kv}", TensorProto.FLOAT, slot),
                   helper.make_tensor_value_info(f"past_{kv}_0", TensorProto.FLOAT, cache)]
        outputs.append(helper.make_tensor_value_info(f"present_{kv}_0", TensorProto.FLOAT, cache))
    if reader:
        nodes.append(helper.make_node("Neg", ["past_key_0"], ["old"]))
        outputs.append(helper.make_tensor_value_info("old", TensorProto.FLOAT, cache))
    graph = helper.make_graph(nodes, "write", inputs, outputs,
                              initializer=[numpy_helper.from_array(slots, "slots"),
                                           numpy_helper.from_array(np.array(target, np.int64), "target")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def _run_feeds(model: object, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.log_severity_level = 3
    session = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])  # type: ignore[attr-defined]
    return list(session.run(None, feeds))


@pytest.mark.parametrize("axis", [2, 0, 3])
def test_a_state_write_becomes_one_scatter_with_the_same_result_at_every_slot(tmp_path: Path, axis: int) -> None:
    """Where broadcast the one-slot update over the whole cache; ScatterND writes the slot. Every slot of
    the result is the same (bit for bit), at the first, a middle and the last position, whichever axis holds
    the slots (the first: the index is the position alone; the last: each update row is one value)."""
    import onnx

    from qeffbuild.pipeline.onnx_passes import in_place_state, scatter_state_writes

    model = _state_write(np.arange(6, dtype=np.int64), axis=axis)
    rng = np.random.default_rng(3)
    cache = [2, 3, 4]
    cache.insert(axis, 6)
    slot = [1 if k == axis else d for k, d in enumerate(cache)]
    feeds = {n: rng.standard_normal(s).astype(np.float32) for n, s in
             (("new_key", slot), ("new_value", slot), ("past_key_0", cache), ("past_value_0", cache))}
    want = {p: _run_feeds(model, {**feeds, "position": np.array(p)}) for p in (0, 2, 5)}
    assert in_place_state(model) == []  # a Where copies: nothing may share a buffer
    assert scatter_state_writes(model, {}, tmp_path) == "2 state write(s) as ScatterND"
    onnx.checker.check_model(model)  # type: ignore[arg-type]
    ops = [n.op_type for n in model.graph.node]  # type: ignore[attr-defined]
    assert ops.count("ScatterND") == 2 and "Where" not in ops and "Equal" not in ops, ops
    for p, expected in want.items():
        got = _run_feeds(model, {**feeds, "position": np.array(p)})
        for a, b in zip(got, expected, strict=True):
            np.testing.assert_array_equal(a, b)
        assert not np.array_equal(got[0], feeds["past_key_0"])  # the slot was written
    assert in_place_state(model) == [["past_key_0", "present_key_0"], ["past_value_0", "present_value_0"]]


def test_a_write_that_only_looks_like_a_state_write_is_left_alone(tmp_path: Path) -> None:
    from qeffbuild.pipeline.onnx_passes import scatter_state_writes

    shifted = _state_write(np.arange(1, 7, dtype=np.int64))  # slot i holds position i + 1: not the layout
    assert scatter_state_writes(shifted, {}, tmp_path) == "no state write found"
    many = _state_write(np.arange(6, dtype=np.int64), position_shape=[2])  # a position per row: not a scalar
    assert scatter_state_writes(many, {}, tmp_path) == "no state write found"


def test_a_state_read_elsewhere_is_not_updated_in_place(tmp_path: Path) -> None:
    """A node that reads the past beside the write would see the updated state if both shared a buffer."""
    from qeffbuild.pipeline.onnx_passes import in_place_state, scatter_state_writes

    model = _state_write(np.arange(6, dtype=np.int64), reader=True)
    assert scatter_state_writes(model, {}, tmp_path) == "2 state write(s) as ScatterND"
    assert in_place_state(model) == [["past_value_0", "present_value_0"]]


def _exported_attention(tmp_path: Path, masked: bool = True, scale: float | None = None,
                        fixed: bool = False, opset: int = 18, boolean: bool = False) -> Path:
    """A masked multi-head self-attention block (the shape of a BERT layer's), exported as the `export` step
    exports a program: torch.export with dynamic batch and length, then torch.onnx at opset 18. ``fixed``:
    exported at its example's shapes (2 × 5), the query scaled by 1/√D before its heads are split off and the
    attention left unscaled, as Whisper's encoder is exported. At opset 23 the exporter writes the attention as
    ONNX's own ``Attention`` op. ``boolean``: the mask is passed as booleans over [B, 1, S, S] (True: attend), as
    transformers' sdpa masks are."""
    import torch
    import torch.nn.functional as F

    class Block(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.q, self.k, self.v, self.o = (torch.nn.Linear(16, 16) for _ in range(4))

        def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
            b, s, _ = x.shape
            q = self.q(x) * 0.5 if fixed else self.q(x)
            q, k, v = (y.view(b, s, -1, 4).transpose(1, 2) for y in (q, self.k(x), self.v(x)))
            keep = mask[:, None, None, :].bool()
            bias = torch.where(keep, 0.0, torch.finfo(torch.float32).min) if masked else None
            if boolean:
                bias = keep.expand(b, 1, s, s)
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=1.0 if fixed else scale)
            return self.o(out.transpose(1, 2).reshape(b, s, -1))

    torch.manual_seed(0)
    x, mask = torch.randn(2, 5, 16), torch.ones(2, 5, dtype=torch.int64)
    dims = {0: torch.export.Dim("batch", max=64), 1: torch.export.Dim("seq", max=512)}
    program = torch.export.export(Block().eval(), (x, mask), dynamic_shapes=None if fixed else (dims, dims))
    path = tmp_path / "attention.onnx"
    torch.onnx.export(program, (x, mask), str(path), dynamo=True, opset_version=opset, input_names=["x", "mask"],
                      output_names=["y"], verbose=False)
    return path


def test_an_exported_attention_becomes_one_multi_head_attention_with_the_same_answers(tmp_path: Path) -> None:
    """torch.onnx's scaled_dot_product_attention (heads transposed out and back, the key transposed through two
    reshapes, q and k each scaled, a NaN guard after the softmax) becomes one com.microsoft.MultiHeadAttention
    reading the projections as they are; the answers stay those of the exported graph at other batch sizes and
    lengths, with rows padded out by the mask and a row masked entirely."""
    import onnx

    from qeffbuild.pipeline.onnx_passes import ort_fusions

    path = _exported_attention(tmp_path)
    model = onnx.load(str(path))
    rng = np.random.default_rng(3)
    cases = []
    for b, s in ((2, 5), (4, 16), (1, 1)):
        mask = np.ones((b, s), np.int64)
        mask[-1, s // 2 + 1:] = 0
        if b > 2:
            mask[1, :] = 0  # a padding row: every key masked
        cases.append({"x": rng.standard_normal((b, s, 16)).astype(np.float32), "mask": mask})
    want = [_run_feeds(model, feeds) for feeds in cases]
    said = ort_fusions(model, {}, tmp_path)
    onnx.checker.check_model(model)  # type: ignore[arg-type]
    assert "1 attention(s) fused into com.microsoft.MultiHeadAttention" in said, said
    ops = [n.op_type for n in model.graph.node]  # type: ignore[attr-defined]
    assert ops.count("MultiHeadAttention") == 1 and not {"Softmax", "Transpose", "IsNaN"} & set(ops), ops
    for feeds, expected in zip(cases, want, strict=True):
        np.testing.assert_allclose(_run_feeds(model, feeds)[0], expected[0], rtol=1e-5, atol=1e-6)


def test_an_unmasked_attention_with_its_own_scale_is_fused_with_that_scale(tmp_path: Path) -> None:
    import onnx

    from qeffbuild.pipeline.onnx_passes import fuse_attention

    model = onnx.load(str(_exported_attention(tmp_path, masked=False, scale=0.3)))
    feeds = {"x": np.random.default_rng(4).standard_normal((3, 7, 16)).astype(np.float32),
             "mask": np.ones((3, 7), np.int64)}
    want = _run_feeds(model, feeds)
    assert fuse_attention(model, {}, tmp_path) == "1 attention(s) fused into com.microsoft.MultiHeadAttention"
    attention = next(n for n in model.graph.node if n.op_type == "MultiHeadAttention")  # type: ignore[attr-defined]
    assert len(attention.input) == 3 and abs(next(a.f for a in attention.attribute if a.name == "scale") - 0.3) < 1e-6
    np.testing.assert_allclose(_run_feeds(model, feeds)[0], want[0], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(("masked", "opset"), [(False, 18), (True, 18), (False, 23)])
def test_an_attention_exported_at_fixed_shapes_is_fused_with_its_querys_scale(tmp_path: Path, masked: bool,
                                                                                opset: int) -> None:
    """At fixed shapes the exporter writes each reshape target as a constant (checked against its shape
    annotations instead) and a Reshape to the same shape after the attention; a query scaled before its heads
    are split off is read unscaled, the constant going into the kernel's scale. At opset 23 the attention is
    ONNX's one ``Attention`` op between the head transposes: the same kernel replaces it."""
    import onnx

    from qeffbuild.pipeline.onnx_passes import fuse_attention

    model = onnx.load(str(_exported_attention(tmp_path, masked=masked, fixed=True, opset=opset)))
    assert ("Attention" in [n.op_type for n in model.graph.node]) == (opset == 23)  # type: ignore[attr-defined]
    mask = np.ones((2, 5), np.int64)
    mask[1, 3:] = 0
    feeds = {"x": np.random.default_rng(5).standard_normal((2, 5, 16)).astype(np.float32), "mask": mask}
    want = _run_feeds(model, feeds)
    assert fuse_attention(model, {}, tmp_path) == "1 attention(s) fused into com.microsoft.MultiHeadAttention"
    onnx.checker.check_model(model)  # type: ignore[arg-type]
    ops = [n.op_type for n in model.graph.node]  # type: ignore[attr-defined]
    assert ops.count("MultiHeadAttention") == 1 and not {"Softmax", "Transpose", "Attention"} & set(ops), ops
    attention = next(n for n in model.graph.node if n.op_type == "MultiHeadAttention")  # type: ignore[attr-defined]
    assert abs(next(a.f for a in attention.attribute if a.name == "scale") - 0.5) < 1e-6
    assert "Mul" not in ops  # the query's scaling went into the kernel
    np.testing.assert_allclose(_run_feeds(model, feeds)[0], want[0], rtol=1e-5, atol=1e-6)


def test_onnx_attention_at_dynamic_shapes_takes_its_default_scale_and_keeps_a_boolean_mask(tmp_path: Path) -> None:
    """ONNX's ``Attention`` (opset 23) exported at dynamic batch and length without a ``scale`` attribute (its
    default is 1/√D) is fused with that scale, with the same answers at other shapes. With a boolean mask it is
    left alone: a row whose keys are all masked gives zeros there (as PyTorch's SDPA), and MultiHeadAttention
    cannot."""
    import onnx

    from qeffbuild.pipeline.onnx_passes import fuse_attention

    model = onnx.load(str(_exported_attention(tmp_path, masked=False, opset=23)))
    rng = np.random.default_rng(6)
    cases = [{"x": rng.standard_normal((b, s, 16)).astype(np.float32), "mask": np.ones((b, s), np.int64)}
             for b, s in ((2, 5), (4, 16))]
    want = [_run_feeds(model, feeds) for feeds in cases]
    assert fuse_attention(model, {}, tmp_path) == "1 attention(s) fused into com.microsoft.MultiHeadAttention"
    attention = next(n for n in model.graph.node if n.op_type == "MultiHeadAttention")  # type: ignore[attr-defined]
    assert abs(next(a.f for a in attention.attribute if a.name == "scale") - 0.5) < 1e-6  # 1/√4
    for feeds, expected in zip(cases, want, strict=True):
        np.testing.assert_allclose(_run_feeds(model, feeds)[0], expected[0], rtol=1e-5, atol=1e-6)

    masked = onnx.load(str(_exported_attention(tmp_path, opset=23, boolean=True)))
    assert fuse_attention(masked, {}, tmp_path) == "no attention found"


def test_a_fixed_shape_reshape_that_does_not_split_heads_is_left_alone(tmp_path: Path) -> None:
    """The shape annotations decide at fixed shapes: a head split whose annotated shape does not keep [B, S] is
    not an attention's."""
    import onnx

    from qeffbuild.pipeline.onnx_passes import fuse_attention

    model = onnx.load(str(_exported_attention(tmp_path, masked=False, fixed=True)))
    value = next(v for v in model.graph.value_info  # type: ignore[attr-defined]
                 if [d.dim_value for d in v.type.tensor_type.shape.dim] == [2, 5, 4, 4])
    value.type.tensor_type.shape.dim[1].dim_value = 4  # as if the reshape had moved rows across the batch
    assert fuse_attention(model, {}, tmp_path) == "no attention found"


def test_an_attention_whose_heads_do_not_split_the_projection_is_left_alone(tmp_path: Path) -> None:
    """A graph that only looks like an attention (here the softmax runs over another axis) keeps its nodes."""
    import onnx

    from qeffbuild.pipeline.onnx_passes import fuse_attention

    model = onnx.load(str(_exported_attention(tmp_path)))
    softmax = next(n for n in model.graph.node if n.op_type == "Softmax")  # type: ignore[attr-defined]
    next(a for a in softmax.attribute if a.name == "axis").i = 2
    assert fuse_attention(model, {}, tmp_path) == "no attention found"
    assert "Softmax" in [n.op_type for n in model.graph.node]  # type: ignore[attr-defined]


def test_a_pad_of_nothing_is_dropped_and_a_real_pad_kept(tmp_path: Path) -> None:
    """A speech encoder pads its cross-attention keys to the decoder's encoder length, which is often their own:
    a Pad of zeros copies its input, so its producer writes the Pad's output (a graph output here) instead. A Pad
    that pads, and one whose input is a graph input, stay; the answers do not change."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from qeffbuild.pipeline.onnx_passes import drop_empty_pads

    zeros, some = np.zeros(6, np.int64), np.array([0, 0, 0, 0, 2, 0], np.int64)
    nodes = [helper.make_node("Transpose", ["x"], ["t"], perm=[0, 2, 1]),
             helper.make_node("Pad", ["t", "zeros"], ["keys"]),
             helper.make_node("Transpose", ["x"], ["u"], perm=[0, 2, 1]),
             helper.make_node("Pad", ["u", "some"], ["values"]),
             helper.make_node("Pad", ["x", "zeros"], ["copy"])]
    graph = helper.make_graph(nodes, "pads", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4])],
                              [helper.make_tensor_value_info(n, TensorProto.FLOAT, shape) for n, shape in
                               (("keys", [1, 4, 3]), ("values", [1, 6, 3]), ("copy", [1, 3, 4]))],
                              initializer=[numpy_helper.from_array(zeros, "zeros"), numpy_helper.from_array(some,
                                                                                                           "some")],
                              value_info=[helper.make_tensor_value_info("t", TensorProto.FLOAT, [1, 4, 3])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    feeds = {"x": np.random.default_rng(7).standard_normal((1, 3, 4)).astype(np.float32)}
    want = _run_feeds(model, feeds)
    assert drop_empty_pads(model, {}, tmp_path) == "1 empty Pad(s) dropped"
    onnx.checker.check_model(model)
    assert [n.op_type for n in model.graph.node] == ["Transpose", "Transpose", "Pad", "Pad"]
    assert model.graph.node[0].output[0] == "keys" and not model.graph.value_info  # no note of a name gone
    for got, expected in zip(_run_feeds(model, feeds), want, strict=True):
        np.testing.assert_array_equal(got, expected)


def linear_with_external_data(folder: Path) -> tuple[Path, np.ndarray]:
    """``_linear``'s model saved with its weights in ``model.onnx.data``, kept as the store keeps its files: hard-
    linked (a tree's file and its blob are one inode), so the data file has two links."""
    import os

    import onnx

    model, w = _linear(17)
    folder.mkdir(parents=True)
    onnx.save_model(model, str(folder / "model.onnx"), save_as_external_data=True, all_tensors_to_one_file=True,
                    location="model.onnx.data", size_threshold=0)
    os.link(folder / "model.onnx.data", folder.parent / f"{folder.name}-blob")
    (folder / "io.json").write_text('{"inputs": {"x": "float32"}, "outputs": ["y"], "shapes": {"x": [2, 6, 32]}}')
    return folder, w


def test_a_pass_reads_weights_the_store_keeps_hard_linked(tmp_path: Path) -> None:
    """onnx ≥ 1.20 refuses external data in a file with more than one hard link, and every file in the store has
    two: a model over 2 GiB failed its first pass. The passes read the data themselves, and the result computes
    what the model did."""
    import onnxruntime as ort

    from qeffbuild.core.steps import StepContext
    from qeffbuild.pipeline import onnx_passes

    src, w = linear_with_external_data(tmp_path / "src")
    assert (src / "model.onnx.data").stat().st_nlink == 2
    out = tmp_path / "out"
    out.mkdir()
    onnx_passes.run(StepContext("t", {"pass": "external-data", "pass_params": {"limit_bytes": 16}}, {"onnx": src},
                                {}, out))
    x = np.random.default_rng(1).standard_normal((2, 6, 32)).astype(np.float32)
    got = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.testing.assert_allclose(got, x @ w + 1, rtol=1e-5, atol=1e-5)
    assert (out / "model.onnx.data").stat().st_size == w.nbytes  # the bias (96 bytes) stays in the model


def test_external_data_that_is_outside_missing_or_short_is_a_clear_error(tmp_path: Path) -> None:
    """A location that leaves the model's folder (a planted ``../``), a data file that is gone, and one cut short
    each fail with the model's path, the tensor and what is wrong: never a read of another file, or a tensor
    silently filled with too few bytes."""
    import onnx

    from qeffbuild.errors import BuildError
    from qeffbuild.pipeline.onnx_passes import load_model

    src, _ = linear_with_external_data(tmp_path / "src")
    model = onnx.load(str(src / "model.onnx"), load_external_data=False)
    for tensor in model.graph.initializer:
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = "../src-blob"
    onnx.save_model(model, str(src / "planted.onnx"))
    with pytest.raises(BuildError, match=r"planted.onnx: tensor 'w' keeps its data at '../src-blob', outside"):
        load_model(src / "planted.onnx")
    data = (src / "model.onnx.data").read_bytes()
    (src / "model.onnx.data").write_bytes(data[:100])
    with pytest.raises(BuildError, match=r"model.onnx.data ends before tensor 'w'.*truncated"):
        load_model(src / "model.onnx")
    (src / "model.onnx.data").unlink()
    with pytest.raises(BuildError, match=r"cannot read the external data of tensor 'w' \(model.onnx.data\)"):
        load_model(src / "model.onnx")
