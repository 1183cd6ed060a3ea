"""`qeffbuild bench` for embeddings: latency percentiles and sequences/s per runtime, specialization and seq_len.

Every runtime is fed the same token ids; the baseline it is divided by is sentence-transformers' model on
that batch tokenized once (``encode`` itself, tokenization included, is a row beside it: what a user's call
costs). sentence-transformers' own ONNX backend is a row too where it can be installed — it needs optimum,
whose releases pin transformers below 5 — and otherwise a row that says why it did not run.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

from ...core.plugins import plugins
from ...core.steps import StepNode
from ...reports.timing import percentiles, time_calls
from ...runtimes import Session, open_session


def _reference_session(model_dir: Path, pooling: str, normalize: bool) -> Session:
    import torch
    from transformers import AutoModel

    from ...runtimes.torch import TorchSession
    from .pooling import make_pooled

    model = make_pooled(AutoModel.from_pretrained(model_dir, dtype=torch.float32).eval(), pooling, normalize)
    return TorchSession(model)  # keyword call: input_ids, attention_mask


def bench(artifact: Any, node: StepNode, iters: int, warmup: int) -> list[dict[str, Any]]:
    """``artifact(role)`` gives the folder of the validation's upstream step with that role."""
    from ...pipeline.torchutil import quiet_warnings, strict_fp32

    quiet_warnings()
    strict_fp32()  # no TF32: runtimes are compared with a float32 reference
    import numpy as np

    p = node.params
    model_dir = artifact("model") / "model"
    rows: list[dict[str, Any]] = []
    for spec in p["specializations"]:  # the baseline users run today, on the same device and in the same precision
        for seq in spec["seq_len"] if p["pooling"] in ST_POOLING else ():
            rows += _encode_rows(model_dir, p, spec, seq, iters, warmup)
    for runtime, opens in p["runtimes"].items():
        if opens == "reference" and runtime != "pytorch":
            continue  # e.g. sentence-transformers: its encode() batches and tokenizes, not comparable per shape
        for spec in p["specializations"]:
            for seq in spec["seq_len"]:
                if opens == "reference":
                    session = _reference_session(model_dir, p["pooling"], p["normalize"])
                elif opens == "program":
                    session = open_session(plugins(), runtime, artifact(f"program/{spec['dtype']}/{spec['device']}"),
                                           spec["device"])
                else:
                    session = open_session(plugins(), runtime, artifact(f"{opens}/{spec['name']}/seq{seq}"),
                                           spec["device"])
                b = spec["batch_size"]
                rng = np.random.default_rng(0)
                feeds = {"input_ids": rng.integers(1000, 2000, (b, seq), dtype=np.int64),
                         "attention_mask": np.ones((b, seq), dtype=np.int64)}
                lat = percentiles(time_calls(partial(session.run, feeds), warmup, iters))
                rows.append({"runtime": runtime, "specialization": spec["name"], "dtype": spec["dtype"],
                             "batch_size": b, "shape": f"seq {seq}", **lat,
                             "throughput_per_s": b / (lat["p50_ms"] / 1000), "unit": "sequences"})
    return _with_speedups(rows)


def _with_speedups(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each row's sequences/s over sentence-transformers' on the same token ids, specialization and length."""
    base = {(r["specialization"], r["shape"]): r["throughput_per_s"] for r in rows if r["runtime"] == PRETOKENIZED}
    for r in rows:
        ref = base.get((r["specialization"], r["shape"]))
        if r["runtime"] != PRETOKENIZED and ref and "throughput_per_s" in r:
            r["speedup_vs_sentence_transformers"] = r["throughput_per_s"] / ref
    return rows


ENCODE = "sentence-transformers encode"  # as a user calls it: tokenization included
PRETOKENIZED = "sentence-transformers (pre-tokenized)"  # the baseline: the same token ids as every other row
ST_ONNX = "sentence-transformers backend=onnx (pre-tokenized)"
ST_POOLING = {"mean": "mean", "cls": "cls", "max": "max", "last": "lasttoken"}  # ours -> sentence-transformers'



def _sentence_transformer(model_dir: Path, p: dict[str, Any], spec: dict[str, Any], seq: int,
                          backend: str = "torch") -> Any:
    """The model as sentence-transformers runs it, with our pooling, in the specialization's precision."""
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.models import Normalize, Pooling, Transformer

    from ...pipeline.torchutil import torch_device

    word = Transformer(str(model_dir), max_seq_length=seq, backend=backend)
    modules = [word, Pooling(word.get_word_embedding_dimension(), pooling_mode=ST_POOLING[p["pooling"]])]
    if p["normalize"]:
        modules.append(Normalize())
    st = SentenceTransformer(modules=modules, device=torch_device(spec["device"]), backend=backend)  # type: ignore[arg-type]
    if spec["dtype"] not in ("float32", "int8") and backend == "torch":
        st = st.to(getattr(torch, spec["dtype"]))
    return st


def _encode_rows(model_dir: Path, p: dict[str, Any], spec: dict[str, Any], seq: int, iters: int,
                 warmup: int) -> list[dict[str, Any]]:
    """sentence-transformers on ``batch_size`` texts that each fill ``seq`` tokens: ``encode`` as a user calls
    it (tokenization included), and its model on the same batch tokenized once — the baseline every runtime
    row is divided by, since our rows are fed token ids too. Its own ONNX backend beside it, or why not."""
    import torch

    b = spec["batch_size"]
    texts = [" ".join(["word"] * (2 * seq)) + f" {i}" for i in range(b)]  # truncated to exactly seq tokens
    common = {"specialization": spec["name"], "dtype": spec["dtype"], "batch_size": b, "shape": f"seq {seq}",
              "unit": "sequences"}
    rows = []
    for backend, name in (("torch", PRETOKENIZED), ("onnx", ST_ONNX)):
        try:
            st = _sentence_transformer(model_dir, p, spec, seq, backend)
        except Exception as e:  # not installable beside this transformers: said, never hidden
            rows.append({"runtime": name, **common, "unavailable": f"{type(e).__name__}: {str(e)[:300]}"})
            continue
        prepare = getattr(st, "preprocess", None) or st.tokenize  # sentence-transformers 5 renamed it
        features = {k: v.to(st.device) if hasattr(v, "to") else v for k, v in prepare(texts).items()}

        def forward(st: Any = st, features: dict[str, Any] = features) -> None:
            with torch.inference_mode():  # as encode() runs its model
                st.forward(dict(features))["sentence_embedding"].cpu()

        def encode(st: Any = st) -> None:
            st.encode(texts, batch_size=b, convert_to_numpy=True, show_progress_bar=False)

        timed = [(name, forward)] + ([(ENCODE, encode)] if backend == "torch" else [])
        for label, fn in timed:
            lat = percentiles(time_calls(fn, warmup, iters))
            rows.append({"runtime": label, **common, **lat, "throughput_per_s": b / (lat["p50_ms"] / 1000)})
    return rows
