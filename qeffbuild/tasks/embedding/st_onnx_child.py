"""sentence-transformers' own ONNX backend, timed in whatever Python has it installed (the bench's child process).

    PYTHON st_onnx_child.py JOB_JSON      # one JSON line when ready, then one per timing block asked on stdin

sentence-transformers runs ONNX through optimum, whose releases pin transformers below 5, so this backend often
cannot be installed beside qeffbuild. A user who wants it makes an environment of its own; the bench runs this
file there (``QEFFBUILD_ST_ONNX_PYTHON``, made by ``scripts/st-onnx-env.sh``) and reads the timings back. It
imports nothing from qeffbuild's package (only the standard library, sentence-transformers, and qeffbuild's
stdlib-only timing loop, loaded from its file).

JOB_JSON: {"model_dir", "work_dir", "pooling", "normalize", "device", "iters", "warmup", "sentences",
           "jobs": [{"batch", "seq", "int8"}]}. The model is exported once (as sentence-transformers does on
first use) into a copy of the folder under work_dir (a fresh folder); int8 is sentence-transformers'
``export_dynamic_quantized_onnx_model`` with the configuration its docs give for this CPU. Each job's texts are
tokenized once and the model's forward is timed, as ``encode`` runs it (``inference_mode``): the same work the
bench's other rows do on the same token ids. Each model (float32, int8) also embeds ``sentences`` (the
validation's), so the bench can say how close sentence-transformers' int8 stays to float32.

The child answers on stdout, one JSON object a line: first ``{"error": why}`` (and exits) or ``{"ready": true,
"files", "embeddings", "versions", ...}``; then, for each ``{"job": i, "calls": k}`` line on stdin, the seconds of
``k`` timed calls of job ``i``. The bench asks for those blocks in turn with its own rows' (it measures every
row round-robin), so this baseline shares every slow minute of the machine with the rows it is compared with.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import Any


def quantization_config() -> str:
    """sentence-transformers' int8 configurations by CPU: the most capable this machine runs."""
    try:
        flags = set(Path("/proc/cpuinfo").read_text().split())
    except OSError:
        flags = set()
    if "avx512_vnni" in flags:
        return "avx512_vnni"
    if "avx512f" in flags:
        return "avx512"
    return "avx2" if "avx2" in flags else "arm64"


def texts(batch: int, seq: int) -> list[str]:
    """The bench's texts: each fills exactly ``seq`` tokens once truncated (as embedding/bench.py makes them)."""
    return [" ".join(["word"] * (2 * seq)) + f" {i}" for i in range(batch)]


def load(folder: Path, job: dict[str, Any], spec: dict[str, Any], file_name: str | None) -> Any:
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.models import Normalize, Pooling, Transformer

    kwargs: dict[str, Any] = {"file_name": file_name} if file_name else {}
    if str(spec["device"]).startswith("cuda"):
        kwargs["provider"] = "CUDAExecutionProvider"
    word = Transformer(str(folder), max_seq_length=job["seq"], backend="onnx", model_args=kwargs)
    modules = [word, Pooling(word.get_word_embedding_dimension(), pooling_mode=spec["pooling"])]
    if spec["normalize"]:
        modules.append(Normalize())
    return SentenceTransformer(modules=modules, device=spec["device"], backend="onnx")


def export(spec: dict[str, Any]) -> tuple[Path, str | None]:
    """A copy of the model folder (work_dir is the bench's fresh temporary folder) with its ONNX export, and its
    int8 export when a job asks: sentence-transformers' own calls, on one loaded model."""
    import sentence_transformers as st

    folder = Path(spec["work_dir"]) / "model"
    shutil.copytree(spec["model_dir"], folder)
    model = st.SentenceTransformer(str(folder), backend="onnx", device=spec["device"])
    model.save_pretrained(str(folder))  # onnx/model.onnx
    if not any(job["int8"] for job in spec["jobs"]):
        return folder, None
    config = quantization_config()
    st.export_dynamic_quantized_onnx_model(model, config, str(folder))
    return folder, f"onnx/model_qint8_{config}.onnx"


def time_calls() -> Any:
    """qeffbuild's own timing loop (``reports/timing.py``, standard library only), loaded from its file: this
    Python may not have qeffbuild installed, and the baseline must be timed exactly as the other rows are."""
    import importlib.util

    path = Path(__file__).resolve().parents[2] / "reports" / "timing.py"
    spec = importlib.util.spec_from_file_location("qeffbuild_timing", path)
    assert spec is not None and spec.loader is not None, path
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.time_calls


def main() -> None:
    spec = json.loads(sys.argv[1])
    try:
        import onnxruntime
        import optimum.onnxruntime  # noqa: F401  (what sentence-transformers' ONNX backend runs on)
        import sentence_transformers
        import torch
        import transformers
    except ImportError as e:
        print(json.dumps({"error": f"{type(e).__name__}: {e} (sentence-transformers' ONNX backend needs "
                                   "optimum: pip install 'sentence-transformers[onnx]')"}), flush=True)
        return
    try:
        folder, int8 = export(spec)
    except Exception as e:  # a backend that will not export here: reported as the row's reason
        print(json.dumps({"error": f"{type(e).__name__}: {str(e)[:400]}"}), flush=True)
        return
    timed, calls, files = time_calls(), [], []
    for job in spec["jobs"]:
        model = load(folder, job, spec, int8 if job["int8"] else None)
        prepare = getattr(model, "preprocess", None) or model.tokenize
        features = {k: v.to(model.device) if hasattr(v, "to") else v
                    for k, v in prepare(texts(job["batch"], job["seq"])).items()}

        def forward(model: Any = model, features: dict[str, Any] = features) -> None:
            with torch.inference_mode():
                model.forward(dict(features))["sentence_embedding"].cpu()

        timed(forward, spec["warmup"], 0)
        calls.append(forward)
        files.append(int8 if job["int8"] else "onnx/model.onnx")
    embeddings = {}
    longest = max(job["seq"] for job in spec["jobs"])
    for kind in sorted({"int8" if job["int8"] else "float32" for job in spec["jobs"]}):
        model = load(folder, {"seq": longest}, spec, int8 if kind == "int8" else None)
        vectors = model.encode(spec["sentences"], batch_size=len(spec["sentences"]), convert_to_numpy=True,
                               show_progress_bar=False)
        embeddings[kind] = vectors.tolist()
    print(json.dumps({"ready": True, "files": files, "embeddings": embeddings, "quantization": quantization_config(),
                      "versions": {"sentence-transformers": sentence_transformers.__version__,
                                   "transformers": transformers.__version__, "onnxruntime": onnxruntime.__version__,
                                   "python": sys.version.split()[0]}}), flush=True)
    serve(calls, timed)


def serve(calls: list[Any], timed: Any) -> None:
    """Timing blocks on request, until stdin closes: ``{"job": i, "calls": k}`` → ``{"samples_s": [k seconds]}``,
    each block opened by one untimed call (the bench interleaves these blocks with its own rows')."""
    for line in sys.stdin:
        ask = json.loads(line)
        print(json.dumps({"samples_s": timed(calls[ask["job"]], 1, ask["calls"])}), flush=True)


if __name__ == "__main__":
    main()
