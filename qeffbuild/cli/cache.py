"""`qeffbuild cache`: stats, verify, gc."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from .app import LazyProject, echo_json, handle_errors, main


@main.group()
def cache() -> None:
    """Inspect and maintain the cache (every subcommand prints JSON)."""


@cache.command("stats")
@click.pass_obj
@handle_errors
def cache_stats(lazy: LazyProject) -> None:
    """Entries, blobs and bytes in the cache; hits (local and remote) and bytes up and down, all builds."""
    project = lazy.get()
    echo_json({**project.store.maintenance.stats(), "totals": project.state.counters()})


@cache.command("verify")
@click.argument("targets", nargs=-1)
@click.option("--rebuild", is_flag=True, help="Also run cached steps again and compare their outputs with the "
                                              "cached ones (Nix's --check): finds lying entries and steps that are "
                                              "not reproducible.")
@click.option("--sample", type=click.FloatRange(0, 1, min_open=True), default=1.0, show_default=True,
              help="With --rebuild: the share of cached steps to run again, chosen at random.")
@click.option("--seed", type=int, default=None, help="With --rebuild: the seed of that random choice.")
@click.pass_obj
@handle_errors
def cache_verify(lazy: LazyProject, targets: tuple[str, ...], rebuild: bool, sample: float,
                 seed: int | None) -> None:
    """Re-hash every blob and parse every entry (its key material must hash to its key); quarantine what is
    corrupt, drop the entries that name or consumed it (and what was built from them), so the next build re-runs
    those steps. With --rebuild, also re-run cached steps of TARGETS (default: the build's). Exit 1 if anything was
    wrong or not reproducible."""
    project = lazy.get()
    report = project.store.maintenance.verify()
    bad = bool(report["corrupt_blobs"] or report["entries_dropped"] or report["quarantined_entries"])
    if rebuild:
        report["rebuild"] = project.verify_rebuild(targets, sample, seed)
        bad = bad or bool(report["rebuild"]["mismatched"] or report["rebuild"]["failed"])
    echo_json(report)
    sys.exit(1 if bad else 0)


@cache.command("keygen")
@click.argument("name")
@click.option("--secret-key-file", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="Where to write the secret key (mode 0600; never overwritten). Point QEFFBUILD_SIGNING_KEY_FILE "
                   "at it on the machines that upload.")
@handle_errors
def cache_keygen(name: str, secret_key_file: Path) -> None:
    """Make an Ed25519 signing key NAME for a shared cache; print its public key (JSON). Writers sign the entries
    they upload with the secret key; consumers list the public key in QEFFBUILD_TRUSTED_KEYS (or a manifest's
    [project] trusted_keys) and accept only entries it signed."""
    from ..store.signing import generate, write_secret_key

    key = generate(name)
    write_secret_key(key, secret_key_file)
    echo_json({"public_key": key.public_text(), "secret_key_file": str(secret_key_file),
               "next": f"export QEFFBUILD_SIGNING_KEY_FILE={secret_key_file} (writers); "
                       f"export QEFFBUILD_TRUSTED_KEYS='{key.public_text()}' (everyone)"})


@cache.command("gc")
@click.option("--all", "drop_all", is_flag=True, help="Drop everything, other projects' entries included.")
@click.option("--dry-run", is_flag=True, help="Say what would be dropped; drop nothing.")
@click.option("--drop-other-projects", is_flag=True,
              help="Also drop what other projects sharing this cache last needed (kept by default).")
@click.pass_obj
@handle_errors
def cache_gc(lazy: LazyProject, drop_all: bool, dry_run: bool, drop_other_projects: bool) -> None:
    """Drop entries and blobs that no target of these manifests needs now, keeping what every other
    project sharing the cache recorded at its last build. Waits for running builds to finish."""
    project = lazy.get()
    keep: set[str] = set()
    not_planned: list[dict[str, str]] = []
    if not drop_all:
        keep, not_planned = _needed_keys(project)
        if not_planned:  # their entries cannot be told apart here: keep what this project's last build needed
            keep |= project.store.maintenance.root_keys().get(str(project.out_dir), set())
    result = project.store.maintenance.gc(keep, dry_run=dry_run, other_projects=not (drop_all or drop_other_projects))
    echo_json({**result, "not_planned": not_planned} if not_planned else result)


def _needed_keys(project: Any) -> tuple[set[str], list[dict[str, str]]]:
    """The keys every target of the manifests needs now, and the targets that cannot be planned here (a GPU
    specialization on a host without one, a backend not installed here, a validation whose data set is not made
    yet), each with the reason: gc collects around those instead of refusing to run at all."""
    from ..errors import BackendUnavailable, InputError, ManifestError

    unplannable = (BackendUnavailable, InputError, ManifestError)
    targets = list(project.workspace.targets)
    try:
        return {s.key for s in project.plan(targets, with_reasons=False).steps}, []
    except unplannable:
        pass
    keep: set[str] = set()
    not_planned = []
    for target in targets:
        try:
            keep |= {s.key for s in project.plan([target], with_reasons=False).steps}
        except unplannable as e:
            why = "; ".join(p.render() for p in e.problems) if isinstance(e, ManifestError) else str(e)
            not_planned.append({"target": target, "why": why})
    return keep, not_planned
