"""The `qeffbuild` command group: shared options (with environment variables), errors and output."""

from __future__ import annotations

import contextlib
import gc
import json
import os
import signal
import sys
import tempfile
from collections.abc import Callable, Iterator
from functools import wraps
from pathlib import Path
from typing import Any, TypeVar

import click

from .. import __version__
from ..errors import ManifestError, QeffbuildError

F = TypeVar("F", bound=Callable[..., Any])

EPILOG = """\b
Environment: QEFFBUILD_MANIFESTS (paths, ':'-separated), QEFFBUILD_OUT_DIR, QEFFBUILD_CACHE_DIR,
QEFFBUILD_JOBS. Commands with --json print one JSON document on stdout, errors included.
Exit codes: 0 ok, 1 a step or check failed, 2 a usage or manifest error, 130 interrupted.
Shell completion (bash; zsh and fish likewise):  eval "$(_QEFFBUILD_COMPLETE=bash_source qeffbuild)"
"""


def error_json(e: QeffbuildError) -> dict[str, Any]:
    data: dict[str, Any] = {"ok": False, "error": {"type": type(e).__name__, "exit_code": e.exit_code,
                                                   "message": str(e)}}
    if isinstance(e, ManifestError):
        data["error"]["problems"] = [{"file": p.file, "line": p.line, "table": p.table, "key": p.key,
                                      "message": p.message} for p in e.problems]
    return data


def handle_errors(fn: F) -> F:
    """A QeffbuildError becomes its message (or JSON with --json) and its exit code: no traceback."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except QeffbuildError as e:
            if e.exit_code == 130:
                _exiting_interrupted()
            if kwargs.get("as_json"):
                click.echo(json.dumps(error_json(e), indent=1))
            click.echo(f"error: {e}" if "\n" not in str(e) else str(e), err=True)
            sys.exit(e.exit_code)
        except KeyboardInterrupt:
            _exiting_interrupted()
            click.echo("interrupted", err=True)
            sys.exit(130)
        except BrokenPipeError:  # the reader went away (`qeffbuild env | head`): stop quietly, as `cat` does
            _quiet_stdout()
            sys.exit(141)
        except Exception as e:  # a bug in qeffbuild, not the user's mistake: short, with how to see more
            if os.environ.get("QEFFBUILD_DEBUG"):
                raise
            if _a_full_disk(e):  # not a bug: the machine's disk (a native library says so only in its message)
                click.echo(f"error: no space left on the device ({type(e).__name__}: {e}): free space on the disk of "
                           f"the temporary folder ({tempfile.gettempdir()}) or of the cache, or point TMPDIR or "
                           "QEFFBUILD_CACHE_DIR at a larger disk", err=True)
                sys.exit(1)
            click.echo(f"internal error (a bug in qeffbuild): {type(e).__name__}: {e}\n"
                       "run again with QEFFBUILD_DEBUG=1 for the traceback, and please report it", err=True)
            sys.exit(70)

    return wrapper  # type: ignore[return-value]


def _a_full_disk(error: BaseException) -> bool:
    """Whether ``error`` is a write that found the disk full: an OSError with ENOSPC, or a native library's
    exception carrying the OS's words for it (torch's AOTInductor loader raises RuntimeError "Error generating
    temporary directory: No space left on device")."""
    import errno

    if isinstance(error, OSError) and error.errno == errno.ENOSPC:
        return True
    return os.strerror(errno.ENOSPC) in str(error)


def _quiet_stdout() -> None:
    """Point stdout at /dev/null so Python's exit-time flush of a closed pipe cannot raise again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


_signals_seen = 0


def _on_signal(signum: int, _frame: Any) -> None:
    """First SIGINT/SIGTERM: stop the build cleanly (KeyboardInterrupt); a second: kill every step's
    process group and exit 130 at once (scratch left behind is swept by the next build)."""
    global _signals_seen
    _signals_seen += 1
    if _signals_seen > 1:
        if "qeffbuild.exec.runner" in sys.modules:
            sys.modules["qeffbuild.exec.runner"].kill_all_groups()
        sys.stderr.write("interrupted twice: stopped at once\n")
        os._exit(130)
    raise KeyboardInterrupt


def _exiting_interrupted() -> None:
    """The build has stopped and is exiting 130: a signal arriving now (a second Ctrl-C, a supervisor's
    SIGTERM) must not turn that into death by signal while the interpreter shuts down."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)


def warn_broken_plugins() -> None:
    """Say on stderr which plug-ins failed to load (the command went on without them)."""
    from ..core.plugins import plugins

    for line in plugins().broken:
        click.echo(f"warning: {line}", err=True)


