"""The `qeffbuild` command line: a thin layer over :mod:`qeffbuild.api`."""

from __future__ import annotations

import json
import os
import signal
import sys
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Any, TypeVar

import click

from .api import BuildResult, Project
from .errors import QeffbuildError, UsageError

F = TypeVar("F", bound=Callable[..., Any])


def _errors(fn: F) -> F:
    """Turn QeffbuildError into a message and its exit code: no traceback for a user's mistake."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except QeffbuildError as e:
            click.echo(f"error: {e}" if "\n" not in str(e) else str(e), err=True)
            sys.exit(e.exit_code)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)

    return wrapper  # type: ignore[return-value]


def _sigterm(_signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-m", "--manifest", "manifests", multiple=True, type=click.Path(path_type=Path),
              help="Manifest file or folder (repeatable). Default: ./manifests")
@click.option("--out-dir", type=click.Path(path_type=Path), default=None, help="Outputs folder. Default: ./out")
@click.option("--cache-dir", type=click.Path(path_type=Path), default=None,
              help="Cache folder. Default: $QEFFBUILD_CACHE_DIR, else OUT_DIR/.cache")
@click.version_option(package_name="qeffbuild")
@click.pass_context
def main(ctx: click.Context, manifests: tuple[Path, ...], out_dir: Path | None, cache_dir: Path | None) -> None:
    """qeffbuild: build, cache and validate model artifacts declared in TOML manifests."""
    signal.signal(signal.SIGTERM, _sigterm)
    # qeffbuild never downloads at build time: hub ids resolve from the local cache only.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    ctx.obj = Project(list(manifests) or None, out_dir, cache_dir)


def _print_result(result: BuildResult, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(result.to_json(), indent=1, sort_keys=True))
        return
    counts = result.counts()
    summary = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
    for sid, info in result.failures.items():
        if info["status"] == "skipped":
            continue
        click.echo(f"\n{info['status'].upper()}: {sid}\n{info['message']}".rstrip(), err=True)
    for t in result.targets:
        report = Path(result.outputs.get(t, "")) / "report.txt"
        if t in result.outputs and report.is_file():
            click.echo(report.read_text().rstrip())
    state = "ok" if result.ok else "FAILED"
    up = " (up to date)" if counts.keys() <= {"cached"} else ""
    click.echo(f"{state}: {len(result.targets)} target(s){up}; steps: {summary or 'none'}; {result.wall_s:.2f}s",
               err=not result.ok)


@main.command()
@click.argument("targets", nargs=-1)
@click.option("-j", "--jobs", type=click.IntRange(min=1), default=None, help="Parallel steps. Default: cores.")
@click.option("-k", "--keep-going", is_flag=True, help="Build what does not depend on a failure.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable result on stdout.")
@click.option("-q", "--quiet", is_flag=True, help="No progress output.")
@click.pass_obj
@_errors
def build(project: Project, targets: tuple[str, ...], jobs: int | None, keep_going: bool, as_json: bool,
          quiet: bool) -> None:
    """Build TARGETS (default: the manifests' defaults); run only what changed."""
    from .progress import make_reporter

    result = project.build(targets, jobs=jobs, keep_going=keep_going, reporter=make_reporter(quiet or as_json))
    _print_result(result, as_json)
    sys.exit(0 if result.ok else 1)


@main.command()
@click.argument("targets", nargs=-1)
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
@_errors
def plan(project: Project, targets: tuple[str, ...], as_json: bool) -> None:
    """Show what a build would run, and why each step must run."""
    p = project.plan(targets)
    if as_json:
        click.echo(json.dumps(p.to_json(), indent=1, sort_keys=True))
        return
    for s in p.steps:
        if s.cached:
            click.echo(f"cached  {s.id}")
        else:
            click.echo(f"run     {s.id}")
            for r in s.reasons:
                click.echo(f"          - {r}")
    click.echo(f"{len(p.to_run())} to run, {len(p.steps) - len(p.to_run())} cached")


@main.command()
@click.argument("target")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
@_errors
def explain(project: Project, target: str, as_json: bool) -> None:
    """Say which key component of each step changed since TARGET's last build."""
    rows = project.explain(target)
    if as_json:
        click.echo(json.dumps(rows, indent=1))
        return
    changed = [r for r in rows if r["status"] != "unchanged"]
    for r in rows:
        if r["status"] == "unchanged":
            click.echo(f"unchanged  {r['step']}")
        else:
            click.echo(f"changed    {r['step']}")
            for c in r["changes"]:
                click.echo(f"             - {c}")
    click.echo(f"{target}: {len(changed)} of {len(rows)} steps differ from its last build")


@main.command("ls")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
@_errors
def ls_cmd(project: Project, as_json: bool) -> None:
    """List every target of the manifests."""
    ws = project.workspace
    rows = [{"name": r.name, "kind": r.table[:-1], "file": r.file.display, "line": r.file.line(r.table, r.name)}
            for r in ws.targets.values()]
    if as_json:
        click.echo(json.dumps(rows, indent=1))
        return
    for r in rows:
        click.echo(f"{r['name']:<32} {r['kind']:<15} {r['file']}:{r['line']}")


@main.command()
@click.argument("targets", nargs=-1)
@click.option("--format", "fmt", type=click.Choice(["dot", "mermaid", "json"]), default="dot", show_default=True)
@click.pass_obj
@_errors
def graph(project: Project, targets: tuple[str, ...], fmt: str) -> None:
    """Print the step graph of TARGETS."""
    from .graph import render

    click.echo(render(project.graph(targets), fmt))


@main.group()
def cache() -> None:
    """Inspect and maintain the cache."""


@cache.command("stats")
@click.pass_obj
@_errors
def cache_stats(project: Project) -> None:
    """Entries, blobs and bytes in the cache."""
    click.echo(json.dumps(project.store.stats(), indent=1))


@cache.command("verify")
@click.pass_obj
@_errors
def cache_verify(project: Project) -> None:
    """Re-hash every blob; quarantine corrupt ones so the next build re-runs their steps."""
    report = project.store.verify()
    click.echo(json.dumps(report, indent=1))
    sys.exit(1 if report["corrupt_blobs"] else 0)


@cache.command("gc")
@click.option("--all", "drop_all", is_flag=True, help="Drop everything, not only what no target needs.")
@click.pass_obj
@_errors
def cache_gc(project: Project, drop_all: bool) -> None:
    """Drop entries and blobs that no target of the manifests needs now."""
    keep: set[str] = set()
    if not drop_all:
        ws = project.workspace
        keep = {s.key for s in project.plan(list(ws.targets), with_reasons=False).steps}
    click.echo(json.dumps(project.store.gc(keep), indent=1))


@main.command("bench")
@click.argument("target")
@click.option("-n", "--iters", type=click.IntRange(min=1), default=20, show_default=True)
@click.option("--warmup", type=click.IntRange(min=0), default=3, show_default=True)
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
@_errors
def bench_cmd(project: Project, target: str, iters: int, warmup: int, as_json: bool) -> None:
    """Latency (p50/p90/p99 after warm-up) and throughput per runtime and specialization."""
    from .bench import bench, render

    rows = bench(project, target, iters, warmup)
    click.echo(json.dumps(rows, indent=1) if as_json else render(rows))


@main.command("run")
@click.argument("target")
@click.argument("audio", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("-r", "--runtime", default="onnxruntime", show_default=True,
              help="pytorch-transformed, onnxruntime or aoti.")
@click.option("--max-new-tokens", type=click.IntRange(min=1), default=None)
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
@_errors
def run_cmd(project: Project, target: str, audio: tuple[Path, ...], runtime: str, max_new_tokens: int | None,
            as_json: bool) -> None:
    """Transcribe AUDIO (16 kHz WAV files) with a built speech specialization."""
    from .torchutil import quiet_warnings
    from .transcriber import Transcriber

    quiet_warnings()
    missing = [str(a) for a in audio if not a.is_file()]
    if missing:
        raise UsageError(f"no such audio file: {', '.join(missing)}")
    texts = Transcriber.from_target(target, runtime, project).transcribe(list(audio), max_new_tokens)
    if as_json:
        click.echo(json.dumps([{"audio": str(a), "text": t} for a, t in zip(audio, texts, strict=True)], indent=1))
    else:
        for a, t in zip(audio, texts, strict=True):
            click.echo(f"{a}: {t}")


@main.command()
def schema() -> None:
    """Print the JSON Schema of the manifest format (for editor completion)."""
    from .manifest import Manifest

    click.echo(json.dumps(Manifest.model_json_schema(), indent=1))


@main.command()
@click.argument("path", type=click.Path(path_type=Path), default=Path("manifests/project.toml"))
@click.option("--name", default=None, help="Project name. Default: the current folder's name.")
@click.option("--force", is_flag=True, help="Overwrite an existing file.")
@_errors
def init(path: Path, name: str | None, force: bool) -> None:
    """Scaffold a manifest (with a data file) from the built-in template."""
    from .scaffold import scaffold

    for written in scaffold(path, name or Path.cwd().name, force):
        click.echo(f"wrote {written}")
    click.echo("next: qeffbuild build")


if __name__ == "__main__":
    main()
