"""Model sources at plan time: where a model's files are and what its digest is.

Nothing here imports torch or transformers. A local folder or a package's bundled model
is digested file by file (through the stat cache); a hub snapshot by its commit; a random
model by architecture, config and seed (the transformers version enters through the
load step's toolchain).
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import InputError
from .manifest import HubSource, PackageSource, PathSource, RandomSource
from .steps import FileInput

# Files that never affect a model (editor and VCS droppings, docs).
_SKIP = re.compile(r"(^|/)(\.git|\.cache|__pycache__)(/|$)|\.(md|lock)$")


@dataclass(frozen=True)
class Resolved:
    """A source made concrete: key params, digested files, and the folder to read."""

    params: dict[str, Any]
    files: tuple[FileInput, ...] = ()
    folder: Path | None = None  # read the model from here (None: build it from config)
    config: dict[str, Any] = field(default_factory=dict)  # config.json as found, for shape checks


def _folder_files(folder: Path, label_prefix: str) -> tuple[FileInput, ...]:
    out: list[FileInput] = []
    for dirpath, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            path = Path(dirpath) / name
            rel = path.relative_to(folder).as_posix()
            if not _SKIP.search(rel):
                out.append(FileInput(f"{label_prefix}/{rel}", path))
    return tuple(out)


def _read_config(folder: Path) -> dict[str, Any]:
    try:
        data: dict[str, Any] = json.loads((folder / "config.json").read_text())
        return data
    except (OSError, ValueError):
        return {}


def package_folder(src: PackageSource) -> Path:
    spec = importlib.util.find_spec(src.package)
    if spec is None or not spec.submodule_search_locations:
        raise InputError(f"Python package {src.package!r} is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / src.subdir


def hf_cache_dir() -> Path:
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    home = Path(os.environ.get("HF_HOME", Path.home() / ".cache" / "huggingface"))
    return home / "hub"


def resolve_hub(src: HubSource) -> tuple[str, Path]:
    """The commit and snapshot folder of a hub model, from the local cache only."""
    cache = hf_cache_dir()
    repo = cache / f"models--{src.hf.replace('/', '--')}"
    if re.fullmatch(r"[0-9a-f]{40}", src.revision):
        commit = src.revision
    else:
        ref = repo / "refs" / src.revision
        try:
            commit = ref.read_text().strip()
        except OSError:
            raise InputError(
                f"model {src.hf!r} (revision {src.revision!r}) is not in the Hugging Face cache at {cache} "
                "and qeffbuild never downloads at build time. Fetch it once where the hub is reachable "
                f"(`hf download {src.hf}`) and copy the cache here (or set HF_HOME / HF_HUB_CACHE), "
                "or point source to a local folder with source = { path = ... }."
            ) from None
    snapshot = repo / "snapshots" / commit
    if not (snapshot / "config.json").is_file():
        raise InputError(f"model {src.hf!r}: snapshot {commit} in {repo} has no config.json; the cache is "
                         "incomplete, download it again")
    return commit, snapshot


def resolve(source: Any, root: Path) -> Resolved:
    if isinstance(source, PathSource):
        folder = (root / source.path).resolve()
        label = Path(os.path.normpath(source.path)).as_posix()
        return Resolved({"kind": "path"}, _folder_files(folder, label), folder, _read_config(folder))
    if isinstance(source, PackageSource):
        folder = package_folder(source)
        label = f"package:{source.package}/{source.subdir}"
        return Resolved({"kind": "package", "package": source.package}, _folder_files(folder, label), folder,
                        _read_config(folder))
    if isinstance(source, HubSource):
        commit, snapshot = resolve_hub(source)
        return Resolved({"kind": "hf", "id": source.hf, "commit": commit}, (), snapshot, _read_config(snapshot))
    if isinstance(source, RandomSource):
        params: dict[str, Any] = {"kind": "random", "architecture": source.random, "config": source.config,
                                  "seed": source.seed}
        files: tuple[FileInput, ...] = ()
        if source.tokenizer is not None:
            tok = resolve(source.tokenizer, root)
            params["tokenizer"] = tok.params
            files = tuple(FileInput(f"tokenizer:{f.label}", f.path) for f in tok.files
                          if _is_preprocessor_file(f.path.name))
        return Resolved(params, files, None, dict(source.config))
    raise TypeError(f"unknown source {source!r}")


def _is_preprocessor_file(name: str) -> bool:
    """Tokenizer and feature-extractor files: a random model takes only these from its tokenizer source."""
    return (name.startswith(("tokenizer", "special_tokens", "vocab", "merges", "preprocessor", "added_tokens",
                             "normalizer", "spiece", "sentencepiece")) and not name.endswith(".safetensors"))
