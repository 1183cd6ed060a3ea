"""ONNX passes: named, versioned rewrites a backend asks for between export and compile.

Each pass is its own cached step (kind ``onnx-pass``), keyed by its name, version and params,
so a backend that needs float16-safe constants shares that step with every specialization
of the same export. The module is imported at plan time (to register the passes): onnx and
numpy are imported inside the functions only.

    fp16-clip       float32 constants outside the float16 range are clipped to ±65504 (−inf is kept:
                    masks use it), as QEfficient's FP16ClipTransform does before `-convert-to-fp16`
    external-data   weights stored in one external data file when the model is over 2 GiB (protobuf's
                    limit), embedded otherwise
    int8-dynamic    ONNX Runtime's dynamic quantization: MatMul/Gemm weights stored int8 (symmetric, per
                    output channel), activations quantized per call — what `dtype = "int8"` means for
                    `ort`. Down-projections (a weight with at least twice as many inputs as outputs: the
                    FFN's second layer, fed by the activation function's outliers) stay float32: on the
                    real all-MiniLM-L6-v2 that lifts the lowest sentence cosine from 0.981 to 0.990.
                    A transposed weight (a tied LM head) is folded into a constant first, so it is
                    quantized too (version 2). With ``activations = "per-token"`` (the `ort` option
                    ``int8_activations``) each MatMul is rewritten here instead, each token's activations
                    scaled by its own largest value (:func:`_int8_per_token`)
    ort-fusions     what ONNX Runtime's own optimizer does not find in a torch.export graph (version 3):
                    - linear layers that read the same tensor (an attention block's query, key and value)
                      become one MatMul on their concatenated weights, one bias Add and a Split: one larger
                      GEMM instead of three small ones, and fewer nodes to walk (the Split hands back
                      exactly the columns each layer computed);
                    - the exact (erf) GELU as exported, x · 0.5 · (1 + erf(x / √2)) in five nodes, becomes
                      ONNX Runtime's one Gelu kernel (com.microsoft): ONNX Runtime's GeluFusion matches
                      another order of those nodes, so it never fired on our exports.
                    - a decode step's write of its key/value into the retained state, exported as
                      ``Where(slots == position, new, past)`` over the whole cache, becomes one
                      ScatterElements of the new slot (version 2): ONNX Runtime's broadcasting Where walked
                      every element of the cache, 8 % of a whisper-tiny decoder step at batch 4; one
                      ScatterND of the new slot's rows (version 4): ScatterElements computes an offset per
                      element, 35 µs a write at whisper-tiny b4 against ScatterND's ~4 (a row memcpy'd).
                    - an attention as torch.onnx exports scaled_dot_product_attention (~20 nodes: heads
                      transposed out and back, the key transposed through two reshapes, a NaN guard) becomes one
                      com.microsoft.MultiHeadAttention over the projections (version 3); also where the
                      graph was exported at fixed shapes, as a speech encoder is (version 5).
                    - a Pad of nothing (a speech encoder's cross-attention keys padded to the length they
                      have) is dropped, its input's producer writing its output (version 5).
                    On all-MiniLM-L6-v2 (b4 × seq 16, 2 cores): 253 nodes → 199 (v2) → 118 (v3).
"""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..core.plugins import OnnxPass, load_attr, plugins
from ..core.steps import StepContext

if TYPE_CHECKING:
    from ..core.plugins import Plugins

FP16_MAX = 65504.0
PROTOBUF_LIMIT = 2 * 1024**3
DATA_FILE = "model.onnx.data"

PASSES = (
    OnnxPass("fp16-clip", 1, "clip float32 constants to the float16 range, keeping -inf",
             "qeffbuild.pipeline.onnx_passes:fp16_clip"),
    OnnxPass("external-data", 1, "weights in an external data file when the model is over 2 GiB",
             "qeffbuild.pipeline.onnx_passes:external_data", {"limit_bytes": PROTOBUF_LIMIT}),
    OnnxPass("ort-fusions", 5, "linear layers reading one tensor packed into one MatMul; an exported attention as "
             "one MultiHeadAttention; exact GELU as one ONNX Runtime Gelu; a decode step's state write as one "
             "ScatterND; a Pad of nothing dropped",
             "qeffbuild.pipeline.onnx_passes:ort_fusions"),
    OnnxPass("int8-dynamic", 2, "int8 weights of MatMul/Gemm, activations quantized at run time (ONNX Runtime)",
             "qeffbuild.pipeline.onnx_passes:int8_dynamic",
             {"ops": ["MatMul", "Gemm"], "per_channel": True, "keep_float": "down-projections"}, exact=False),
)


def register(registry: Plugins) -> None:
    for p in PASSES:
        registry.onnx_passes.add(p.name, p)


# --- the passes -------------------------------------------------------------------------------


def all_tensors(model: Any) -> Iterator[Any]:
    """Every TensorProto stored in the model: initializers and tensor attributes (Constant nodes),
    in the main graph, its subgraphs (If/Loop bodies) and its local functions."""

    def graph_tensors(graph: Any) -> Iterator[Any]:
        yield from graph.initializer
        for node in graph.node:
            yield from node_tensors(node)

    def node_tensors(node: Any) -> Iterator[Any]:
        for attr in node.attribute:
            if attr.HasField("t"):
                yield attr.t
            yield from attr.tensors
            if attr.HasField("g"):
                yield from graph_tensors(attr.g)
            for g in attr.graphs:
                yield from graph_tensors(g)

    yield from graph_tensors(model.graph)
    for function in model.functions:
        for node in function.node:
            yield from node_tensors(node)


def fp16_clip(model: Any, params: dict[str, Any], base_dir: Path) -> str:
    """Clip float32 constants to [-65504, 65504] so `-convert-to-fp16` makes no infinities; −inf stays
    (attention masks fill with it, and a clipped −inf would let masked positions leak through softmax)."""
    import numpy as np
    from onnx import TensorProto, numpy_helper

    changed = values = 0
    for tensor in all_tensors(model):
        if tensor.data_type != TensorProto.FLOAT:
            continue
        array = numpy_helper.to_array(tensor, str(base_dir))
        over = (array > FP16_MAX) | ((array < -FP16_MAX) & ~np.isneginf(array))
        if not over.any():
            continue
        clipped = np.where(np.isneginf(array), array, np.clip(array, -FP16_MAX, FP16_MAX)).astype(np.float32)
        tensor.CopyFrom(numpy_helper.from_array(clipped, tensor.name))
        changed += 1
        values += int(over.sum())
    return f"clipped {values} value(s) in {changed} float32 tensor(s) to the float16 range"


