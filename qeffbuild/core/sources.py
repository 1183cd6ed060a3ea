"""Model sources at plan time: where a model's files are and what its identity is.

Nothing here imports torch or transformers. A model's identity is its content: a local folder, a
package's bundled model and a hub snapshot are all identified by their files' contents (digested
through the stat cache, labelled relative to the model folder), so the same bytes declared as
``hf = "org/name"``, as ``path = …`` or reached by another relative path share every cached step,
and two models with one name and different weights never do. A random model is identified by
architecture, config and seed (the transformers version enters through the load step's toolchain).
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import InputError
from .steps import FileInput
from .tables import ComposedSource, HubSource, PackageSource, PathSource, RandomSource

# Files that never affect a model (editor and VCS droppings, docs).
_SKIP = re.compile(r"(^|/)(\.git|\.cache|__pycache__)(/|$)|\.(md|lock)$")


@dataclass(frozen=True)
class Resolved:
    """A source made concrete: key params, digested files, the folder to read, and what it is."""

    params: dict[str, Any]
    files: tuple[FileInput, ...] = ()
    folder: Path | None = None  # read the model from here (None: build it from config)
    config: dict[str, Any] = field(default_factory=dict)  # config.json as found, for plan-time checks
    architecture: str | None = None  # the transformers class, when known without importing it
    model_type: str | None = None
    paths: dict[str, Path] = field(default_factory=dict)  # role -> folder the load step reads (never in a key)


def folder_files(folder: Path, label_prefix: str) -> tuple[FileInput, ...]:
    """Every regular file under ``folder`` (links to regular files too), labelled by relative path.

    FIFOs, devices and sockets are refused: reading one would hang or never end.
    """
    out: list[FileInput] = []
    for dirpath, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            path = Path(dirpath) / name
            rel = path.relative_to(folder).as_posix()
            if _SKIP.search(rel):
                continue
            try:
                mode = os.stat(path).st_mode
            except OSError as e:
                raise InputError(f"{path}: cannot read ({e.strerror}); fix or remove it") from e
            if not stat.S_ISREG(mode):
                raise InputError(f"{path} is not a regular file (a FIFO, device or socket): a model folder holds "
                                 "files only; remove it")
            out.append(FileInput(f"{label_prefix}/{rel}", path))
    return tuple(out)


def read_config(folder: Path) -> dict[str, Any]:
    path = folder / "config.json"
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"{folder} has no config.json: it is not a Hugging Face model folder (save one with "
                         "model.save_pretrained(folder))") from None
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"{path}: cannot read ({e})") from e
    try:
        data = json.loads(text)
    except ValueError as e:
        raise InputError(f"{path} is not valid JSON ({e}); restore it from the model's source") from e
    if not isinstance(data, dict):
        raise InputError(f"{path} holds {type(data).__name__}, not a JSON object")
    return data


def package_folder(src: PackageSource) -> Path:
    spec = importlib.util.find_spec(src.package) if src.package.isidentifier() else None
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
        if not re.fullmatch(r"[0-9a-f]{40}", commit):
            raise InputError(f"model {src.hf!r}: {ref} does not hold a commit hash; the cache is damaged, "
                             "download it again")
    snapshot = repo / "snapshots" / commit
    if not (snapshot / "config.json").is_file():
        raise InputError(f"model {src.hf!r}: snapshot {commit} in {repo} has no config.json; the cache is "
                         "incomplete, download it again")
    return commit, snapshot


def _described(params: dict[str, Any], files: tuple[FileInput, ...], folder: Path) -> Resolved:
    config = read_config(folder)
    archs = config.get("architectures")
    arch = archs[0] if isinstance(archs, list) and archs and isinstance(archs[0], str) else None
    model_type = config.get("model_type") if isinstance(config.get("model_type"), str) else None
    return Resolved(params, files, folder, config, arch, model_type, {"source": folder})


# How a family joins an encoder and a decoder resolved on their own: (config, architecture, model_type).
Compose = Callable[[Resolved, Resolved], tuple[dict[str, Any], str, str]]


def resolve(source: Any, root: Path, compose: Compose | None = None) -> Resolved:
    if isinstance(source, PathSource):
        folder = (root / source.path).resolve()
        return _described({"kind": "files"}, folder_files(folder, "model"), folder)
    if isinstance(source, PackageSource):
        folder = package_folder(source)
        return _described({"kind": "files"}, folder_files(folder, "model"), folder)
    if isinstance(source, HubSource):
        _commit, snapshot = resolve_hub(source)
        return _described({"kind": "files"}, folder_files(snapshot, "model"), snapshot)
    if isinstance(source, RandomSource):
        params: dict[str, Any] = {"kind": "random", "architecture": source.random, "config": source.config,
                                  "seed": source.seed}
        files: tuple[FileInput, ...] = ()
        paths: dict[str, Path] = {}
        if source.tokenizer is not None:
            tok = source.tokenizer
            folder = (root / tok.path).resolve() if isinstance(tok, PathSource) else package_folder(tok)
            params["tokenizer"] = {"kind": "path"} if isinstance(tok, PathSource) else \
                {"kind": "package", "package": tok.package}
            files = tuple(f for f in folder_files(folder, "tokenizer") if is_preprocessor_file(f.path.name))
            paths["tokenizer"] = folder
        return Resolved(params, files, None, dict(source.config), source.random,
                        source.config.get("model_type") if isinstance(source.config.get("model_type"), str) else None,
                        paths)
    if isinstance(source, ComposedSource):
        return _composed(source, root, compose)
    raise TypeError(f"unknown source {source!r}")


def _composed(source: ComposedSource, root: Path, compose: Compose | None) -> Resolved:
    """Encoder and decoder resolved on their own, joined as the model's family says; the model's identity covers
    both."""
    sides = {"encoder": resolve(source.encoder, root), "decoder": resolve(source.decoder, root)}
    files = tuple(FileInput(f"{side}/{f.label}", f.path) for side, r in sides.items() for f in r.files)
    paths = {f"{side}-{role}": path for side, r in sides.items() for role, path in r.paths.items()}
    params = {"kind": "composed", "encoder": sides["encoder"].params, "decoder": sides["decoder"].params}
    if compose is None:
        return Resolved(params, files, None, {}, None, None, paths)
    config, architecture, model_type = compose(sides["encoder"], sides["decoder"])
    return Resolved(params, files, None, config, architecture, model_type, paths)


def is_preprocessor_file(name: str) -> bool:
    """Tokenizer and feature-extractor files: a random model takes only these from its tokenizer source."""
    return (name.startswith(("tokenizer", "special_tokens", "vocab", "merges", "preprocessor", "added_tokens",
                             "normalizer", "spiece", "sentencepiece", "processor")) and
            not name.endswith(".safetensors"))
