"""Commands that use what was built, or start a project: run, bench, init."""

from __future__ import annotations

from pathlib import Path

import click

from .app import LazyProject, complete_targets, echo_json, handle_errors, main


@main.command("run")
@click.argument("target", shell_complete=complete_targets)
@click.argument("inputs", nargs=-1, required=True)
@click.option("-r", "--runtime", default="onnxruntime", show_default=True,
              help="A runtime that opens a built artifact: pytorch-transformed, onnxruntime, aoti …")
@click.option("--max-new-tokens", type=click.IntRange(min=1), default=None, help="Speech: tokens to decode at most.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
@handle_errors
def run_cmd(lazy: LazyProject, target: str, inputs: tuple[str, ...], runtime: str, max_new_tokens: int | None,
            as_json: bool) -> None:
    """Use a built specialization on INPUTS: transcribe audio files (speech), embed sentences or @files
    of sentences (embedding). Builds the specialization first if needed."""
    project = lazy.get()
    rows = project.run(target, runtime, list(inputs), {"max_new_tokens": max_new_tokens})
    random = project.workspace.random_weights(target)
    if as_json:  # the model's raw text is data here: JSON escapes it
        echo_json([{**row, "random_weights": True} for row in rows] if random else rows)
        return
    if random:
        click.echo(f"note: {target} has random weights: its output is noise (it shows the artifact runs, not what a "
                   "trained model would say)", err=True)
    for row in rows:
        if "text" in row:
            click.echo(f"{printable(row['input'])}: {printable(row['text'])}")
            for note in row.get("notes", []):
                click.echo(f"note: {printable(row['input'])}: {note}", err=True)
        else:
            emb = row["embedding"]
            click.echo(f"{row['input']}: [{', '.join(f'{v:.4f}' for v in emb[:4])}, …] ({len(emb)} dims)")


@main.command("bench")
@click.argument("target", shell_complete=complete_targets)
@click.option("-n", "--iters", type=click.IntRange(min=1), default=20, show_default=True)
@click.option("--warmup", type=click.IntRange(min=0), default=3, show_default=True)
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
@handle_errors
def bench_cmd(lazy: LazyProject, target: str, iters: int, warmup: int, as_json: bool) -> None:
    """Latency (p50/p90/p99 after warm-up) and throughput per runtime of validation TARGET."""
    rows = lazy.get().bench(target, iters, warmup)
    if as_json:
        echo_json(rows)
        return
    from ..reports import table
    from ..reports.timing import warnings_for

    headers = ["runtime", "specialization", "dtype", "batch", "shape", "p50 ms", "p90 ms", "p99 ms", "throughput",
               "more"]
    click.echo(table(headers, [[r["runtime"], r["specialization"], r["dtype"], str(r["batch_size"]), r["shape"],
                                f"{r['p50_ms']:.2f}", f"{r['p90_ms']:.2f}", f"{r['p99_ms']:.2f}",
                                f"{r['throughput_per_s']:.1f} {r['unit']}/s", _more(r)] for r in rows]))
    if rows:
        for warning in warnings_for(rows, rows[0]):
            click.echo(f"warning: {warning}", err=True)


@main.command("report")
@click.argument("target", shell_complete=complete_targets)
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              help="Write here instead of out/TARGET/report.html.")
@click.option("--open", "open_it", is_flag=True, help="Open it in the default browser.")
@click.pass_obj
@handle_errors
def report_cmd(lazy: LazyProject, target: str, output: Path | None, open_it: bool) -> None:
    """Re-render validation TARGET's report.html (with the build's provenance) and print where it is.

    A build writes out/TARGET/report.html itself; this adds every step's key and duration, and picks
    up an edited templates/report/report.html.j2. The next build restores the built copy.
    """
    path = lazy.get().report(target, output)
    click.echo(str(path))
    if open_it:
        import webbrowser

        webbrowser.open(path.resolve().as_uri())


def printable(text: str) -> str:
    """Text for a terminal: control and format characters (ESC, BEL, bidi overrides a model or a file name may
    hold) written as escapes, so they cannot move the cursor, ring or reorder what follows."""
    return "".join(c if c.isprintable() or c == " " else c.encode("unicode_escape").decode() for c in text)


def _more(r: dict[str, object]) -> str:
    """The columns only some rows have (speech: encoder, whole utterance, speed-up over generate)."""
    parts = []
    if "encoder_p50_ms" in r:
        parts.append(f"encoder {r['encoder_p50_ms']:.2f} ms, {r['utterances_per_s']:.2f} utt/s")
    if "speedup_per_token_vs_generate" in r:
        parts.append(f"×{r['speedup_per_token_vs_generate']:.2f}/token, "
                     f"×{r['speedup_per_utterance_vs_generate']:.2f}/utt vs generate")
    if "speedup_vs_encode" in r:
        parts.append(f"×{r['speedup_vs_encode']:.2f} vs sentence-transformers encode")
    if "vs" in r:
        parts.append(str(r["vs"]))
    return "; ".join(parts) or "-"


@main.command()
@click.argument("path", type=click.Path(path_type=Path), default=Path("manifests/project.toml"))
@click.option("--name", default=None, help="Project name. Default: the current folder's name.")
@click.option("--force", is_flag=True, help="Overwrite an existing file.")
@handle_errors
def init(path: Path, name: str | None, force: bool) -> None:
    """Scaffold a manifest (with a data file) from the built-in template."""
    from .scaffold import scaffold

    for written in scaffold(path, name or Path.cwd().name, force):
        click.echo(f"wrote {written}")
    click.echo("next: qeffbuild build")