def int8_dynamic(model: Any, params: dict[str, Any], base_dir: Path) -> str:
    """``onnxruntime.quantization.quantize_dynamic`` on the model (through temporary files, as it reads paths)."""
    import tempfile

    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    folded = _fold_weight_transposes(model, base_dir)
    keep = _down_projections(model, params["ops"]) if params.get("keep_float") == "down-projections" else []
    if params.get("activations", "per-tensor") == "per-token":
        before = sum(1 for n in model.graph.node if n.op_type in params["ops"])
        done = _int8_per_token(model, set(keep), base_dir)
        return (f"{done} of {before} {'/'.join(params['ops'])} node(s) now run on int8 weights, activations scaled "
                f"per token; {len(keep)} down-projection(s) kept float32; {folded} transposed weight(s) folded first")
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "in.onnx", Path(tmp) / "out.onnx"
        onnx.save_model(model, str(src), save_as_external_data=model_bytes(model) > PROTOBUF_LIMIT,
                        all_tensors_to_one_file=True, location="in.onnx.data")
        quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8, op_types_to_quantize=list(params["ops"]),
                         per_channel=bool(params["per_channel"]), nodes_to_exclude=keep,
                         use_external_data_format=model_bytes(model) > PROTOBUF_LIMIT,
                         extra_options={"MatMulConstBOnly": True})
        quantized = onnx.load(str(dst), load_external_data=True)
    before = sum(1 for n in model.graph.node if n.op_type in params["ops"])
    model.CopyFrom(quantized)
    integer = sum(1 for n in model.graph.node if n.op_type in ("MatMulInteger", "DynamicQuantizeMatMul",
                                                               "MatMulIntegerToFloat", "QGemm"))
    return (f"{integer} of {before} {'/'.join(params['ops'])} node(s) now run on int8 weights; {len(keep)} "
            f"down-projection(s) kept float32; {folded} transposed weight(s) folded first")


