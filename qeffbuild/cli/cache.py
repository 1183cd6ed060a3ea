"""`qeffbuild cache`: stats, verify, gc."""

from __future__ import annotations

import sys

import click

from .app import LazyProject, echo_json, handle_errors, main


@main.group()
def cache() -> None:
    """Inspect and maintain the cache (every subcommand prints JSON)."""


@cache.command("stats")
@click.pass_obj
@handle_errors
def cache_stats(lazy: LazyProject) -> None:
    """Entries, blobs and bytes in the cache."""
    echo_json(lazy.get().store.stats())


@cache.command("verify")
@click.pass_obj
@handle_errors
def cache_verify(lazy: LazyProject) -> None:
    """Re-hash every blob; quarantine corrupt ones so the next build re-runs their steps (exit 1 if any)."""
    report = lazy.get().store.verify()
    echo_json(report)
    sys.exit(1 if report["corrupt_blobs"] else 0)


@cache.command("gc")
@click.option("--all", "drop_all", is_flag=True, help="Drop everything, not only what no target needs.")
@click.pass_obj
@handle_errors
def cache_gc(lazy: LazyProject, drop_all: bool) -> None:
    """Drop entries and blobs that no target of the manifests needs now."""
    project = lazy.get()
    keep: set[str] = set()
    if not drop_all:
        keep = {s.key for s in project.plan(list(project.workspace.targets), with_reasons=False).steps}
    echo_json(project.store.gc(keep))
