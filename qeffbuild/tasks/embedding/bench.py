"""`qeffbuild bench` for embeddings: latency percentiles and sequences/s per runtime, specialization and seq_len."""

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
            rows.append(_encode_row(model_dir, p, spec, seq, iters, warmup))
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
    """Each runtime's sequences/s over sentence-transformers' at the same specialization and length."""
    base = {(r["specialization"], r["shape"]): r["throughput_per_s"] for r in rows if r["runtime"] == ENCODE}
    for r in rows:
        ref = base.get((r["specialization"], r["shape"]))
        if r["runtime"] != ENCODE and ref:
            r["speedup_vs_encode"] = r["throughput_per_s"] / ref
    return rows


ENCODE = "sentence-transformers encode"
ST_POOLING = {"mean": "mean", "cls": "cls", "max": "max", "last": "lasttoken"}  # ours -> sentence-transformers'



def _encode_row(model_dir: Path, p: dict[str, Any], spec: dict[str, Any], seq: int, iters: int,
                warmup: int) -> dict[str, Any]:
    """``SentenceTransformer.encode`` of ``batch_size`` texts that each fill ``seq`` tokens, with the model's
    pooling, in the specialization's precision on its device (half precision as ``model.half()``)."""
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.models import Normalize, Pooling, Transformer

    from ...pipeline.torchutil import torch_device

    word = Transformer(str(model_dir), max_seq_length=seq)
    modules = [word, Pooling(word.get_word_embedding_dimension(), pooling_mode=ST_POOLING[p["pooling"]])]
    if p["normalize"]:
        modules.append(Normalize())
    st = SentenceTransformer(modules=modules, device=torch_device(spec["device"]))
    if spec["dtype"] != "float32":
        st = st.to(getattr(torch, spec["dtype"]))
    b = spec["batch_size"]
    texts = [" ".join(["word"] * (2 * seq)) + f" {i}" for i in range(b)]  # truncated to exactly seq tokens

    def encode() -> None:
        st.encode(texts, batch_size=b, convert_to_numpy=True, show_progress_bar=False)

    lat = percentiles(time_calls(encode, warmup, iters))
    return {"runtime": ENCODE, "specialization": spec["name"], "dtype": spec["dtype"], "batch_size": b,
            "shape": f"seq {seq}", **lat, "throughput_per_s": b / (lat["p50_ms"] / 1000),
            "unit": "sequences"}
