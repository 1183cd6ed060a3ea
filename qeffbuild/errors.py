"""The one exception hierarchy of qeffbuild.

    QeffbuildError                  base; ``exit_code`` says how the CLI ends
    ├── UsageError                  bad command line or API argument (exit 2)
    │   └── UnknownNameError        a registry or target lookup missed; lists the known names
    ├── PluginError                 a plug-in failed to load or registered something invalid (exit 2)
    ├── ManifestError               one or more problems in the manifests (exit 2)
    ├── InputError                  a user's input file is missing, unreadable or malformed (exit 2)
    │   ├── ModelLoadError          a model's files cannot be loaded for its task (exit 2)
    │   └── TemplateError           a project's template is broken or tried to reach beyond its data (exit 2)
    ├── BuildError                  a step failed while running (exit 1)
    │   ├── StepFailed              a step's command or function failed; carries its log
    │   └── Interrupted             the build was stopped (Ctrl-C); nothing half-written remains
    ├── ValidationFailed            a validation check did not hold (exit 1)
    ├── StoreError                  the cache is unusable (exit 1)
    └── BackendUnavailable          a backend cannot run on this machine (exit 2, at plan time); says why

Third-party exceptions are mapped to these where they cross into the engine (a worker turns
a model-loading failure into ModelLoadError, the store turns OSError into StoreError).

Messages say what failed, why, and what to do. The CLI prints ``str(error)`` and never a
traceback for these.
"""

from __future__ import annotations

from dataclasses import dataclass


class QeffbuildError(Exception):
    """Base of every error qeffbuild raises on purpose."""

    exit_code = 1


class UsageError(QeffbuildError):
    """The command line or an API call asked for something that cannot be done."""

    exit_code = 2


class UnknownNameError(UsageError):
    """A name was looked up among known names and missed."""

    def __init__(self, what: str, name: str, known: list[str], broken: list[str] | None = None) -> None:
        from .core.diagnostics import did_you_mean

        self.name = name
        self.known = sorted(known)
        hint = did_you_mean(name, self.known)
        listing = ", ".join(self.known) if self.known else "(none)"
        unloaded = "".join(f"; it may belong to {b}" for b in broken or ())
        super().__init__(f"unknown {what} {name!r}{hint} (known: {listing}){unloaded}")


@dataclass(frozen=True)
class Problem:
    """One manifest problem, located as precisely as the source allows."""

    file: str
    line: int | None
    table: str
    key: str
    message: str

    def render(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        at = f"[{self.table}]" if self.table else ""
        if self.key:
            at = f"{at} {self.key}" if at else self.key
        return f"{where}: {at}: {self.message}" if at else f"{where}: {self.message}"


class PluginError(QeffbuildError):
    """A plug-in (built-in or from an entry point) could not be loaded or registered."""

    exit_code = 2


class ManifestError(QeffbuildError):
    """Every problem found in one load of the manifests, reported together."""

    exit_code = 2

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        lines = [p.render() for p in problems]
        n = len(problems)
        files = len({p.file for p in problems})
        lines.append(f"{n} error{'s' if n != 1 else ''} in {files} manifest{'s' if files != 1 else ''}")
        super().__init__("\n".join(lines))


class InputError(QeffbuildError):
    """A user's input (data file, audio, model directory) is missing or unreadable."""

    exit_code = 2


class ModelLoadError(InputError):
    """A model's files could not be loaded: the message names the model, the file and the fix."""


class TemplateError(InputError):
    """A jinja2 template failed to render: a syntax error, an undefined name, or an attempt to reach beyond
    the data it is given (the sandbox refused it). Names the template and its line."""


class BuildError(QeffbuildError):
    """A build did not complete."""


class StepFailed(BuildError):
    """One step failed; the message ends with the tail of its log."""

    def __init__(self, step_id: str, reason: str, log_tail: str = "") -> None:
        self.step_id = step_id
        self.reason = reason
        self.log_tail = log_tail
        msg = f"step {step_id} failed: {reason}"
        if log_tail.strip():
            msg += "\n--- log (last lines) ---\n" + log_tail.rstrip()
        super().__init__(msg)


class Interrupted(BuildError):
    """The user stopped the build; finished steps are cached, the rest re-run next time."""

    exit_code = 130


class ValidationFailed(QeffbuildError):
    """A validation check did not hold; the message lists every mismatch."""


class StoreError(QeffbuildError):
    """The cache directory cannot be used."""


class BackendUnavailable(QeffbuildError):
    """A compile backend or runtime cannot run on this machine; the message says why.

    Raised at plan time, before any work: like a usage error, it exits 2.
    """

    exit_code = 2
