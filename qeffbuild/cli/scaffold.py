"""`qeffbuild init`: write a starter manifest and its data file from a jinja2 template."""

from __future__ import annotations

import re
from pathlib import Path

from ..errors import UsageError

SENTENCES = """The quick brown fox jumps over the lazy dog.
qeffbuild caches every step by the hash of its inputs.
A rebuild runs only what changed.
Embeddings from every runtime must agree with the reference.
Short one.
"""


def scaffold(path: Path, name: str, force: bool = False) -> list[Path]:
    from ..templating import environment, render, resolve_template

    if path.suffix != ".toml":
        raise UsageError(f"{path}: a manifest file name ends in .toml")
    data = path.parent / "data" / "sentences.txt"
    existing = [p for p in (path, data) if p.exists()]
    if existing and not force:
        raise UsageError(f"{existing[0]} exists; pass --force to overwrite it, or choose another path")
    slug = re.sub(r"[^A-Za-z0-9_-]+", "-", name).strip("-").lower() or "project"
    where = str(resolve_template("project.toml.j2", path.parent))
    text = render(environment(path.parent.parent), "project.toml.j2", where,
                  {"name": slug, "model": "tiny-bert", "data_file": "data/sentences.txt"})
    path.parent.mkdir(parents=True, exist_ok=True)
    data.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    data.write_text(SENTENCES)
    return [path, data]
