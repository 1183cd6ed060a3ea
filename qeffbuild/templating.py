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
        if (candidate / "project.toml.j2").is_file():  # an empty folder left by an install is not it
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


def resolve_template(name: str, manifest_root: Path) -> Path:
    """Where template ``name`` is read from: ``templates/`` beside the manifest, then in its parent
    folder (a project root holding ``manifests/``), then the one qeffbuild ships."""
    for folder in (manifest_root / "templates", manifest_root.parent / "templates", shipped_templates()):
        if (folder / name).is_file():
            return folder / name
    raise FileNotFoundError(f"template {name!r} is missing from qeffbuild's templates ({shipped_templates()}); "
                            "reinstall qeffbuild")


def render_files(files: dict[str, Path], name: str, **values: Any) -> str:
    """Render template ``name`` from the files a step was given (labels ``template:<name>``)."""
    from jinja2 import DictLoader, Environment, StrictUndefined

    sources = {label.removeprefix("template:"): path.read_text() for label, path in files.items()
               if label.startswith("template:")}
    env = Environment(loader=DictLoader(sources), undefined=StrictUndefined, keep_trailing_newline=True,
                      autoescape=False, trim_blocks=True, lstrip_blocks=True)
    env.filters["tojson_plain"] = _json_value
    env.filters["shell_quote"] = _shell_quote
    return env.get_template(name).render(**values)


def _json_value(value: Any) -> str:
    import json

    return json.dumps(value, ensure_ascii=True)


def _shell_quote(value: Any) -> str:
    import shlex

    return shlex.quote(str(value))
