"""`qeffbuild bench` for embeddings: latency percentiles and sequences/s per runtime, specialization and seq_len.

Every runtime is fed the same token ids; the baseline it is divided by is sentence-transformers' model on
that batch tokenized once (``encode`` itself, tokenization included, is a row beside it: what a user's call
costs). sentence-transformers' own ONNX backend (float32, and its int8 for an int8 specialization) is a row
too: it needs optimum, whose releases pin transformers below 5, so it runs in a child process of whichever Python
has it (``QEFFBUILD_ST_ONNX_PYTHON``, made by ``scripts/st-onnx-env.sh``; this one by default), and otherwise its
row says why it did not run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from functools import partial
from pathlib import Path
from typing import Any

from ...core.plugins import plugins
from ...core.steps import StepNode
from ...reports.timing import percentiles, time_calls
from ...runtimes import Session, open_session
from . import st_onnx_child


def _reference_session(model_dir: Path, pooling: str, normalize: bool, device: str) -> Session:
    """The unmodified model in float32 on the specialization's device (on a GPU it ran on the CPU before: a
    GPU table's `pytorch` row then timed the host)."""
    import torch
    from transformers import AutoModel

    from ...pipeline.torchutil import torch_device
    from ...runtimes.torch import TorchSession
    from .pooling import make_pooled

    model = make_pooled(AutoModel.from_pretrained(model_dir, dtype=torch.float32).eval(), pooling, normalize)
    return TorchSession(model.to(torch_device(device)), device=device)  # keyword call: input_ids, attention_mask


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
    if p["pooling"] in ST_POOLING:
        from .driver import read_sentences

        sentences = read_sentences(next(Path(f.path) for f in node.files if not f.label.startswith("template:")))
        rows += _st_onnx_rows(model_dir, p, sentences, iters, warmup)
    for runtime, opens in p["runtimes"].items():
        if opens == "reference" and runtime != "pytorch":
            continue  # e.g. sentence-transformers: its encode() batches and tokenizes, not comparable per shape
        for spec in p["specializations"]:
            for seq in spec["seq_len"]:
                if opens == "reference":
                    session = _reference_session(model_dir, p["pooling"], p["normalize"], spec["device"])
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
ST_ONNX_INT8 = "sentence-transformers backend=onnx int8 (pre-tokenized)"
ST_ONNX_PYTHON = "QEFFBUILD_ST_ONNX_PYTHON"  # a Python with sentence-transformers[onnx] (scripts/st-onnx-env.sh)
ST_POOLING = {"mean": "mean", "cls": "cls", "max": "max", "last": "lasttoken"}  # ours -> sentence-transformers'


def _sentence_transformer(model_dir: Path, p: dict[str, Any], spec: dict[str, Any], seq: int) -> Any:
    """The model as sentence-transformers runs it, with our pooling, in the specialization's precision."""
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.models import Normalize, Pooling, Transformer

    from ...pipeline.torchutil import torch_device

    word = Transformer(str(model_dir), max_seq_length=seq)
    modules = [word, Pooling(word.get_word_embedding_dimension(), pooling_mode=ST_POOLING[p["pooling"]])]
    if p["normalize"]:
        modules.append(Normalize())
    st = SentenceTransformer(modules=modules, device=torch_device(spec["device"]))
    if spec["dtype"] not in ("float32", "int8"):
        st = st.to(getattr(torch, spec["dtype"]))
    return st


def _encode_rows(model_dir: Path, p: dict[str, Any], spec: dict[str, Any], seq: int, iters: int,
                 warmup: int) -> list[dict[str, Any]]:
    """sentence-transformers on ``batch_size`` texts that each fill ``seq`` tokens: ``encode`` as a user calls
    it (tokenization included), and its model on the same batch tokenized once — the baseline every runtime
    row is divided by, since our rows are fed token ids too."""
    import torch

    b = spec["batch_size"]
    texts = st_onnx_child.texts(b, seq)  # each truncated to exactly seq tokens
    common = {"specialization": spec["name"], "dtype": spec["dtype"], "batch_size": b, "shape": f"seq {seq}",
              "unit": "sequences"}
    st = _sentence_transformer(model_dir, p, spec, seq)
    prepare = getattr(st, "preprocess", None) or st.tokenize  # sentence-transformers 5 renamed it
    features = {k: v.to(st.device) if hasattr(v, "to") else v for k, v in prepare(texts).items()}

    def forward() -> None:
        with torch.inference_mode():  # as encode() runs its model
            st.forward(dict(features))["sentence_embedding"].cpu()

    def encode() -> None:
        st.encode(texts, batch_size=b, convert_to_numpy=True, show_progress_bar=False)

    rows = []
    for label, fn in ((PRETOKENIZED, forward), (ENCODE, encode)):
        lat = percentiles(time_calls(fn, warmup, iters))
        rows.append({"runtime": label, **common, **lat, "throughput_per_s": b / (lat["p50_ms"] / 1000)})
    return rows


