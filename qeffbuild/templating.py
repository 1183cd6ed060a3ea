"""Jinja2 templates: the project's own ``templates/`` first, then the ones qeffbuild ships.

qeffbuild's templates are package data (``qeffbuild/templates/``): a wheel carries them and an
editable install reads them in place. A project's own ``templates/`` (beside its manifests, or one
folder up) overrides any of them by name.

A project's templates come with its checkout, so rendering one must never run its code: every
environment here is Jinja2's ``ImmutableSandboxedEnvironment`` (no attribute starting with ``_``, no
mutation, no unsafe callables; ``lipsum.__globals__`` and the like are refused) with Jinja's default
globals removed but ``range``, so a template sees only the values it is given. A refusal, a syntax error or an
undefined name is a :class:`~qeffbuild.errors.TemplateError` naming the template and its line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def shipped_templates() -> Path:
    folder = Path(__file__).resolve().parent / "templates"
    if (folder / "project.toml.j2").is_file():
        return folder
    raise FileNotFoundError(f"qeffbuild's templates are missing (looked in {folder}); reinstall it")


def sandbox(**options: Any) -> Any:
    """A strict, sandboxed jinja2 environment: Jinja's filters and tests, and ``range`` as its only global."""
    from jinja2 import StrictUndefined
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    env = ImmutableSandboxedEnvironment(undefined=StrictUndefined, keep_trailing_newline=True, **options)
    # lipsum, cycler, joiner, namespace, dict: a template needs none of them (and they are the usual ladders
    # out of a sandbox); range stays, as the sandbox's bounded version
    env.globals = {"range": env.globals["range"]}
    return env


def environment(project_root: Path | None = None) -> Any:
    """The sandbox over files: ``project_root/templates`` overrides any shipped template."""
    from jinja2 import ChoiceLoader, FileSystemLoader

    loaders = []
    if project_root is not None and (project_root / "templates").is_dir():
        loaders.append(FileSystemLoader(project_root / "templates"))
    loaders.append(FileSystemLoader(shipped_templates()))
    return sandbox(loader=ChoiceLoader(loaders), autoescape=False)


def render(env: Any, name: str, where: str, values: dict[str, Any], source: str | None = None) -> str:
    """Render template ``name`` of ``env`` (or ``source``, its text) with ``values``; any failure is a
    TemplateError naming ``where`` (the template's file) and the line."""
    import jinja2
    from jinja2.sandbox import SecurityError

    from .errors import TemplateError

    try:
        template = env.from_string(source) if source is not None else env.get_template(name)
        text: str = template.render(**values)
        return text
    except jinja2.TemplateSyntaxError as e:
        raise TemplateError(f"{where}:{e.lineno}: template syntax error: {e.message}") from None
    except SecurityError as e:
        raise TemplateError(f"{where}:{_line(e, name)}: the template tried to reach beyond the values it is given "
                            f"({e}); templates may only format those values (it was not run)") from None
    except jinja2.UndefinedError as e:
        raise TemplateError(f"{where}:{_line(e, name)}: {e.message}; the template may use only the values "
                            "qeffbuild passes to it") from None
    except jinja2.TemplateError as e:
        raise TemplateError(f"{where}:{_line(e, name)}: {e}") from None


def _line(error: BaseException, name: str) -> str:
    """The template line of an error: Jinja rewrites tracebacks so that template frames carry it."""
    import traceback

    lines = [f.lineno for f in traceback.extract_tb(error.__traceback__)
             if f.filename == "<template>" or (name and f.filename.endswith(name))]
    return str(lines[-1]) if lines else "?"


def resolve_template(name: str, manifest_root: Path) -> Path:
    """Where template ``name`` is read from: ``templates/`` beside the manifest, then in its parent
    folder (a project root holding ``manifests/``), then the one qeffbuild ships."""
    for folder in (manifest_root / "templates", manifest_root.parent / "templates", shipped_templates()):
        if (folder / name).is_file():
            return folder / name
    raise FileNotFoundError(f"template {name!r} is missing from qeffbuild's templates ({shipped_templates()}); "
                            "reinstall qeffbuild")


def render_files(files: dict[str, Path], name: str, /, **values: Any) -> str:
    """Render template ``name`` from the files a step was given (labels ``template:<name>``), sandboxed."""
    from jinja2 import DictLoader

    sources = {label.removeprefix("template:"): path.read_text() for label, path in files.items()
               if label.startswith("template:")}
    env = sandbox(loader=DictLoader(sources), autoescape=False, trim_blocks=True, lstrip_blocks=True)
    env.filters["tojson_plain"] = _json_value
    env.filters["shell_quote"] = _shell_quote
    return render(env, name, f"templates/{name}", values)


def _json_value(value: Any) -> str:
    import json

    return json.dumps(value, ensure_ascii=True)


def _shell_quote(value: Any) -> str:
    import shlex

    return shlex.quote(str(value))
