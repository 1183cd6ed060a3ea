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
    from ...pipeline.torchutil import quiet_warnings

    quiet_warnings()
    import numpy as np

    p = node.params
    model_dir = artifact("model") / "model"
    rows: list[dict[str, Any]] = []
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
                             "throughput_per_s": round(b / (lat["p50_ms"] / 1000), 1), "unit": "sequences"})
    return rows