def _int8_per_token(model: Any, keep: set[str], base_dir: Path) -> int:
    """Each ``MatMul(x, W)`` with a constant 2-D ``W`` (not in ``keep``) on int8 weights, symmetric per output
    column, and int8 activations with a scale per token (row of ``x``)::

        x2 = Reshape(x, [-1, K]);  s = max(ReduceMax(|x2|, 1) / 127, tiny)            # one scale a token
        q  = QuantizeLinear(x2, s, 128, axis=0)                                       # uint8, zero point 128
        y  = Reshape(MatMulIntegerToFloat(q, W_q, 1, w_scale, 128) · s[:, None], [*x.shape[:-1], N])

    ONNX Runtime's own dynamic quantization scales a whole activation tensor by its largest value, so one
    outlier channel coarsens every token; per token the real all-MiniLM-L6-v2 with every layer int8 keeps a
    min cosine of ~0.993 against float32 where per tensor gives 0.985 (docs/design-notes.md). Returns how many
    products it rewrote."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    opset = _opset(model)
    shared = [numpy_helper.from_array(np.array(v, dtype), f"int8_token.{name}") for name, v, dtype in
              (("one", 1.0, np.float32), ("zero_point", 128, np.uint8), ("inv127", 1 / 127, np.float32),
               ("tiny", 1e-30, np.float32), ("axis1", [1], np.int64), ("last", [-1], np.int64),
               ("start", [0], np.int64))]
    rewritten: dict[int, list[Any]] = {}
    replaced: set[str] = set()  # the float32 weights, dropped once nothing reads them
    for place, node in enumerate(graph.node):
        weight = inits.get(node.input[1]) if node.op_type == "MatMul" and len(node.input) == 2 else None
        if weight is None or len(weight.dims) != 2 or weight.data_type != TensorProto.FLOAT or \
                (node.name and node.name in keep):
            continue
        w = numpy_helper.to_array(weight, str(base_dir)).astype(np.float32)
        replaced.add(weight.name)
        k, n = w.shape
        w_scale = np.maximum(np.abs(w).max(axis=0), 1e-30) / 127
        p = f"int8_token.{place}"
        graph.initializer.extend([
            numpy_helper.from_array(np.clip(np.round(w / w_scale), -127, 127).astype(np.int8), f"{p}.w"),
            numpy_helper.from_array(w_scale.astype(np.float32), f"{p}.w_scale"),
            numpy_helper.from_array(np.array([-1, k], np.int64), f"{p}.rows"),
            numpy_helper.from_array(np.array([n], np.int64), f"{p}.n")])
        x, c = node.input[0], "int8_token."
        reduce = (helper.make_node("ReduceMax", [f"{p}.abs", c + "axis1"], [f"{p}.amax"], keepdims=0)
                  if opset >= 18 else helper.make_node("ReduceMax", [f"{p}.abs"], [f"{p}.amax"], axes=[1], keepdims=0))
        rewritten[place] = [
            helper.make_node("Reshape", [x, f"{p}.rows"], [f"{p}.x2"]),
            helper.make_node("Abs", [f"{p}.x2"], [f"{p}.abs"]), reduce,
            helper.make_node("Mul", [f"{p}.amax", c + "inv127"], [f"{p}.s0"]),
            helper.make_node("Max", [f"{p}.s0", c + "tiny"], [f"{p}.s"]),
            helper.make_node("Shape", [f"{p}.s"], [f"{p}.s_shape"]),
            helper.make_node("ConstantOfShape", [f"{p}.s_shape"], [f"{p}.zp"],
                             value=numpy_helper.from_array(np.array([128], np.uint8))),
            helper.make_node("QuantizeLinear", [f"{p}.x2", f"{p}.s", f"{p}.zp"], [f"{p}.q"], axis=0),
            helper.make_node("MatMulIntegerToFloat", [f"{p}.q", f"{p}.w", c + "one", f"{p}.w_scale",
                                                      c + "zero_point"], [f"{p}.y0"], domain="com.microsoft"),
            helper.make_node("Unsqueeze", [f"{p}.s", c + "axis1"], [f"{p}.s_col"]),
            helper.make_node("Mul", [f"{p}.y0", f"{p}.s_col"], [f"{p}.y1"]),
            helper.make_node("Shape", [x], [f"{p}.x_shape"]),
            helper.make_node("Slice", [f"{p}.x_shape", c + "start", c + "last"], [f"{p}.lead"]),
            helper.make_node("Concat", [f"{p}.lead", f"{p}.n"], [f"{p}.y_shape"], axis=0),
            helper.make_node("Reshape", [f"{p}.y1", f"{p}.y_shape"], list(node.output), name=node.name)]
    if rewritten:
        graph.initializer.extend(shared)
        nodes = [new for place, node in enumerate(graph.node) for new in rewritten.get(place, [node])]
        del graph.node[:]
        graph.node.extend(nodes)
        _drop_unread(graph, replaced)
        _use_microsoft_domain(model)
    return len(rewritten)


def ort_fusions(model: Any, params: dict[str, Any], base_dir: Path) -> str:
    """The `ort` backend's rewrites before ONNX Runtime optimizes the graph: :func:`pack_projections` (from
    opset 13, where Split takes its sizes as an input), :func:`fuse_attention` (from opset 15, where Shape
    takes start and end), :func:`fuse_gelu`, :func:`scatter_state_writes` and :func:`drop_empty_pads`."""
    opset = _opset(model)
    packed = pack_projections(model, params, base_dir) if opset >= 13 else f"opset {opset}: nothing packed"
    # after packing: an attention's q, k and v are then the packed projection's Split outputs
    attention = fuse_attention(model, params, base_dir) if opset >= 15 else f"opset {opset}: no attention fused"
    return (f"{packed}; {attention}; {fuse_gelu(model, params, base_dir)}; "
            f"{scatter_state_writes(model, params, base_dir)}; {drop_empty_pads(model, params, base_dir)}")


def drop_empty_pads(model: Any, params: dict[str, Any], base_dir: Path) -> str:
    """Remove each ``Pad`` that pads nothing (every amount 0, any mode: it only copies its input), its input's
    producer writing the Pad's output name instead (version 5). A speech encoder pads each decoder layer's
    cross-attention keys and values to the decoder's encoder length, which for Whisper is the length they have:
    8 copies of 2.3 MB a call at whisper-tiny's dims, 64 of 7.7 MB at whisper-large-v3's, which ONNX Runtime
    kept. A Pad whose input is a graph input or initializer, is read elsewhere or is a graph output stays."""
    import numpy as np

    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    producer = {out: node for node in graph.node for out in node.output}
    readers = _readers(graph)
    outputs = {o.name for o in graph.output}
    dropped: set[int] = set()
    renamed: set[str] = set()
    for pad in (n for n in graph.node if n.op_type == "Pad"):
        amounts = inits.get(pad.input[1]) if len(pad.input) > 1 else None
        values = _array(amounts, base_dir) if amounts is not None else np.asarray(_attr(pad, "pads", [1]))
        src = pad.input[0]
        node = producer.get(src)
        if values.size == 0 or np.any(values != 0) or node is None or src in outputs or len(readers[src]) != 1:
            continue
        node.output[list(node.output).index(src)] = pad.output[0]
        dropped.add(id(pad))
        renamed.add(src)
    if not dropped:
        return "no empty Pad found"
    nodes = [n for n in graph.node if id(n) not in dropped]
    del graph.node[:]
    graph.node.extend(nodes)
    annotations = [v for v in graph.value_info if v.name not in renamed]  # names no node makes any more
    del graph.value_info[:]
    graph.value_info.extend(annotations)
    return f"{len(dropped)} empty Pad(s) dropped"


def pack_projections(model: Any, params: dict[str, Any], base_dir: Path) -> str:
    """Pack the linear layers ``MatMul(x, W_i) (+ b_i)`` that read the same ``x`` (with the same input size)
    into ``MatMul(x, [W_1 … W_n]) + [b_1 … b_n]`` and a ``Split`` along the last axis into the original outputs
    (a layer without a bias, as Whisper's key projection, packs with zeros: x·W + 0 is x·W exactly). W must be a
    2-D float32 initializer; a bias is the one ``Add`` reading the product, of a 1-D float32 initializer. The
    packed nodes sit where the group's first MatMul was, so the graph stays in topological order (each layer
    reads ``x``, which exists there already, and each original output is only read after its own layer)."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    outputs = {o.name for o in graph.output}
    readers = _readers(graph)

    def weight(node: Any) -> Any:
        w = inits.get(node.input[1]) if node.op_type == "MatMul" and len(node.input) == 2 else None
        ok = w is not None and len(w.dims) == 2 and w.data_type == TensorProto.FLOAT and node.input[0] not in inits
        return w if ok and node.output[0] not in outputs else None

    def bias_of(node: Any, n_out: int) -> tuple[Any, str] | None:
        """The layer's bias ``Add`` and the bias's name, if it has one."""
        users = readers.get(node.output[0], [])
        if len(users) != 1 or users[0].op_type != "Add":
            return None
        name = next((i for i in users[0].input if i != node.output[0]), "")
        tensor = inits.get(name)
        ok = tensor is not None and list(tensor.dims) == [n_out] and tensor.data_type == TensorProto.FLOAT
        return (users[0], name) if ok else None

    groups: dict[tuple[str, int], list[tuple[Any, tuple[Any, str] | None]]] = {}
    for node in graph.node:
        w = weight(node)
        if w is not None:
            groups.setdefault((node.input[0], w.dims[0]), []).append((node, bias_of(node, w.dims[1])))
    packed_at: dict[int, list[Any]] = {}
    dropped: set[int] = set()
    replaced: set[str] = set()
    for n_group, members in enumerate(g for g in groups.values() if len(g) > 1):
        name = f"packed_projection_{n_group}"
        weights = [numpy_helper.to_array(inits[m.input[1]], str(base_dir)) for m, _ in members]
        biases = [numpy_helper.to_array(inits[b[1]], str(base_dir)) if b else np.zeros(w.shape[1], np.float32)
                  for (_, b), w in zip(members, weights, strict=True)]
        graph.initializer.extend([
            numpy_helper.from_array(np.concatenate(weights, axis=1), f"{name}.weight"),
            numpy_helper.from_array(np.array([w.shape[1] for w in weights], np.int64), f"{name}.sizes")])
        first = members[0][0]
        new = [helper.make_node("MatMul", [first.input[0], f"{name}.weight"], [f"{name}.product"], name=name)]
        packed = f"{name}.product"
        if any(b for _, b in members):
            graph.initializer.append(numpy_helper.from_array(np.concatenate(biases), f"{name}.bias"))
            new.append(helper.make_node("Add", [packed, f"{name}.bias"], [f"{name}.out"], name=f"{name}.add"))
            packed = f"{name}.out"
        layer_outputs = [b[0].output[0] if b else m.output[0] for m, b in members]
        new.append(helper.make_node("Split", [packed, f"{name}.sizes"], layer_outputs, axis=-1, name=f"{name}.split"))
        packed_at[id(first)] = new
        dropped.update(id(n) for m, b in members for n in (m, *(b[:1] if b else ())))
        replaced.update(n for m, b in members for n in (m.input[1], *(b[1:] if b else ())))
    nodes = [new for node in graph.node for new in (*packed_at.get(id(node), ()), node) if id(new) not in dropped]
    del graph.node[:]
    graph.node.extend(nodes)
    _drop_unread(graph, replaced)  # the separate weights and biases, now inside the packed ones
    layers = sum(len(g) for g in groups.values() if len(g) > 1)
    return f"{layers} linear layer(s) packed into {len(packed_at)} MatMul(s) (one Split each)"


