"""`qeffbuild bench` for embeddings: latency percentiles and sequences/s per runtime, specialization and seq_len.

Every runtime is fed the same token ids; the baseline it is divided by is sentence-transformers' model on
that batch tokenized once (``encode`` itself, tokenization included, is a row beside it: what a user's call
costs). sentence-transformers' own ONNX backend (float32, and its int8 for an int8 specialization) is a row
too: it needs optimum, whose releases pin transformers below 5, so it runs in a child process of whichever Python
has it (``QEFFBUILD_ST_ONNX_PYTHON``, made by ``scripts/st-onnx-env.sh``; this one by default), and otherwise its
row says why it did not run. All rows, that child's included, take their samples round-robin in blocks
(``reports.timing.interleave``): a ratio compares rows measured over the same minutes.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from ...core.plugins import plugins
from ...core.steps import StepNode
from ...reports.timing import interleave, percentiles, time_calls
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
    """``artifact(role)`` gives the folder of the validation's upstream step with that role.

    Every row is opened and warmed first, then all are measured together, round-robin
    (:func:`~qeffbuild.reports.timing.interleave`), sentence-transformers' ONNX child included: each ratio
    compares rows measured side by side."""
    from ...pipeline.torchutil import quiet_warnings, strict_fp32

    quiet_warnings()
    strict_fp32()  # no TF32: runtimes are compared with a float32 reference
    p = node.params
    model_dir = artifact("model") / "model"
    probes: list[_Probe] = []
    with contextlib.ExitStack() as children:
        for spec in p["specializations"]:  # the baseline users run today, on the same device and precision
            for seq in spec["seq_len"] if p["pooling"] in ST_POOLING else ():
                probes += _encode_probes(model_dir, p, spec, seq, warmup)
        if p["pooling"] in ST_POOLING:
            from .driver import read_sentences

            sentences = read_sentences(next(Path(f.path) for f in node.files if not f.label.startswith("template:")))
            probes += _st_onnx_probes(model_dir, p, sentences, warmup, children)
        probes += _runtime_probes(artifact, model_dir, p, warmup)
        interleave(probes, iters)
    return _with_speedups([probe.row() for probe in probes])


class _Probe:
    """One bench row: ``probe(k)`` times ``k`` more calls after one untimed call (the block's opening: caches and
    thread pools back from the previous row); ``row()`` is its table row."""

    def __init__(self, meta: dict[str, Any], call: Callable[[], Any] | None, warmup: int = 0) -> None:
        self.meta, self.call = meta, call
        self.samples: list[float] = []
        if call is not None:
            time_calls(call, warmup, 0)

    def __call__(self, k: int) -> None:
        if self.call is not None:
            self.samples += time_calls(self.call, 1, k)

    def row(self) -> dict[str, Any]:
        if not self.samples:
            return self.meta
        lat = percentiles(self.samples)
        return {**self.meta, **lat, "throughput_per_s": self.meta["batch_size"] / (lat["p50_ms"] / 1000)}


def _runtime_probes(artifact: Any, model_dir: Path, p: dict[str, Any], warmup: int) -> list[_Probe]:
    import numpy as np

    probes = []
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
                probes.append(_Probe({"runtime": runtime, "specialization": spec["name"], "dtype": spec["dtype"],
                                      "batch_size": b, "shape": f"seq {seq}", "unit": "sequences"},
                                     partial(session.run, feeds), warmup))
    return probes


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


def _encode_probes(model_dir: Path, p: dict[str, Any], spec: dict[str, Any], seq: int,
                   warmup: int) -> list[_Probe]:
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

    return [_Probe({"runtime": PRETOKENIZED, **common}, forward, warmup),
            _Probe({"runtime": ENCODE, **common}, encode, warmup)]


def _st_onnx_probes(model_dir: Path, p: dict[str, Any], sentences: list[str], warmup: int,
                    children: contextlib.ExitStack) -> list[_Probe]:
    """sentence-transformers' ONNX backend at every specialization and length (its int8 export for an int8
    specialization), in the Python that has it: one child per device, one export, serving timing blocks
    (``st_onnx_child``) that the bench interleaves with its own rows'. Each row also carries its worst cosine over
    the validation's sentences against the float32 model."""
    from ...pipeline.torchutil import torch_device

    probes: list[_Probe] = []
    python = os.environ.get(ST_ONNX_PYTHON) or sys.executable
    for device in sorted({torch_device(s["device"]) for s in p["specializations"]}):
        specs = [s for s in p["specializations"] if torch_device(s["device"]) == device]
        jobs = [{"batch": s["batch_size"], "seq": seq, "int8": s["dtype"] == "int8", "spec": s}
                for s in specs for seq in s["seq_len"]]
        work = children.enter_context(tempfile.TemporaryDirectory(prefix="qeffbuild-st-onnx-"))
        child = children.enter_context(StOnnxChild(python, {
            "model_dir": str(model_dir), "work_dir": work, "pooling": ST_POOLING[p["pooling"]],
            "normalize": bool(p["normalize"]), "device": device, "warmup": warmup,
            "sentences": sentences, "jobs": [{k: v for k, v in j.items() if k != "spec"} for j in jobs]}))
        cosines = _st_cosines(model_dir, p, sentences, child.ready.get("embeddings") or {})
        for index, job in enumerate(jobs):
            spec = job["spec"]
            meta = {"runtime": ST_ONNX_INT8 if job["int8"] else ST_ONNX, "specialization": spec["name"],
                    "dtype": spec["dtype"], "batch_size": job["batch"], "shape": f"seq {job['seq']}",
                    "unit": "sequences"}
            if "error" in child.ready:
                probes.append(_Probe({**meta, "unavailable": f"{child.ready['error']} (in {python}; point "
                                      f"{ST_ONNX_PYTHON} at a Python with sentence-transformers[onnx]: "
                                      "scripts/st-onnx-env.sh makes one)"}, None))
                continue
            kind = "int8" if job["int8"] else "float32"
            meta.update(onnx_file=child.ready["files"][index], versions=child.ready.get("versions", {}),
                        **({"min_cosine_vs_float32": cosines[kind]} if kind in cosines else {}))
            probes.append(_ChildProbe(meta, child, index))
    return probes


