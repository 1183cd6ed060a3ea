"""Two forms of a Whisper decoder's cross-attention on ONNX Runtime (CPU), at batch 1 and 4.

    python benchmarks/cross_attention_forms.py [--layers 4] [--threads 2]

- ``states`` (what qeffbuild ships): each layer reads its own keys and values of the encoder output,
  [batch, heads, 1500, 64] each, computed once per utterance: ``softmax(q·Kᵀ)·V``.
- ``absorbed``: each layer reads the encoder output E itself, [batch, 1500, d_model], shared by every layer, with
  the key and value projections moved onto the query side: ``scores = (q·W_k,h)·Eᵀ``, ``out = (p·E)·W_v,hᵀ + b_v``
  (the same values in real arithmetic, since each row of p sums to 1). A row's state is 2.3 MB instead of 18.4 at
  whisper-tiny's dimensions, but each head's products run over d_model channels instead of 64.

Whisper-tiny's dimensions (d_model 384, 6 heads, 1,500 frames), random weights; the two forms' outputs are
checked to agree. Prints the median ms of a call (a layer stack's cross-attention alone). The design notes
record a run: the absorbed form was twice as slow at both batch sizes, so the shipped graphs keep the states.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

D, HEADS, FRAMES = 384, 6, 1500
HEAD = D // HEADS


def _states_graph(batch: int, layers: int) -> Any:
    from onnx import TensorProto, helper

    inputs = [helper.make_tensor_value_info("q", TensorProto.FLOAT, [batch, HEADS, 1, HEAD])]
    nodes, x = [], "q"
    for i in range(layers):
        inputs += [helper.make_tensor_value_info(f"k{i}", TensorProto.FLOAT, [batch, HEADS, FRAMES, HEAD]),
                   helper.make_tensor_value_info(f"v{i}", TensorProto.FLOAT, [batch, HEADS, FRAMES, HEAD])]
        nodes += [helper.make_node("FusedMatMul", [x, f"k{i}"], [f"s{i}"], domain="com.microsoft", transB=1),
                  helper.make_node("Softmax", [f"s{i}"], [f"p{i}"], axis=-1),
                  helper.make_node("MatMul", [f"p{i}", f"v{i}"], [f"o{i}"])]
        x = f"o{i}"
    return _model(nodes, inputs, x, [])


def _absorbed_graph(batch: int, layers: int, wk: Any, wv: Any, bv: Any) -> Any:
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    inputs = [helper.make_tensor_value_info("q", TensorProto.FLOAT, [batch, HEADS, 1, HEAD]),
              helper.make_tensor_value_info("e", TensorProto.FLOAT, [batch, FRAMES, D])]
    inits = [numpy_helper.from_array(wk.reshape(HEADS, HEAD, D), "wk"),
             numpy_helper.from_array(np.ascontiguousarray(wv.reshape(HEADS, HEAD, D).transpose(0, 2, 1)), "wv_t"),
             numpy_helper.from_array(bv.reshape(HEADS, 1, HEAD), "bv"),
             numpy_helper.from_array(np.array([batch, HEADS, D], np.int64), "rows"),
             numpy_helper.from_array(np.array([2], np.int64), "axis2")]
    nodes, x = [], "q"
    for i in range(layers):
        nodes += [helper.make_node("MatMul", [x, "wk"], [f"qk{i}"]),  # [B, H, 1, D]
                  helper.make_node("Reshape", [f"qk{i}", "rows"], [f"qr{i}"]),  # [B, H, D]
                  helper.make_node("FusedMatMul", [f"qr{i}", "e"], [f"s{i}"], domain="com.microsoft", transB=1),
                  helper.make_node("Softmax", [f"s{i}"], [f"p{i}"], axis=-1),
                  helper.make_node("MatMul", [f"p{i}", "e"], [f"pe{i}"]),  # [B, H, D]
                  helper.make_node("Unsqueeze", [f"pe{i}", "axis2"], [f"pu{i}"]),  # [B, H, 1, D]
                  helper.make_node("MatMul", [f"pu{i}", "wv_t"], [f"ov{i}"]),  # [B, H, 1, 64]
                  helper.make_node("Add", [f"ov{i}", "bv"], [f"o{i}"])]
        x = f"o{i}"
    return _model(nodes, inputs, x, inits)


def _model(nodes: list[Any], inputs: list[Any], output: str, inits: list[Any]) -> Any:
    from onnx import TensorProto, helper

    graph = helper.make_graph(nodes, "cross", inputs, [helper.make_tensor_value_info(output, TensorProto.FLOAT, None)],
                              inits)
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)]
    return helper.make_model(graph, opset_imports=opsets)


def _median_ms(model: Any, feeds: dict[str, Any], threads: int, calls: int = 200) -> tuple[float, Any]:
    import numpy as np
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    for _ in range(10):
        out = sess.run(None, feeds)[0]
    times = []
    for _ in range(calls):
        t0 = time.perf_counter()
        sess.run(None, feeds)
        times.append(time.perf_counter() - t0)
    return float(np.median(times)) * 1e3, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    import numpy as np

    rng = np.random.default_rng(0)
    wk, wv = (rng.standard_normal((D, D), np.float32) / 20 for _ in range(2))
    bv = rng.standard_normal(D, np.float32)
    row_mb = args.layers * 2 * FRAMES * D * 4 / 1e6
    print(f"{'batch':>5}  {'states ms':>10}  {'absorbed ms':>12}  state a row: {row_mb:.1f} MB against "
          f"{FRAMES * D * 4 / 1e6:.1f}")
    for batch in (1, 4):
        e = rng.standard_normal((batch, FRAMES, D), np.float32)
        k = (e @ wk.T).reshape(batch, FRAMES, HEADS, HEAD).transpose(0, 2, 1, 3).copy()
        v = (e @ wv.T + bv).reshape(batch, FRAMES, HEADS, HEAD).transpose(0, 2, 1, 3).copy()
        q = rng.standard_normal((batch, HEADS, 1, HEAD), np.float32) / 8
        feeds = {"q": q, **{f"k{i}": k for i in range(args.layers)}, **{f"v{i}": v for i in range(args.layers)}}
        states_ms, want = _median_ms(_states_graph(batch, args.layers), feeds, args.threads)
        absorbed_ms, got = _median_ms(_absorbed_graph(batch, args.layers, wk, wv, bv), {"q": q, "e": e}, args.threads)
        assert np.allclose(got, want, rtol=1e-3, atol=1e-4), float(np.abs(got - want).max())
        print(f"{batch:>5}  {states_ms:>10.3f}  {absorbed_ms:>12.3f}")


if __name__ == "__main__":
    main()