def fuse_gelu(model: Any, params: dict[str, Any], base_dir: Path) -> str:
    """Replace ``Mul(x, Mul(0.5, Add(Erf(Div(x, √2)), 1)))`` (either operand order of each Mul and Add) by
    ``com.microsoft.Gelu(x)``. Each constant is checked by value, and every intermediate must have no other
    reader, so a graph that only looks similar is left alone."""
    import numpy as np
    from onnx import helper

    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    producer = {out: node for node in graph.node for out in node.output}
    readers = _readers(graph)

    def scalar(name: str) -> float | None:
        return _scalar(inits, name, base_dir)

    def only_reader(name: str, op: str) -> Any:
        users = readers.get(name, [])
        return users[0] if len(users) == 1 and users[0].op_type == op else None

    def other(node: Any, name: str) -> str:
        return next((i for i in node.input if i != name), "")

    fused: dict[int, Any] = {}
    dropped: set[int] = set()
    for erf in (n for n in graph.node if n.op_type == "Erf"):
        div = producer.get(erf.input[0])
        if div is None or div.op_type != "Div" or not np.isclose(scalar(div.input[1]) or 0.0, np.sqrt(2.0)) \
                or only_reader(div.output[0], "Erf") is None:
            continue
        x = div.input[0]
        add = only_reader(erf.output[0], "Add")
        if add is None or scalar(other(add, erf.output[0])) != 1.0:
            continue
        half = only_reader(add.output[0], "Mul")
        if half is None or scalar(other(half, add.output[0])) != 0.5:
            continue
        last = only_reader(half.output[0], "Mul")
        if last is None or other(last, half.output[0]) != x:
            continue
        fused[id(last)] = helper.make_node("Gelu", [x], [last.output[0]], domain="com.microsoft",
                                           name=f"{last.name or last.output[0]}.gelu")
        dropped.update(id(n) for n in (div, erf, add, half))
    if not fused:
        return "no exact GELU found"
    constants = {i for n in graph.node if id(n) in dropped for i in n.input if i in inits}
    nodes = [fused.get(id(n), n) for n in graph.node if id(n) not in dropped]
    del graph.node[:]
    graph.node.extend(nodes)
    _drop_unread(graph, constants)  # √2, 1 and 0.5, unless another node reads them
    _use_microsoft_domain(model)
    return f"{len(fused)} GELU(s) fused into com.microsoft.Gelu"