@contextlib.contextmanager
def stdout_kept_for_json(on: bool) -> Iterator[None]:
    """With ``on``: everything written to stdout meanwhile — by any library, Python or C, such as Ray's
    "(raylet) A worker died…" lines — goes to stderr, so that stdout carries only the JSON printed after."""
    if not on:
        yield
        return
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def echo_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=1, sort_keys=True, default=str))


def _manifest_paths(value: tuple[Path, ...]) -> list[Path] | None:
    if value:
        return list(value)
    env = os.environ.get("QEFFBUILD_MANIFESTS")
    return [Path(p) for p in env.split(os.pathsep) if p] if env else None


class LazyProject:
    """Builds the Project on first use, so `--help` and `schema` never touch manifests."""

    def __init__(self, manifests: list[Path] | None, out_dir: Path | None, cache_dir: Path | None) -> None:
        self.args = (manifests, out_dir, cache_dir)
        self._project: Any = None

    def get(self) -> Any:
        if self._project is None:
            from ..api import Project

            self._project = Project(*self.args)
        return self._project


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110}, epilog=EPILOG)
@click.option("-m", "--manifest", "manifests", multiple=True, type=click.Path(path_type=Path),
              help="Manifest file or folder (repeatable). Default: manifests/ of the nearest folder at or above "
                   "the working directory that has one. Env: QEFFBUILD_MANIFESTS.")
@click.option("--out-dir", type=click.Path(path_type=Path), default=None, envvar="QEFFBUILD_OUT_DIR",
              show_envvar=True, help="Outputs folder. Default: out/ beside manifests/.")
@click.option("--cache-dir", type=click.Path(path_type=Path), default=None, envvar="QEFFBUILD_CACHE_DIR",
              show_envvar=True, help="Cache folder. Default: OUT_DIR/.cache.")
@click.version_option(version=__version__, prog_name="qeffbuild")
@click.pass_context
def main(ctx: click.Context, manifests: tuple[Path, ...], out_dir: Path | None, cache_dir: Path | None) -> None:
    """qeffbuild: build, cache and validate model artifacts declared in TOML manifests."""
    # Planning allocates many small, long-lived objects; the default collector thresholds make it
    # rescan them over and over (a 20,000-step plan spent a third of its time there).
    gc.set_threshold(200_000, 20, 100)
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    # qeffbuild never downloads at build time: hub ids resolve from the local cache only.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    ctx.obj = LazyProject(_manifest_paths(manifests), out_dir, cache_dir)


def _late_option(name: str) -> Callable[[click.Context, click.Parameter, Any], None]:
    """The callback of a project option given after the subcommand: it overrides the group's value."""

    def set_it(ctx: click.Context, _param: click.Parameter, value: Any) -> None:
        if value is None or value == ():
            return
        lazy = ctx.find_root().obj
        if isinstance(lazy, LazyProject):
            manifests, out_dir, cache_dir = lazy.args
            if name == "manifests":
                manifests = list(value)
            elif name == "out_dir":
                out_dir = value
            else:
                cache_dir = value
            lazy.args = (manifests, out_dir, cache_dir)

    return set_it


def add_project_options(command: click.Command) -> None:
    """Accept -m, --out-dir and --cache-dir after the subcommand too (`qeffbuild build -m x.toml`), as before
    it; given in both places, the later wins."""
    command.params += [
        click.Option(["-m", "--manifest", "manifests"], multiple=True, type=click.Path(path_type=Path),
                     expose_value=False, callback=_late_option("manifests"), is_eager=True,
                     help="Manifest file or folder (repeatable); as before the subcommand."),
        click.Option(["--out-dir"], type=click.Path(path_type=Path), expose_value=False, is_eager=True,
                     callback=_late_option("out_dir"), help="Outputs folder; as before the subcommand."),
        click.Option(["--cache-dir"], type=click.Path(path_type=Path), expose_value=False, is_eager=True,
                     callback=_late_option("cache_dir"), help="Cache folder; as before the subcommand."),
    ]


def complete_targets(ctx: click.Context, _param: click.Parameter, incomplete: str) -> list[str]:
    """Shell completion of target names (silent when the manifests do not load)."""
    try:
        root = ctx.find_root()
        project = root.obj.get() if isinstance(root.obj, LazyProject) else None
        if project is None:
            from ..api import Project

            project = Project(_manifest_paths(tuple(root.params.get("manifests") or ())))
        return [n for n in project.workspace.targets if n.startswith(incomplete)]
    except Exception:
        return []
