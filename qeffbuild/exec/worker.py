"""The worker process: runs one Python step in isolation (``python -m qeffbuild.exec.worker REQ``).

A crash, an out-of-memory kill or a leaked ONNX Runtime session ends this process, not the
build. Exit codes: 0 done, 3 a validation check failed, 4 a user error (a QeffbuildError),
anything else a crash. In every failure ``failure.txt`` beside the request holds the
message to show: the error itself, not a character count of log tail; the full traceback
stays in the step's log.
"""

from __future__ import annotations

import json
import sys
import traceback
from pathlib import Path

EXIT_CHECK_FAILED = 3
EXIT_USER_ERROR = 4


def summarize(e: BaseException, limit: int = 12) -> str:
    """The exception's type and first lines, and where it was raised (for the user, not a traceback)."""
    lines = str(e).strip().splitlines() or [""]
    text = f"{type(e).__name__}: " + "\n".join(lines[:limit])
    if len(lines) > limit:
        text += f"\n… ({len(lines) - limit} more lines in the log)"
    frames = traceback.extract_tb(e.__traceback__)
    if frames:
        last = frames[-1]
        text += f"\n(raised in {Path(last.filename).name}:{last.lineno}, {last.name})"
    return text


def main(request_path: str) -> int:
    import faulthandler

    faulthandler.enable()  # a segfault in a native library still leaves a Python traceback in the log
    from ..core.plugins import load_attr
    from ..core.steps import StepContext
    from ..errors import QeffbuildError, ValidationFailed

    req = json.loads(Path(request_path).read_text())
    ctx = StepContext(
        node_id=req["node_id"],
        params=req["params"],
        inputs={k: Path(v) for k, v in req["inputs"].items()},
        files={k: Path(v) for k, v in req["files"].items()},
        out=Path(req["out"]),
        root=Path(req["root"]) if req.get("root") else None,
        paths={k: Path(v) for k, v in req.get("paths", {}).items()},
        keys=dict(req.get("keys", {})),
    )
    failure = Path(request_path).parent / "failure.txt"
    try:
        load_attr(req["runner"])(ctx)
    except ValidationFailed as e:
        failure.write_text(str(e))
        return EXIT_CHECK_FAILED
    except QeffbuildError as e:
        failure.write_text(str(e))
        return EXIT_USER_ERROR
    except Exception as e:
        traceback.print_exc()
        failure.write_text(summarize(e))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