def scatter_state_writes(model: Any, params: dict[str, Any], base_dir: Path) -> str:
    """Replace a decode step's write of one slot, ``Where(Reshape(Equal(arange(L), position)), new, past)``
    (:class:`~qeffbuild.decoding.cache.RetainedLayer`: ``past`` a graph input of static shape with ``L`` slots
    on one axis, ``position`` a scalar graph input), by a ``ScatterND`` of that slot (:func:`_slot_index`).
    Where broadcasts the one-slot ``new`` over every slot of the cache element by element; the scatter copies
    ``past`` (nothing, where the session binds the output to the input's buffer: ``in_place_state``) and writes
    one slot. The result is the same tensor: every other slot keeps ``past``'s value and the slot at
    ``position`` takes ``new``'s. ``new`` is expanded to the slot's shape first, so a ``new`` that Where would
    have broadcast on another axis is written the same way. The arange is checked by value; anything else is
    left alone."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    producer = {out: node for node in graph.node for out in node.output}
    inputs = {i.name: i for i in graph.input}

    def static_shape(name: str) -> list[int] | None:
        value = inputs.get(name)
        dims = list(value.type.tensor_type.shape.dim) if value is not None else []
        return [d.dim_value for d in dims] if dims and all(d.dim_value > 0 for d in dims) else None

    def scalar_int64_input(name: str) -> bool:
        value = inputs.get(name)
        kind = value.type.tensor_type if value is not None else None
        return kind is not None and kind.elem_type == TensorProto.INT64 and kind.HasField("shape") \
            and len(kind.shape.dim) == 0

    def constant(name: str) -> Any:
        return numpy_helper.to_array(inits[name], str(base_dir)) if name in inits else None

    def slot_axis(where: Any) -> tuple[str, int, list[int]] | None:
        """(position, axis, past's shape) when ``where`` writes slot ``position`` of ``past``."""
        cond, _new, past = where.input
        shape, reshape = static_shape(past), producer.get(cond)
        if shape is None or reshape is None or reshape.op_type != "Reshape":
            return None
        equal, target = producer.get(reshape.input[0]), constant(reshape.input[1])
        if equal is None or equal.op_type != "Equal" or target is None or len(target) != len(shape):
            return None
        position = next((i for i in equal.input if scalar_int64_input(i)), None)
        slots = constant(next((i for i in equal.input if i != position), ""))
        axes = [k for k, t in enumerate(target.tolist()) if t != 1]
        if position is None or slots is None or len(axes) != 1:
            return None
        axis = axes[0]
        exact = slots.ndim == 1 and np.array_equal(slots, np.arange(shape[axis])) and target[axis] in (-1, shape[axis])
        return (position, axis, shape) if exact else None

    replaced: dict[int, list[Any]] = {}  # the new nodes of each Where, by its place in the graph
    shared: dict[tuple[str, int, tuple[int, ...]], tuple[str, str, str]] = {}  # per position and cache shape
    for place, where in enumerate(graph.node):
        if where.op_type != "Where":
            continue
        found = slot_axis(where)
        if found is None:
            continue
        position, axis, shape = found
        name, key = f"state_write_{len(replaced)}", (position, axis, tuple(shape))
        new_nodes = []
        if key not in shared:  # one index and update shape per position and cache shape, shared by its writes
            index_nodes, index_constants = _slot_index(name, position, axis, shape)
            shared[key] = (f"{name}.index", f"{name}.slot_shape", f"{name}.rows_shape")
            graph.initializer.extend(index_constants)
            new_nodes += index_nodes
        index, slot_shape, rows_shape = shared[key]
        new_nodes += [helper.make_node("Expand", [where.input[1], slot_shape], [f"{name}.slot"]),
                      helper.make_node("Reshape", [f"{name}.slot", rows_shape], [f"{name}.update"]),
                      helper.make_node("ScatterND", [where.input[2], index, f"{name}.update"],
                                       list(where.output), name=name)]
        replaced[place] = new_nodes
    if not replaced:
        return "no state write found"
    nodes = [new for place, node in enumerate(graph.node) for new in replaced.get(place, [node])]
    del graph.node[:]
    graph.node.extend(nodes)
    _drop_dead_nodes(graph)  # the Equal and Reshape that only fed the Wheres
    return f"{len(replaced)} state write(s) as ScatterND"


def _slot_index(name: str, position: str, axis: int, shape: list[int]) -> tuple[list[Any], list[Any]]:
    """The nodes and constants of a ScatterND index that writes slot ``position`` (a scalar int64 input) on
    ``axis`` of a cache of ``shape``: ``index[i_0, …, i_{axis-1}] = (i_0, …, i_{axis-1}, position)``, so each
    update is a whole row of the axes after ``axis`` (ScatterND copies it in one piece). Outputs
    ``{name}.index``, and the constants ``{name}.slot_shape`` (the slot: ``shape`` with 1 on ``axis``) and
    ``{name}.rows_shape`` (the update: ``shape`` without ``axis``)."""
    import numpy as np
    from onnx import helper, numpy_helper

    lead, rows = shape[:axis], shape[:axis] + shape[axis + 1:]
    inits = [numpy_helper.from_array(np.array([1 if k == axis else d for k, d in enumerate(shape)], np.int64),
                                     f"{name}.slot_shape"),
             numpy_helper.from_array(np.array(rows, np.int64), f"{name}.rows_shape"),
             numpy_helper.from_array(np.ones(len(lead) + 1, np.int64), f"{name}.ones")]
    nodes = [helper.make_node("Reshape", [position, f"{name}.ones"], [f"{name}.position"])]
    if not lead:  # the slot axis comes first: the index is the position alone, [1]
        nodes[0].output[0] = f"{name}.index"
        return nodes, inits
    inits.append(numpy_helper.from_array(np.array([*lead, 1], np.int64), f"{name}.position_shape"))
    nodes.append(helper.make_node("Expand", [f"{name}.position", f"{name}.position_shape"], [f"{name}.positions"]))
    grid = np.stack(np.meshgrid(*(np.arange(d) for d in lead), indexing="ij"), axis=-1).astype(np.int64)
    inits.append(numpy_helper.from_array(grid, f"{name}.lead"))
    nodes.append(helper.make_node("Concat", [f"{name}.lead", f"{name}.positions"], [f"{name}.index"], axis=-1))
    return nodes, inits


def fuse_attention(model: Any, params: dict[str, Any], base_dir: Path) -> str:
    """Replace each self- or cross-attention over 3-D projections, as torch.export's ONNX exporter writes
    ``scaled_dot_product_attention``, by ``com.microsoft.MultiHeadAttention(q, k, v)`` (version 3). The pattern,
    from the output back (:class:`_Sdpa` checks each link)::

        Reshape(Transpose[0,2,1,3](MatMul(P, heads(v))), target)
        P      = Softmax[-1](S) | Where(IsNaN(Softmax[-1](S)), 0, Softmax[-1](S))
        S      = MatMul(Mul(heads(q), a), Mul(keys_t, b)) [+ bias]
        heads(x) = Transpose[0,2,1,3](Reshape(x, [B, S, -1 | N, D]))     x: [B, S, N·D]
        keys_t = heads(k) with its last two axes swapped (Reshape → Transpose[0,2,1] → Reshape)

    becomes ``Reshape(MultiHeadAttention(q, k, v, attention_bias=bias), target)`` with ``num_heads`` N and
    ``scale`` a·b: the kernel reads q, k and v in their [B, S, N·D] layout, so every head transpose, the
    key transpose's two reshapes, the two scalings and the NaN guard go, and one kernel does per head what the
    exported graph did in ~20 nodes. The final Reshape stays (it reads the same row-major values either way).
    A bias is broadcast to [B, 1, S, S_kv] (the kernel broadcasts only its first two axes); the NaN guard is
    dropped only where the bias is made by a ``Where`` of finite constants (a masked row then has finite
    scores and no NaN to guard: ``transformers`` masks with the float minimum, not −inf). On the real
    all-MiniLM-L6-v2: 199 nodes → 118 at b4 × seq 16.

    A graph exported at fixed shapes (version 5: a speech encoder's 30 s window) writes every reshape target as
    a constant and a no-op Reshape after ``MatMul(P, heads(v))``; there each link is checked against the
    exporter's shape annotations instead, and a query (or key) scaled by a constant before its heads are split
    off (``Mul(q_proj(x), 1/√D)``, as Whisper writes it) is read unscaled, the constant going into ``scale``.
    whisper-tiny's encoder: 4 attentions, 138 → 94 compiled nodes, 227 → 217 ms a window on 2 cores (int8: 137
    → 127), the old and new compiled encoders in turn (``benchmarks/ort_in_turn.py``)."""
    from onnx import helper, numpy_helper

    graph = model.graph
    sdpa = _Sdpa(graph, base_dir)
    fused: dict[int, list[Any]] = {}
    expanded: dict[str, str] = {}
    for out in (n for n in graph.node if n.op_type == "Reshape"):
        found = sdpa.match(out)
        if found is None:
            continue
        q, k, v, heads, scale, bias = found
        name = f"attention_{len(fused)}"
        nodes = []
        if bias and bias not in expanded:  # one broadcast per mask, shared by every layer that adds it
            nodes += sdpa.expand_bias(bias, q, name)
            expanded[bias] = f"{name}.bias"
        bias = expanded.get(bias, "")
        nodes.append(helper.make_node("MultiHeadAttention", [q, k, v, "", "", bias] if bias else [q, k, v],
                                      [f"{name}.out"], domain="com.microsoft", num_heads=heads, scale=scale,
                                      name=name))
        nodes.append(helper.make_node("Reshape", [f"{name}.out", out.input[1]], list(out.output),
                                      name=f"{name}.reshape"))
        fused[id(out)] = nodes
    if not fused:
        return "no attention found"
    graph.initializer.extend(numpy_helper.from_array(a, n) for n, a in sdpa.constants.items())
    nodes = [new for node in graph.node for new in fused.get(id(node), [node])]
    del graph.node[:]
    graph.node.extend(nodes)
    _drop_dead_nodes(graph)  # the exported attention's nodes, now unread
    _drop_unread(graph, {t.name for t in graph.initializer})
    _use_microsoft_domain(model)
    return f"{len(fused)} attention(s) fused into com.microsoft.MultiHeadAttention"


class _Sdpa:
    """The links of :func:`fuse_attention`'s pattern; each returns None where the graph differs."""

    def __init__(self, graph: Any, base_dir: Path) -> None:
        self.graph, self.base_dir = graph, base_dir
        self.inits: dict[str, Any] = {t.name: t for t in graph.initializer}
        self.producer: dict[str, Any] = {out: node for node in graph.node for out in node.output}
        self.readers = _readers(graph)
        self.outputs = {o.name for o in graph.output}
        self.constants: dict[str, Any] = {}
        # the exporter's shape annotations, where every axis is a number: a graph exported at fixed shapes (a
        # speech encoder's 30 s window) writes its reshape targets as constants, checked against these
        self.static: dict[str, list[int]] = {}
        for value in (*graph.input, *graph.value_info, *graph.output):
            dims = value.type.tensor_type.shape.dim
            if dims and all(d.HasField("dim_value") for d in dims):
                self.static[value.name] = [d.dim_value for d in dims]

    def match(self, out: Any) -> tuple[str, str, str, int, float, str] | None:
        """(q, k, v, heads, scale, bias) when ``out`` is the final Reshape of an exported attention."""
        t = self.made_by(out.input[0], "Transpose")
        heads_out = self.unreshaped(t.input[0]) if t is not None and _perm(t) == [0, 2, 1, 3] else None
        if heads_out is None:
            return None
        onnx_attention = self.made_by(heads_out, "Attention")
        if onnx_attention is not None and onnx_attention.domain in ("", "ai.onnx"):
            return self.one_op(onnx_attention)
        pv = self.made_by(heads_out, "MatMul")
        if pv is None:
            return None
        v = self.heads(pv.input[1])
        probs = self.softmax(pv.input[0])
        if v is None or probs is None:
            return None
        scores, guarded = probs
        bias = ""
        add = self.made_by(scores, "Add")
        if add is not None:
            scores, bias = add.input[0], add.input[1]
            if self.made_by(scores, "MatMul") is None:
                scores, bias = bias, scores
        qk = self.made_by(scores, "MatMul")
        if qk is None or (guarded and bias and not self.finite_where(bias)):
            return None
        q_side, a = self.scaled(qk.input[0])
        k_side, b = self.scaled(qk.input[1])
        q, keys = self.heads(q_side), self.swapped(k_side)
        k = self.heads(keys) if keys is not None else None
        if q is None or k is None or q[1] != k[1] or q[1] != v[1]:
            return None
        return self.found(q, k, v, a * b, bias)

    def found(self, q: tuple[str, int], k: tuple[str, int], v: tuple[str, int], scale: float,
              bias: str) -> tuple[str, str, str, int, float, str]:
        """The match: a projection scaled by a constant before its heads are split off (Whisper scales its
        queries so) is read unscaled, the constant going into the kernel's scale."""
        (q_in, c), (k_in, d) = self.scaled(q[0]), self.scaled(k[0])
        return q_in, k_in, v[0], q[1], scale * c * d, bias

    def one_op(self, node: Any) -> tuple[str, str, str, int, float, str] | None:
        """(q, k, v, heads, scale, bias) of ONNX's own ``Attention`` (opset 23 exports scaled_dot_product_attention
        as one) over three heads(x), with no cache, no causal mask and no softcap: the same kernel reads the
        projections without their head transposes (ONNX Runtime transposes them back inside the op). A boolean
        mask is left alone: where it masks every key of a row, the op (as PyTorch's SDPA) gives zeros, and no
        finite bias makes MultiHeadAttention do that (it averages the values)."""
        inputs = [*node.input, "", "", ""][:4]
        plain = _attr(node, "is_causal", 0) == 0 and _attr(node, "softcap", 0.0) == 0.0 \
            and len([i for i in node.input[4:] if i]) == 0 and len([o for o in node.output[1:] if o]) == 0
        bias = inputs[3]
        if not plain or (bias and not self.finite_where(bias)):
            return None
        q, k, v = (self.heads(i) for i in inputs[:3])
        if q is None or k is None or v is None or not q[1] == k[1] == v[1]:
            return None
        scale = _attr(node, "scale", None)
        if scale is None:  # the op's default, 1/√D
            shape = self.static.get(q[0])
            width = shape[-1] if shape else self.width(q[0])
            if not width:
                return None
            scale = 1.0 / math.sqrt(width / q[1])
        return self.found(q, k, v, float(scale), bias)

    def made_by(self, name: str, op: str) -> Any:
        """The node of type ``op`` that makes ``name``, when nothing else reads ``name`` (it goes with the fusion)."""
        node = self.producer.get(name)
        only = len(self.readers.get(name, [])) == 1 and name not in self.outputs
        return node if node is not None and node.op_type == op and only else None

    def scalar(self, name: str) -> float | None:
        return _scalar(self.inits, name, self.base_dir)

    def scaled(self, name: str) -> tuple[str, float]:
        """``x`` and ``c`` when ``name`` is ``Mul(x, c)`` of a scalar constant; else ``name`` and 1."""
        mul = self.made_by(name, "Mul")
        if mul is not None:
            for x, c in ((mul.input[0], mul.input[1]), (mul.input[1], mul.input[0])):
                value = self.scalar(c)
                if value is not None:
                    return x, value
        return name, 1.0

    def softmax(self, name: str) -> tuple[str, bool] | None:
        """(scores, guarded): ``name`` is Softmax(scores) over the last axis, or its NaN-guarded form."""
        where = self.producer.get(name)
        guarded = False
        if where is not None and where.op_type == "Where" and len(self.readers.get(name, [])) == 1:
            guarded = True
            isnan = self.producer.get(where.input[0])
            sm = where.input[2]
            ok = isnan is not None and isnan.op_type == "IsNaN" and isnan.input[0] == sm \
                and self.scalar(where.input[1]) == 0.0 and len(self.readers.get(sm, [])) == 2
            if not ok:
                return None
            name = sm
        sm_node = self.producer.get(name)
        if sm_node is None or sm_node.op_type != "Softmax" or _attr(sm_node, "axis", -1) != -1 \
                or len(self.readers.get(name, [])) != (2 if guarded else 1):
            return None
        return sm_node.input[0], guarded

    def heads(self, name: str) -> tuple[str, int] | None:
        """(x, N) when ``name`` is ``Transpose[0,2,1,3](Reshape(x, [B, S, -1 | N, D]))``: x split into heads."""
        t = self.producer.get(name)
        if t is None or t.op_type != "Transpose" or _perm(t) != [0, 2, 1, 3]:
            return None
        r = self.producer.get(t.input[0])
        if r is None or r.op_type != "Reshape" or len(self.readers.get(t.input[0], [])) != 1:
            return None
        before, after = self.static.get(r.input[0]), self.static.get(r.output[0])
        if before and after and len(before) == 3 and len(after) == 4:  # fixed shapes: [B, S, N·D] → [B, S, N, D]
            ok = after[:2] == before[:2] and after[2] * after[3] == before[2]
            return (r.input[0], after[2]) if ok else None
        split = self.target(r.input[1])
        if split is None:
            return None
        head_dim, n = split
        width = self.width(r.input[0])
        if width is None or width % head_dim or (n > 0 and n * head_dim != width):
            return None
        return r.input[0], width // head_dim

    def unreshaped(self, name: str) -> str:
        """x when ``name`` is a Reshape of x to the shape x has (the fixed-shape export writes one after the
        attention's last MatMul); else ``name``."""
        r = self.made_by(name, "Reshape")
        same = r is not None and self.static.get(name) is not None and self.static.get(r.input[0]) == self.static[name]
        return r.input[0] if same else name

    def target(self, name: str) -> tuple[int, int] | None:
        """(D, N or -1) when a Reshape target is [B, S, -1 | N, D] with B, S each the matching axis of a shape."""
        concat = self.producer.get(name)
        if concat is None or concat.op_type != "Concat" or len(concat.input) != 4:
            return None
        parts = [self.shape_slice(i) for i in concat.input[:2]]
        if parts != [0, 1]:
            return None
        n, d = self.scalar(concat.input[2]), self.scalar(concat.input[3])
        if n is None or d is None or d <= 0 or (n != -1 and n <= 0):
            return None
        return int(d), int(n)

    def shape_slice(self, name: str) -> int | None:
        """i when ``name`` is axis i (0 or 1) of some tensor's shape: ``Shape(x, start=i, end=i+1)``."""
        node = self.producer.get(name)
        if node is None or node.op_type != "Shape":
            return None
        start, end = _attr(node, "start", 0), _attr(node, "end", None)
        return start if start in (0, 1) and end == start + 1 else None

    def width(self, name: str) -> int | None:
        """The last axis of a projection's output: its MatMul's weight columns, or the Split's size."""
        node = self.producer.get(name)
        if node is not None and node.op_type == "Add":  # a bias after the MatMul
            for i in node.input:
                if i in self.inits and len(self.inits[i].dims) == 1:
                    return int(self.inits[i].dims[0])
            node = next((self.producer.get(i) for i in node.input if i not in self.inits), None)
        if node is None:
            return None
        if node.op_type == "MatMul" and node.input[1] in self.inits and len(self.inits[node.input[1]].dims) == 2:
            return int(self.inits[node.input[1]].dims[1])
        if node.op_type == "Split" and len(node.input) > 1 and node.input[1] in self.inits:
            sizes = _array(self.inits[node.input[1]], self.base_dir).tolist()
            return int(sizes[list(node.output).index(name)])
        return None

    def swapped(self, name: str) -> str | None:
        """x when ``name`` is x with its last two axes swapped, as exported: ``Reshape(Transpose[0,2,1](
        Reshape(x, [-1, S, D])), [B, N, D, S])``, each target read from ``Shape(x)`` (or, exported at fixed
        shapes, each shape as annotated)."""
        outer = self.made_by(name, "Reshape")
        t = self.made_by(outer.input[0], "Transpose") if outer is not None else None
        inner = self.made_by(t.input[0], "Reshape") if t is not None and _perm(t) == [0, 2, 1] else None
        if inner is None:
            return None
        x = inner.input[0]
        heads, merged, swapped = (self.static.get(n) for n in (x, inner.output[0], outer.output[0]))
        if heads and merged and swapped:  # fixed shapes: [B, N, S, D] → [B·N, S, D] → [B·N, D, S] → [B, N, D, S]
            if len(heads) != 4:
                return None
            b, n, s, d = heads
            return x if merged == [b * n, s, d] and swapped == [b, n, d, s] else None
        first, second = self.slices_of(inner.input[1], x), self.slices_of(outer.input[1], x)
        ok = first == [(-1, None), (-2, -1), (-1, None)] and second == [(None, -2), (-1, None), (-2, -1)]
        return x if ok else None

    def slices_of(self, name: str, x: str) -> list[tuple[int | None, int | None]] | None:
        """A Concat target's parts as (start, end) slices of Shape(x); a constant [-1] is (-1, None)."""
        concat = self.producer.get(name)
        if concat is None or concat.op_type != "Concat":
            return None
        parts: list[tuple[int | None, int | None]] = []
        for i in concat.input:
            if self.scalar(i) == -1:
                parts.append((-1, None))
                continue
            sl = self.producer.get(i)
            if sl is None or sl.op_type != "Slice":
                return None
            shape = self.producer.get(sl.input[0])
            if shape is None or shape.op_type != "Shape" or shape.input[0] != x or _attr(shape, "start", 0) != 0:
                return None
            start, end = (self.int_const(n) for n in sl.input[1:3])
            parts.append((start if start != _INT64_MIN else None, end if end != _INT64_MAX else None))
        return parts

    def int_const(self, name: str) -> int | None:
        value = self.scalar(name)
        return int(_array(self.inits[name], self.base_dir).reshape(())) if value is not None else None

    def finite_where(self, name: str) -> bool:
        """``name`` is ``Where(c, x, y)`` of finite constants (a mask that cannot make a row all −inf)."""
        node = self.producer.get(name)
        if node is None or node.op_type != "Where":
            return False
        values = [self.scalar(i) for i in node.input[1:]]
        return all(v is not None and math.isfinite(v) for v in values)

    def expand_bias(self, bias: str, q: str, name: str) -> list[Any]:
        """Nodes broadcasting ``bias`` over the query axis, to [B, 1, S, S_kv] (MultiHeadAttention wants it)."""
        import numpy as np
        from onnx import helper

        self.constants.setdefault("attention.ones2", np.ones(2, np.int64))
        self.constants.setdefault("attention.one", np.ones(1, np.int64))
        return [helper.make_node("Shape", [q], [f"{name}.q_len"], start=1, end=2),
                helper.make_node("Concat", ["attention.ones2", f"{name}.q_len", "attention.one"],
                                 [f"{name}.bias_shape"], axis=0),
                helper.make_node("Expand", [bias, f"{name}.bias_shape"], [f"{name}.bias"])]


_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


def _perm(node: Any) -> list[int] | None:
    return _attr(node, "perm", None)


def _attr(node: Any, name: str, default: Any) -> Any:
    from onnx import helper

    found = next((a for a in node.attribute if a.name == name), None)
    if found is None:
        return default
    value = helper.get_attribute_value(found)
    return list(value) if isinstance(value, (list, tuple)) or type(value).__name__.endswith("Container") else value


def _array(tensor: Any, base_dir: Path) -> Any:
    from onnx import numpy_helper

    return numpy_helper.to_array(tensor, str(base_dir))


def _scalar(inits: dict[str, Any], name: str, base_dir: Path) -> float | None:
    """The value of a one-element initializer (None for anything else)."""
    import numpy as np

    tensor = inits.get(name)
    if tensor is None or int(np.prod(tensor.dims)) != 1:
        return None
    return float(_array(tensor, base_dir).reshape(()))


def _opset(model: Any) -> int:
    """The model's default-domain (ai.onnx) opset version; 0 when it declares none."""
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def _use_microsoft_domain(model: Any) -> None:
    """Declare the com.microsoft opset (ONNX Runtime's contrib ops) once."""
    from onnx import helper

    if not any(o.domain == "com.microsoft" for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))


