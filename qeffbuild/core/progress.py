"""Progress reporting: a rich live display on a terminal, plain lines otherwise."""

from __future__ import annotations

import sys
import threading
import time
from typing import Any, TextIO

PLAIN_PROGRESS_EVERY_S = 15.0


def _eta(elapsed: float, done: int, total: int) -> str:
    if done <= 0 or done >= total:
        return f", {elapsed:.0f} s" if done >= total else ""
    return f", {elapsed:.0f} s elapsed, about {elapsed / done * (total - done):.0f} s left"


class Reporter:
    """Plain-line progress: one line per finished step (CI logs, pipes, ``--json`` off)."""

    def __init__(self, stream: TextIO | None = None, quiet: bool = False) -> None:
        self.stream = stream or sys.stderr
        self.quiet = quiet
        self.total = 0
        self.done = 0
        self._lock = threading.Lock()
        self._progress: dict[str, tuple[float, float]] = {}  # step -> (first report, last line printed)

    def start(self, total: int) -> None:
        self.total = total

    def step_started(self, step_id: str) -> None:
        pass

    def step_finished(self, step_id: str, status: str, duration: float) -> None:
        with self._lock:
            self.done += 1
            if not self.quiet:
                print(
                    f"[{self.done}/{self.total}] {status:<8} {step_id} ({duration:.1f}s)", file=self.stream, flush=True
                )

    def message(self, text: str) -> None:
        if not self.quiet:
            print(text, file=self.stream, flush=True)

    def step_progress(self, step_id: str, done: int, total: int, unit: str, what: str = "") -> None:
        """A running step's own progress (a validation's utterances): a line every 15 s at most."""
        now = time.monotonic()
        with self._lock:
            start, last = self._progress.setdefault(step_id, (now, 0.0))
            if self.quiet or (now - last < PLAIN_PROGRESS_EVERY_S and done < total):
                return
            self._progress[step_id] = (start, now)
        print(f"  {step_id}: {done}/{total} {unit}{_eta(now - start, done, total)}", file=self.stream, flush=True)

    def stop(self) -> None:
        pass


class ApiReporter(Reporter):
    """What :meth:`Project.build` reports when no display is given: ``logging`` records on the ``qeffbuild``
    logger (a finished step at INFO, a started one and a step's own progress at DEBUG), and each event as a dict
    to ``callback`` — ``{"event": "start" | "step_started" | "step_finished" | "step_progress", "step", "status",
    "duration_s", "done", "total", "unit"}`` (the keys that apply)."""

    def __init__(self, callback: Any = None) -> None:
        super().__init__(quiet=True)
        import logging

        self.log = logging.getLogger("qeffbuild")
        self.callback = callback

    def _emit(self, event: dict[str, Any]) -> None:
        if self.callback is not None:
            self.callback(event)

    def start(self, total: int) -> None:
        super().start(total)
        self.log.info("%d steps to run", total)
        self._emit({"event": "start", "total": total})

    def step_started(self, step_id: str) -> None:
        self.log.debug("started %s", step_id)
        self._emit({"event": "step_started", "step": step_id, "done": self.done, "total": self.total})

    def step_finished(self, step_id: str, status: str, duration: float) -> None:
        with self._lock:
            self.done += 1
            done = self.done
        self.log.info("[%d/%d] %s %s (%.1fs)", done, self.total, status, step_id, duration)
        self._emit({"event": "step_finished", "step": step_id, "status": status, "duration_s": duration,
                    "done": done, "total": self.total})

    def step_progress(self, step_id: str, done: int, total: int, unit: str, what: str = "") -> None:
        self.log.debug("%s: %d/%d %s", step_id, done, total, unit)
        self._emit({"event": "step_progress", "step": step_id, "done": done, "total": total, "unit": unit})

    def message(self, text: str) -> None:
        self.log.info("%s", text)


class RichReporter(Reporter):
    """A progress bar of steps, with the steps now running and their elapsed time."""

    def __init__(self, stream: TextIO | None = None) -> None:
        super().__init__(stream)
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.console = Console(file=self.stream)
        self.progress = Progress(
            TextColumn("[bold]{task.fields[label]}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            TextColumn("{task.description}"),
            console=self.console,
            transient=False,
        )
        self.running: dict[str, float] = {}
        self.task: Any = None
        self.step_tasks: dict[str, Any] = {}  # a running step's own bar (a validation's utterances)

    def start(self, total: int) -> None:
        super().start(total)
        self.progress.start()
        self.task = self.progress.add_task("", total=total, label="build")

    def _describe(self) -> str:
        now = time.monotonic()
        items = [f"{sid} {now - t0:.0f}s" for sid, t0 in list(self.running.items())[:3]]
        more = len(self.running) - len(items)
        return ", ".join(items) + (f" +{more}" if more > 0 else "")

    def step_started(self, step_id: str) -> None:
        with self._lock:
            self.running[step_id] = time.monotonic()
            self.progress.update(self.task, description=self._describe())

    def step_progress(self, step_id: str, done: int, total: int, unit: str, what: str = "") -> None:
        with self._lock:
            if step_id not in self.step_tasks:
                self.step_tasks[step_id] = self.progress.add_task("", total=total, label=f"  {step_id}")
            self.progress.update(self.step_tasks[step_id], completed=done, total=total, description=f"{unit} {what}")

    def step_finished(self, step_id: str, status: str, duration: float) -> None:
        with self._lock:
            if step_id in self.step_tasks:
                self.progress.remove_task(self.step_tasks.pop(step_id))
            self.running.pop(step_id, None)
            self.done += 1
            colour = {"built": "green", "failed": "red", "check-failed": "red"}.get(status, "cyan")
            self.progress.console.print(f"[{colour}]{status:<8}[/] {step_id} ({duration:.1f}s)")
            self.progress.update(self.task, advance=1, description=self._describe())

    def message(self, text: str) -> None:
        self.progress.console.print(text, markup=False)

    def stop(self) -> None:
        self.progress.stop()


def make_reporter(quiet: bool = False) -> Reporter:
    if not quiet and sys.stderr.isatty():
        return RichReporter()
    return Reporter(quiet=quiet)
