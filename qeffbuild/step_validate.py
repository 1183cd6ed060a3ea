"""The validate step (worker side): dispatch to the task's validation."""

from __future__ import annotations

from .steps import StepContext
from .torchutil import quiet_warnings


def run(ctx: StepContext) -> None:
    quiet_warnings()
    if ctx.params["task"] == "embedding":
        from .validate_embedding import validate
    else:
        from .validate_speech import validate
    validate(ctx)