def in_place_state(model: Any) -> list[list[str]]:
    """The (``past_X``, ``present_X``) pairs a session may bind to one buffer: ``past_X`` is read by one node
    only, a ScatterND (``onnx_passes.scatter_state_writes``) whose output is the graph output ``present_X``.
    ONNX Runtime's ScatterND copies its input to its output only when they are two buffers: on one, a decode
    step writes its slot and copies nothing (at whisper-tiny's 448 slots and batch 8, that copy of the whole
    state was a fifth of the step). Any other reader of ``past_X`` (it would see the updated state) leaves the
    pair out. The ort compile step asks this of its own pass output, which writes ScatterND since the pass's
    version 4."""
    graph = model.graph
    outputs = {o.name for o in graph.output}
    readers = _readers(graph)
    pairs = []
    for inp in graph.input:
        if not inp.name.startswith("past_"):
            continue
        present = "present_" + inp.name[len("past_"):]
        users = readers.get(inp.name, [])
        if len(users) == 1 and users[0].op_type == "ScatterND" and list(users[0].input).count(inp.name) == 1 \
                and users[0].input[0] == inp.name and list(users[0].output) == [present] and present in outputs:
            pairs.append([inp.name, present])
    return pairs


def _drop_dead_nodes(graph: Any) -> None:
    """Remove the nodes none of whose outputs is read (by a node, a subgraph or as a graph output), until none
    is left."""
    outputs = {o.name for o in graph.output}
    while True:
        read = set(_names_read(graph)) | outputs
        keep = [n for n in graph.node if any(o in read for o in n.output)]
        if len(keep) == len(graph.node):
            return
        del graph.node[:]
        graph.node.extend(keep)