class _ChildProbe(_Probe):
    """A row whose calls run in the sentence-transformers ONNX child: a block is one request to it."""

    def __init__(self, meta: dict[str, Any], child: StOnnxChild, job: int) -> None:
        super().__init__(meta, None)
        self.child, self.job = child, job

    def __call__(self, k: int) -> None:
        self.samples += self.child.block(self.job, k)

    def row(self) -> dict[str, Any]:
        if "error" in self.child.ready:  # died mid-bench: a part of its samples is not a side-by-side figure
            return {**self.meta, "unavailable": self.child.ready["error"]}
        return super().row()


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


class StOnnxChild:
    """``st_onnx_child`` running in ``python``: ``ready`` is its first answer (``{"error": why}`` when it could not
    start: a missing interpreter, a missing package, a crash — never an exception here), ``block`` asks it for
    timing blocks. A child that dies later leaves ``ready["error"]`` saying so and gives no more samples."""

    def __init__(self, python: str, job: dict[str, Any]) -> None:
        self.proc: subprocess.Popen[str] | None = None
        # its stderr (library warnings, a traceback) goes to a file: a pipe nobody reads while the bench waits on
        # stdout would fill and stall both processes
        self.stderr = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115  (closed by __exit__)
        try:
            self.proc = subprocess.Popen([python, st_onnx_child.__file__, json.dumps(job)], stdin=subprocess.PIPE,
                                         stdout=subprocess.PIPE, stderr=self.stderr, text=True,
                                         env={**os.environ, "PYTHONNOUSERSITE": "1"})
        except OSError as e:
            self.ready: dict[str, Any] = {"error": f"cannot run {python}: {e}"}
            return
        self.ready = self._answer() or self._died()

    def block(self, job: int, calls: int) -> list[float]:
        if "error" in self.ready or self.proc is None or self.proc.stdin is None:
            return []
        try:
            self.proc.stdin.write(json.dumps({"job": job, "calls": calls}) + "\n")
            self.proc.stdin.flush()
        except OSError:
            pass
        answer = self._answer()
        if not answer or "samples_s" not in answer:
            self.ready = self._died()
            return []
        return [float(x) for x in answer["samples_s"]]

    def _answer(self) -> dict[str, Any]:
        """The next JSON line on the child's stdout (lines a library printed are skipped); {} at its end."""
        assert self.proc is not None and self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                answer = json.loads(line)
            except ValueError:
                continue
            if isinstance(answer, dict):
                return answer
        return {}

    def _died(self) -> dict[str, Any]:
        assert self.proc is not None
        code = self.proc.wait()
        self.stderr.seek(0)
        tail = self.stderr.read().strip().splitlines()[-1:] or ["no output"]
        return {"error": f"the sentence-transformers ONNX child exited {code}: {tail[0][:300]}"}

    def __enter__(self) -> StOnnxChild:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stderr.close()
        if self.proc is not None and self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()  # the child's serve loop ends at EOF
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
