"""Commands that build or say what a build would do: build, plan, explain, clean."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from .app import LazyProject, complete_targets, echo_json, handle_errors, main, stdout_kept_for_json


def _summary(result: Any) -> str:
    counts = result.counts()
    steps = ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "none"
    n = len(result.targets)
    if result.ok:
        up = ""
        if counts.keys() <= {"cached"}:  # nothing ran: out/ was either current or laid out again from the cache
            restored = any(s.get("materialized") for s in result.target_status.values())
            up = " (restored from the cache)" if restored else " (up to date)"
        return f"ok: {n} target{'s' if n != 1 else ''}{up}; steps: {steps}; {result.wall_s:.2f}s"
    failed = result.failed_targets
    return (f"FAILED: {len(failed)} of {n} target{'s' if n != 1 else ''} ({', '.join(failed)}); steps: {steps}; "
            f"{result.wall_s:.2f}s")


def _print_result(result: Any, verbose: bool = False) -> None:
    for sid, info in result.failures.items():
        if info["status"] != "skipped":
            click.echo(f"\n{info['status'].upper()}: {sid}\n{info['message']}".rstrip(), err=True)
    for note in result.notes:
        click.echo(f"note: {note}", err=True)
    for t in result.targets:
        if verbose and result.target_status.get(t, {}).get("ran"):
            continue  # -v streamed the step's own output, its report table included
        report = Path(result.outputs.get(t, "")) / "report.txt"
        if t in result.outputs and report.is_file():
            click.echo(report.read_text().rstrip())
    click.echo(_summary(result), err=not result.ok)


@main.command()
@click.argument("targets", nargs=-1, shell_complete=complete_targets)
@click.option("-j", "--jobs", type=click.IntRange(min=1), default=None, envvar="QEFFBUILD_JOBS", show_envvar=True,
              help="Parallel steps. Default: the number of cores.")
@click.option("-k", "--keep-going", is_flag=True, help="Build what does not depend on a failure.")
@click.option("--force", is_flag=True, help="Run the named targets' own steps again, even when cached.")
@click.option("-v", "--verbose", is_flag=True, help="Stream every running step's log to stderr.")
@click.option("--json", "as_json", is_flag=True, help="One JSON result on stdout: per-target and per-step status.")
@click.option("-q", "--quiet", is_flag=True, help="No progress output.")
@click.option("--executor", type=click.Choice(["local", "ray"]), default="local", envvar="QEFFBUILD_EXECUTOR",
              show_envvar=True, show_default=True, help="Where steps run: this machine, or a Ray cluster.")
@click.option("--ray-address", envvar="RAY_ADDRESS", show_envvar=True,
              help="The Ray cluster (HOST:PORT); default: a running local one, else a new one.")
@click.option("--remote-cache", "remote_cache", envvar="QEFFBUILD_REMOTE_CACHE", show_envvar=True, metavar="URL",
              help="A shared cache (s3://bucket/prefix, file:///mount): read through, and uploaded to.")
@click.option("--remote-upload/--no-remote-upload", default=None,
              help="Upload what this build makes (default: yes; $QEFFBUILD_REMOTE_UPLOAD=0 for read-only CI).")
@click.option("--remote-required", is_flag=True, default=None,
              help="Fail when the remote cache cannot be used (default: warn and build locally).")
@click.pass_obj
@handle_errors
def build(lazy: LazyProject, targets: tuple[str, ...], jobs: int | None, keep_going: bool, force: bool,
          verbose: bool, as_json: bool, quiet: bool, executor: str, ray_address: str | None,
          remote_cache: str | None, remote_upload: bool | None, remote_required: bool | None) -> None:
    """Build TARGETS (default: the manifests' defaults); run only what changed."""
    from ..core.progress import make_reporter

    project = lazy.get()
    forced = tuple(project.resolve(targets)) if force else ()
    with stdout_kept_for_json(as_json):
        result = project.build(targets, jobs=jobs, keep_going=keep_going, force=forced, verbose=verbose,
                               reporter=make_reporter(quiet or as_json), executor=executor, ray_address=ray_address,
                               remote_cache=remote_cache, remote_upload=remote_upload,
                               remote_required=remote_required or None)
    if as_json:
        echo_json(result.to_json())
        if not result.ok:
            click.echo(_summary(result), err=True)
    else:
        _print_result(result, verbose)
    sys.exit(0 if result.ok else 1)


@main.command()
@click.argument("targets", nargs=-1, shell_complete=complete_targets)
@click.option("--check", is_flag=True, help="Exit 1 when anything would run (CI: is everything built?).")
@click.option("--json", "as_json", is_flag=True, help="Steps with their keys, action and reason codes.")
@click.pass_obj
@handle_errors
def plan(lazy: LazyProject, targets: tuple[str, ...], check: bool, as_json: bool) -> None:
    """Show what a build would run, and why each step must run."""
    p = lazy.get().plan(targets)
    if as_json:
        echo_json(p.to_json())
    else:
        for s in p.steps:
            click.echo(f"{'cached' if s.cached else 'run':<7} {s.id}")
            for r in s.reasons:
                click.echo(f"          - {r.text()}")
        click.echo(f"{len(p.to_run())} to run, {len(p.steps) - len(p.to_run())} cached")
    sys.exit(1 if check and p.to_run() else 0)


@main.command()
@click.argument("target", shell_complete=complete_targets)
@click.option("--json", "as_json", is_flag=True, help="Per step: status and reason codes with details.")
@click.pass_obj
@handle_errors
def explain(lazy: LazyProject, target: str, as_json: bool) -> None:
    """Say which key component of each step changed since that step's last build."""
    rows = lazy.get().explain(target)
    if as_json:
        echo_json(rows)
        return
    changed = [r for r in rows if r["status"] != "unchanged"]
    for r in rows:
        click.echo(f"{r['status']:<10} {r['step']}")
        for reason in r["reasons"]:
            click.echo(f"             - {reason['text']}")
    click.echo(f"{target}: {len(changed)} of {len(rows)} steps differ from their last build")


@main.command()
@click.argument("targets", nargs=-1, shell_complete=complete_targets)
@click.option("--cache", is_flag=True, help="Remove the cache too (everything rebuilds).")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
@handle_errors
def clean(lazy: LazyProject, targets: tuple[str, ...], cache: bool, as_json: bool) -> None:
    """Remove TARGETS' outputs from the out folder (default: every target's)."""
    removed = lazy.get().clean(targets, cache=cache)
    if as_json:
        echo_json({"removed": removed})
    else:
        for r in removed:
            click.echo(f"removed {r}")
        click.echo(f"{len(removed)} removed")