def _names_read(graph: Any) -> Iterator[str]:
    """Every input name the nodes of ``graph`` read, with their If/Loop bodies (which may read outer names)."""
    for node in graph.node:
        yield from node.input
        for attr in node.attribute:
            for sub in (*([attr.g] if attr.HasField("g") else []), *attr.graphs):
                yield from _names_read(sub)


def _readers(graph: Any) -> dict[str, list[Any]]:
    """Each tensor name of ``graph`` and the nodes that read it, in graph order."""
    readers: dict[str, list[Any]] = {}
    for node in graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    return readers


def _drop_unread(graph: Any, names: set[str]) -> None:
    """Remove the initializers in ``names`` that no node (and no graph output) reads any more. The list is
    rebuilt rather than ``remove``d from: protobuf finds an element to remove by comparing whole messages,
    which took half a minute on a 90 MB model."""
    used = set(_names_read(graph)) | {o.name for o in graph.output}
    keep = [t for t in graph.initializer if t.name not in names or t.name in used]
    if len(keep) < len(graph.initializer):
        del graph.initializer[:]
        graph.initializer.extend(keep)


def _fold_weight_transposes(model: Any, base_dir: Path) -> int:
    """Replace each ``Transpose`` of an initializer by the transposed initializer, so the MatMul it feeds has a
    constant weight the quantizer can see. A tied LM head exports as ``MatMul(x, Transpose(embedding))``: left
    as it is, the largest matmul of a decoder step (51,865 × 384 for Whisper) stayed float32 in an "int8"
    model, and ONNX Runtime folded the transpose only later, at compile. The embedding keeps its own table."""
    from onnx import numpy_helper

    inits = {t.name: t for t in model.graph.initializer}
    folded = []
    for node in model.graph.node:
        if node.op_type != "Transpose" or node.input[0] not in inits:
            continue
        array = numpy_helper.to_array(inits[node.input[0]], str(base_dir))
        perm = next((list(a.ints) for a in node.attribute if a.name == "perm"), None)
        model.graph.initializer.append(numpy_helper.from_array(array.transpose(perm), node.output[0]))
        folded.append(node)
    for node in folded:
        model.graph.node.remove(node)
    return len(folded)


