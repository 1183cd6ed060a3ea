"""`qeffbuild run` for embeddings: embed sentences with a built specialization's runtime (JSON out)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ...core.plugins import plugins
from ...errors import UsageError
from ...runtimes import open_session
from .driver import run_bucketed, tokenize


def run(folder: Path, spec: dict[str, Any], runtime: str, inputs: list[str],
        options: dict[str, Any]) -> list[dict[str, Any]]:
    """Embed ``inputs`` (sentences, or files of sentences with ``@path``) with the built ``folder``."""
    from transformers import AutoTokenizer

    from .driver import read_sentences

    sentences: list[str] = []
    for item in inputs:
        sentences += read_sentences(Path(item[1:])) if item.startswith("@") else [item]
    if not sentences:
        raise UsageError("no sentences given")
    opens = plugins().runtimes.get(runtime).opens
    if opens == "reference":
        raise UsageError(f"runtime {runtime!r} is the reference; run a built artifact (pytorch-transformed, "
                         "onnxruntime, aoti)")
    tokenizer = AutoTokenizer.from_pretrained(folder / "model")
    token_ids = tokenize(tokenizer, sentences)
    device = spec["device"]
    if opens == "program":
        session = open_session(plugins(), runtime, folder / f"transform-{spec['dtype']}", device)
        fn = lambda feeds, _seq: session.run(feeds)[0]  # noqa: E731
    else:
        # One artifact per length (seq16/, seq64/), or one holding every length (a QPC: the backend's folder).
        one = folder / opens if (folder / opens / "io.json").is_file() else None
        missing = [n for n in spec["seq_len"] if one is None and not (folder / opens / f"seq{n}").is_dir()]
        if missing:
            raise UsageError(f"{folder} has no {opens!r} artifacts; add {opens!r} to the specialization's compile list")
        shared = open_session(plugins(), runtime, one, device) if one is not None else None
        sessions = {n: shared or open_session(plugins(), runtime, folder / opens / f"seq{n}", device)
                    for n in spec["seq_len"]}
        fn = lambda feeds, seq: sessions[seq].run(feeds)[0]  # noqa: E731
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    out = run_bucketed(token_ids, fn, spec["batch_size"], spec["seq_len"], pad)
    return [{"input": s, "embedding": [round(float(v), 7) for v in e]} for s, e in zip(sentences, out.embeddings,
                                                                                          strict=True)]
