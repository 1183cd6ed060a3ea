"""Commands that use what was built, or start a project: run, bench, init."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from ..errors import UsageError
from ..reports import printable
from .app import LazyProject, complete_targets, echo_json, handle_errors, main


@main.command("run")
@click.argument("target", shell_complete=complete_targets)
@click.argument("inputs", nargs=-1, required=True)
@click.option("-r", "--runtime", default="onnxruntime", show_default=True,
              help="A runtime that opens a built artifact: pytorch-transformed, onnxruntime, aoti …")
@click.option("--max-new-tokens", type=click.IntRange(min=1), default=None,
              help="Speech: tokens to decode at most (per window of long audio).")
@click.option("--condition-on-previous-text", is_flag=True,
              help="Long-form Whisper: each window's prompt holds the text before it.")
@click.option("-f", "--format", "fmt", default="text", show_default=True,
              help="text, json, or what the family offers besides (speech: srt, vtt).")
@click.option("-o", "--output-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Write one file per input (INPUT's name with the format's suffix) instead of printing.")
@click.option("--strict", is_flag=True, help="Exit 1 when a result may be incomplete (a window cut at its token "
                                             "budget, one without a final timestamp).")
@click.option("--json", "as_json", is_flag=True, help="The same as --format json.")
@click.pass_obj
@handle_errors
def run_cmd(lazy: LazyProject, target: str, inputs: tuple[str, ...], runtime: str, max_new_tokens: int | None,
            condition_on_previous_text: bool, fmt: str, output_dir: Path | None, strict: bool, as_json: bool) -> None:
    """Use a built specialization on INPUTS: transcribe audio files (speech), embed sentences or @files
    of sentences (embedding). Builds the specialization first if needed."""
    from ..core.plugins import load_attr

    project = lazy.get()
    fmt = "json" if as_json else fmt
    task = project.task_of_target(target)
    if fmt not in task.run_formats:
        raise UsageError(f"--format {fmt!r}: {task.name} offers {', '.join(task.run_formats)}")
    if fmt in ("srt", "vtt") and len(inputs) > 1 and output_dir is None:
        raise UsageError(f"{len(inputs)} inputs: subtitles are a file each; pass --output-dir DIR")
    rows = project.run(target, runtime, list(inputs), {"max_new_tokens": max_new_tokens,
                                                       "condition_on_previous_text": condition_on_previous_text})
    if project.workspace.random_weights(target):
        rows = [{**row, "random_weights": True} for row in rows]
        if fmt != "json":
            click.echo(f"note: {target} has random weights: its output is noise (it shows the artifact runs, not "
                       "what a trained model would say)", err=True)
    if fmt == "json":  # the model's raw text is data here: JSON escapes it
        texts = [json.dumps(row, indent=1, sort_keys=True, default=str) for row in rows]
        shown = [json.dumps(rows, indent=1, sort_keys=True, default=str)]
    else:
        texts = load_attr(task.run_render)(rows, fmt) if task.run_render else [str(r) for r in rows]
        shown = texts
    for row in rows:
        for note in row.get("notes", []):
            click.echo(f"note: {printable(row['input'])}: {note}", err=True)
    if output_dir is not None:
        output_dir.mkdir(parents=True, exist_ok=True)
        for row, text in zip(rows, texts, strict=True):
            dest = output_dir / f"{Path(str(row['input'])).stem or 'input'}.{'txt' if fmt == 'text' else fmt}"
            dest.write_text(text if text.endswith("\n") else text + "\n")
            click.echo(str(dest))
    else:
        click.echo("\n".join(shown).rstrip("\n"))
    if strict and any(row.get("truncated") or row.get("incomplete") for row in rows):
        click.echo("error: --strict: a result may be incomplete (see the notes)", err=True)
        sys.exit(1)


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
    timed = [r for r in rows if "unavailable" not in r]
    click.echo(table(headers, [[r["runtime"], r["specialization"], r["dtype"], str(r["batch_size"]), r["shape"],
                                f"{r['p50_ms']:.2f}", f"{r['p90_ms']:.2f}", f"{r['p99_ms']:.2f}",
                                f"{r['throughput_per_s']:.1f} {r['unit']}/s", _more(r)] for r in timed]))
    for r in {r["runtime"]: r for r in rows if "unavailable" in r}.values():  # a baseline that could not run
        click.echo(f"not run: {r['runtime']}: {r['unavailable']}")
    covers: dict[str, list[str]] = {}
    for r in timed:
        if "encoder_covers" in r and r["runtime"] not in covers.setdefault(r["encoder_covers"], []):
            covers[r["encoder_covers"]].append(r["runtime"])
    if len(covers) > 1:  # the encoder columns time different work: say which, so no one compares them
        for what, runtimes in covers.items():
            click.echo(f"encoder column, {', '.join(runtimes)}: {what}")
    if timed:
        for warning in warnings_for(timed, timed[0]):
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


def _more(r: dict[str, object]) -> str:
    """The columns only some rows have (speech: encoder, whole utterance, speed-up over generate)."""
    parts = []
    if "encoder_p50_ms" in r:
        parts.append(f"encoder {r['encoder_p50_ms']:.2f} ms, {r['utterances_per_s']:.2f} utt/s")
    if "speedup_per_token_vs_generate" in r:
        per_utt = r.get("speedup_per_utterance_vs_generate")
        parts.append(f"×{r['speedup_per_token_vs_generate']:.2f}/token"
                     + (f", ×{per_utt:.2f}/utt" if isinstance(per_utt, float) else "") + " vs generate")
    if "roofline_frac" in r:
        parts.append(f"roofline {r['roofline_frac']:.0%} ({r['step_mb']:.0f} MB/step at {r['achieved_gb_s']:.0f} of "
                     f"{r['copy_gb_s']:.0f} GB/s; bound {r['roofline_bound_ms']:.2f} ms)")
    if "speedup_vs_faster_whisper_int8" in r:
        parts.append(f"×{r['speedup_vs_faster_whisper_int8']:.2f} real time vs faster-whisper int8")
    if "speedup_vs_hf_longform" in r:
        parts.append(f"RTF {r['rtf']:.3f}, ×{r['speedup_vs_hf_longform']:.2f} vs HF long-form generate")
    elif "rtf" in r:
        parts.append(f"RTF {r['rtf']:.3f}")
    if "speedup_vs_sentence_transformers" in r:
        parts.append(f"×{r['speedup_vs_sentence_transformers']:.2f} vs sentence-transformers")
    if "min_cosine_vs_float32" in r:  # a baseline's own accuracy (sentence-transformers' int8 export)
        parts.append(f"worst cosine {r['min_cosine_vs_float32']:.4f} vs float32")
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