def _down_projections(model: Any, ops: list[str]) -> list[str]:
    """Nodes whose constant weight has at least twice as many inputs as outputs (K ≥ 2N)."""
    weights = {t.name: list(t.dims) for t in model.graph.initializer}
    out = []
    for node in model.graph.node:
        if node.op_type in ops and len(node.input) > 1 and len(weights.get(node.input[1], [])) == 2:
            k, n = weights[node.input[1]]
            if node.op_type == "Gemm" and any(a.name == "transB" and a.i == 1 for a in node.attribute):
                k, n = n, k
            if k >= 2 * n:
                out.append(node.name)
    return out


def external_data(model: Any, params: dict[str, Any], base_dir: Path) -> str:
    """Decide the storage: :func:`save` writes the weights to one external file above ``limit_bytes``."""
    size = model_bytes(model)
    external = size > int(params["limit_bytes"])
    model.metadata_props.add(key="qeffbuild.external_data", value="1" if external else "0")
    return f"{size / 1e6:.1f} MB of tensors: " + (f"external data in {DATA_FILE}" if external else "embedded")


def model_bytes(model: Any) -> int:
    """The bytes of every stored tensor (raw or in an external file)."""
    total = 0
    for tensor in all_tensors(model):
        if tensor.data_location == 1:  # EXTERNAL
            total += int(next((e.value for e in tensor.external_data if e.key == "length"), 0) or 0)
        else:
            total += tensor.ByteSize()
    return total


# --- loading and saving -----------------------------------------------------------------------


def load(folder: Path) -> Any:
    return load_model(folder / "model.onnx")


def load_model(path: Path) -> Any:
    """The ONNX model at ``path`` with its external data read in.

    Read here rather than by ``onnx.load``: onnx ≥ 1.20 refuses a data file with more than one hard link (its guard
    against a planted link to a file elsewhere), and the store hard-links every file it keeps (a tree's file and
    its blob are one copy on disk), so every model over 2 GiB failed its first pass. The guard's intent is kept:
    a tensor's location must resolve (links followed) to a file inside the model's folder."""
    import onnx

    from ..errors import BuildError

    model = onnx.load(str(path), load_external_data=False)
    base = path.parent.resolve()
    files: dict[Path, Any] = {}
    try:
        for tensor in all_tensors(model):
            if tensor.data_location != onnx.TensorProto.EXTERNAL:
                continue
            info = {e.key: e.value for e in tensor.external_data}
            where = (base / info.get("location", "")).resolve()
            if base not in where.parents:
                raise BuildError(f"{path}: tensor {tensor.name!r} keeps its data at {info.get('location')!r}, "
                                 "outside the model's folder; re-export the model with its data beside it")
            if where not in files:
                try:
                    files[where] = open(where, "rb")  # noqa: SIM115 (closed below, after every tensor)
                except OSError as e:
                    raise BuildError(f"{path}: cannot read the external data of tensor {tensor.name!r} "
                                     f"({where.name}): {e.strerror}") from e
            f = files[where]
            f.seek(int(info.get("offset", 0)))
            length = info.get("length")
            data = f.read(int(length)) if length is not None else f.read()
            if length is not None and len(data) != int(length):
                raise BuildError(f"{path}: {where.name} ends before tensor {tensor.name!r}'s {length} bytes "
                                 f"(at offset {info.get('offset', 0)}): the data file is truncated")
            tensor.raw_data = data
            del tensor.external_data[:]
            tensor.data_location = onnx.TensorProto.DEFAULT
    finally:
        for f in files.values():
            f.close()
    return model


def save(model: Any, out: Path, limit_bytes: int = PROTOBUF_LIMIT) -> bool:
    """Write ``out/model.onnx``; weights go to ``model.onnx.data`` when the model is over ``limit_bytes``
    (or an earlier external-data pass asked for it). Returns whether they went external."""
    import onnx

    flags = {p.key: p.value for p in model.metadata_props}
    external = flags.get("qeffbuild.external_data") == "1" or model_bytes(model) > limit_bytes
    path = out / "model.onnx"
    if external:
        onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                        location=DATA_FILE, size_threshold=1024)
    else:
        onnx.save_model(model, str(path))
    return external


def run(ctx: StepContext) -> None:
    """The ``onnx-pass`` step: load the upstream ONNX, apply one pass, save, carry io.json along."""
    src = ctx.inputs["onnx"]
    onnx_pass = plugins().onnx_passes.get(ctx.params["pass"])
    model = load(src)
    summary = load_attr(onnx_pass.apply)(model, dict(ctx.params.get("pass_params", {})), src)
    external = save(model, ctx.out)
    shutil.copy2(src / "io.json", ctx.out / "io.json")
    record = {"pass": onnx_pass.name, "version": onnx_pass.version, "summary": summary, "external_data": external}
    (ctx.out / "pass.json").write_text(json.dumps(record, indent=1))
    print(f"{onnx_pass.name} v{onnx_pass.version}: {summary}")
