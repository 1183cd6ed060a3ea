"""Commands that describe: ls, graph, schema, env."""

from __future__ import annotations

import click

from .app import LazyProject, complete_targets, echo_json, handle_errors, main, warn_broken_plugins


@main.command("ls")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
@handle_errors
def ls_cmd(lazy: LazyProject, as_json: bool) -> None:
    """List every target of the manifests, with its file and line; * marks what `qeffbuild build` builds."""
    from ..reports import table

    ws = lazy.get().workspace
    warn_broken_plugins()
    defaults = set(ws.defaults())
    rows = [{"name": r.name, "kind": r.kind, "task": ws.task_of(r).name if r.table != "steps" else None,
             "default": r.name in defaults, "file": r.file.display, "line": r.file.line(r.table, r.name)}
            for r in ws.targets.values()]
    if as_json:
        echo_json(rows)
        return
    click.echo(table(["", "target", "kind", "task", "where"],
                     [["*" if r["default"] else "", r["name"], r["kind"], r["task"] or "-", f"{r['file']}:{r['line']}"]
                      for r in rows]))
    click.echo("* built by `qeffbuild build` with no target (the manifests' default lists)")


@main.command()
@click.argument("targets", nargs=-1, shell_complete=complete_targets)
@click.option("--format", "fmt", type=click.Choice(["dot", "mermaid", "json"]), default="dot", show_default=True)
@click.pass_obj
@handle_errors
def graph(lazy: LazyProject, targets: tuple[str, ...], fmt: str) -> None:
    """Print the step graph of TARGETS (json is networkx node-link data)."""
    from ..core.graph import render

    click.echo(render(lazy.get().graph(targets), fmt))


@main.command()
@handle_errors
def schema() -> None:
    """Print the JSON Schema of the manifest format, every family's fields included (for editors)."""
    from ..core.plugins import plugins
    from ..core.schema import json_schema

    echo_json(json_schema(plugins()))


@main.command()
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
@handle_errors
def env(lazy: LazyProject, as_json: bool) -> None:
    """Versions, plug-ins, and which backends and runtimes can run here (and why not)."""
    from ..core.environment import describe

    info = describe(lazy)
    warn_broken_plugins()
    if as_json:
        echo_json(info)
        return
    click.echo(f"qeffbuild {info['qeffbuild']} on Python {info['python']} ({info['platform']})")
    click.echo("versions: " + ", ".join(f"{k} {v}" for k, v in info["versions"].items()))
    click.echo(f"devices: cpu; cuda: {info['cuda'] or 'available'}")
    click.echo("backends:")
    for b in info["backends"]:
        for device, why in b["devices"].items():
            click.echo(f"  {b['name']:<11} {device:<5} {'ok' if why is None else 'no: ' + why}")
    for line in dict.fromkeys(b["toolchain"] for b in info["backends"] if b["toolchain"]):
        click.echo(line)
    click.echo("runtimes: " + ", ".join(f"{r['name']} ({r['opens']})" for r in info["runtimes"]))
    click.echo("tasks: " + ", ".join(t["name"] for t in info["tasks"]))
    click.echo("plug-ins from: " + ", ".join(info["plugins"]))
    for k in ("manifests", "out_dir", "cache_dir"):
        click.echo(f"{k}: {info[k]}")