def _st_onnx_rows(model_dir: Path, p: dict[str, Any], sentences: list[str], iters: int,
                  warmup: int) -> list[dict[str, Any]]:
    """sentence-transformers' ONNX backend at every specialization and length (its int8 export for an int8
    specialization), timed by ``st_onnx_child`` in the Python that has it: one child per device, one export.
    Each row also carries its worst cosine over the validation's sentences against the float32 model."""
    from ...pipeline.torchutil import torch_device

    rows: list[dict[str, Any]] = []
    python = os.environ.get(ST_ONNX_PYTHON) or sys.executable
    for device in sorted({torch_device(s["device"]) for s in p["specializations"]}):
        specs = [s for s in p["specializations"] if torch_device(s["device"]) == device]
        jobs = [{"batch": s["batch_size"], "seq": seq, "int8": s["dtype"] == "int8", "spec": s}
                for s in specs for seq in s["seq_len"]]
        with tempfile.TemporaryDirectory(prefix="qeffbuild-st-onnx-") as work:
            got = _run_st_onnx_child(python, {
                "model_dir": str(model_dir), "work_dir": work, "pooling": ST_POOLING[p["pooling"]],
                "normalize": bool(p["normalize"]), "device": device, "iters": iters, "warmup": warmup,
                "sentences": sentences, "jobs": [{k: v for k, v in j.items() if k != "spec"} for j in jobs]})
        cosines = _st_cosines(model_dir, p, sentences, got.get("embeddings") or {})
        for job, result in zip(jobs, got.get("results") or [None] * len(jobs), strict=True):
            spec = job["spec"]
            row = {"runtime": ST_ONNX_INT8 if job["int8"] else ST_ONNX, "specialization": spec["name"],
                   "dtype": spec["dtype"], "batch_size": job["batch"], "shape": f"seq {job['seq']}",
                   "unit": "sequences"}
            if result is None:
                row["unavailable"] = (f"{got.get('error', 'no result')} (in {python}; point {ST_ONNX_PYTHON} at a "
                                      "Python with sentence-transformers[onnx]: scripts/st-onnx-env.sh makes one)")
            else:
                lat = percentiles(result["samples_s"])
                row.update(**lat, throughput_per_s=job["batch"] / (lat["p50_ms"] / 1000), onnx_file=result["file"],
                           versions=got.get("versions", {}))
                kind = "int8" if job["int8"] else "float32"
                if kind in cosines:
                    row["min_cosine_vs_float32"] = cosines[kind]
            rows.append(row)
    return rows


def _st_cosines(model_dir: Path, p: dict[str, Any], sentences: list[str],
                embeddings: dict[str, Any]) -> dict[str, float]:
    """Worst per-sentence cosine of each of the child's models against sentence-transformers' float32 model (the
    validation's own metric, ``checks.tensor.min_cosine``)."""
    from ...checks.tensor import min_cosine

    if not embeddings:
        return {}
    reference = _sentence_transformer(model_dir, p, {"device": "cpu", "dtype": "float32"}, 512)
    want = reference.encode(sentences, convert_to_numpy=True, show_progress_bar=False)
    return {kind: min_cosine(want, vectors) for kind, vectors in embeddings.items()}


def _run_st_onnx_child(python: str, job: dict[str, Any]) -> dict[str, Any]:
    """The child's JSON answer, or {"error": why} (a missing interpreter, a crash: never an exception here)."""
    try:
        done = subprocess.run([python, st_onnx_child.__file__, json.dumps(job)], capture_output=True, text=True,
                              env={**os.environ, "PYTHONNOUSERSITE": "1"})
    except OSError as e:
        return {"error": f"cannot run {python}: {e}"}
    lines = done.stdout.strip().splitlines()
    try:
        answer = json.loads(lines[-1]) if lines else {}
    except ValueError:
        answer = {}
    if done.returncode != 0 or not isinstance(answer, dict) or not answer:
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        return {"error": f"the sentence-transformers ONNX child exited {done.returncode}: {tail[0][:300]}"}
    return answer
