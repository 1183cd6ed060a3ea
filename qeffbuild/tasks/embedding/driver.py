"""The embedding task driver: tokenize → pad to a compiled seq_len → run → unpad.

Written once, run on every runtime: a runtime is just a ``run(feeds) -> outputs`` per
compiled ``seq_len``. Batches are formed from length-sorted inputs (as
sentence-transformers does) and each is padded to the smallest compiled seq_len that
fits, as QEfficient's runtime does.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ...errors import InputError

RunFn = Callable[[dict[str, Any], int], Any]  # (feeds, seq_len) -> [batch, dim]


def read_sentences(path: Path) -> list[str]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"{path}: cannot read the sentences file: {e}") from e
    sentences = [ln.strip() for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]
    if not sentences:
        raise InputError(f"{path}: no sentences (one per line; '#' starts a comment)")
    return sentences


def tokenize(tokenizer: Any, sentences: list[str]) -> list[list[int]]:
    ids: list[list[int]] = tokenizer(sentences, add_special_tokens=True, truncation=False)["input_ids"]
    return ids


@dataclass
class Bucketed:
    embeddings: Any  # [N, dim] float32, input order
    seq_len_of: list[int]  # the compiled seq_len each input ran with
    batches_per_seq_len: dict[int, int] = field(default_factory=dict)
    latency_s: list[dict[str, Any]] = field(default_factory=list)  # per batch: seq_len, rows, seconds


def check_lengths(token_ids: list[list[int]], longest: int, seq_lens: list[int] | None = None,
                  where: str = "") -> None:
    """Every input must fit the longest compiled seq_len (said before any model runs on it)."""
    for i, ids in enumerate(token_ids):
        if len(ids) > longest:
            raise InputError(f"input {i + 1} has {len(ids)} tokens, longer than every compiled seq_len "
                             f"{seq_lens or [longest]}{where}; add a seq_len ≥ {len(ids)} to the specialization "
                             "(within the model's position limit) or shorten the input")


def run_bucketed(token_ids: list[list[int]], run: RunFn, batch_size: int, seq_lens: list[int],
                 pad_id: int, where: str = "") -> Bucketed:
    import numpy as np

    check_lengths(token_ids, max(seq_lens), seq_lens, where)
    order = sorted(range(len(token_ids)), key=lambda i: (len(token_ids[i]), i))
    outputs: dict[int, Any] = {}
    seq_of: dict[int, int] = {}
    used: dict[int, int] = {}
    timings: list[dict[str, Any]] = []
    for start in range(0, len(order), batch_size):
        rows = order[start:start + batch_size]
        need = max(len(token_ids[i]) for i in rows)
        seq = min(s for s in seq_lens if s >= need)
        batch_ids = np.full((batch_size, seq), pad_id, dtype=np.int64)
        mask = np.zeros((batch_size, seq), dtype=np.int64)
        for r in range(batch_size):
            src = token_ids[rows[r] if r < len(rows) else rows[0]]  # pad the batch with a real row
            batch_ids[r, : len(src)] = src
            mask[r, : len(src)] = 1
        t0 = time.perf_counter()
        out = np.asarray(run({"input_ids": batch_ids, "attention_mask": mask}, seq))
        timings.append({"seq_len": seq, "rows": len(rows), "seconds": round(time.perf_counter() - t0, 6)})
        for r, i in enumerate(rows):
            outputs[i] = out[r]
            seq_of[i] = seq
        used[seq] = used.get(seq, 0) + 1
    emb = np.stack([outputs[i] for i in range(len(token_ids))]).astype(np.float32)
    return Bucketed(emb, [seq_of[i] for i in range(len(token_ids))], dict(sorted(used.items())), timings)


def reference(model_dir: Path, sentences: list[str], pooling: str, normalize: bool, batch_size: int = 8) -> Any:
    """The unmodified Hugging Face model in float32, batches padded only to their longest input."""
    import numpy as np
    import torch
    from transformers import AutoModel, AutoTokenizer

    from .pooling import make_pooled

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = make_pooled(AutoModel.from_pretrained(model_dir, dtype=torch.float32).eval(), pooling, normalize)
    out = []
    with torch.no_grad():
        for start in range(0, len(sentences), batch_size):
            enc = tokenizer(sentences[start:start + batch_size], padding=True, truncation=False, return_tensors="pt")
            out.append(model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).float().numpy())
    return np.concatenate(out).astype(np.float32)
