"""Jinja2 templates: the project's own ``templates/`` first, then the ones qeffbuild ships.

qeffbuild's templates live in the repository's top-level ``templates/``; the wheel installs
them as the package data folder ``qeffbuild/templates`` (``pyproject.toml`` maps one onto
the other), and an editable install reads them in place.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def shipped_templates() -> Path:
    package = Path(__file__).resolve().parent
    for candidate in (package / "templates", package.parent / "templates"):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"qeffbuild's templates are missing (looked in {package / 'templates'}); reinstall it")


def environment(project_root: Path | None = None) -> Any:
    """A strict jinja2 environment; ``project_root/templates`` overrides any shipped template."""
    from jinja2 import ChoiceLoader, Environment, FileSystemLoader, StrictUndefined

    loaders = []
    if project_root is not None and (project_root / "templates").is_dir():
        loaders.append(FileSystemLoader(project_root / "templates"))
    loaders.append(FileSystemLoader(shipped_templates()))
    return Environment(loader=ChoiceLoader(loaders), undefined=StrictUndefined, keep_trailing_newline=True,
                       autoescape=False)
