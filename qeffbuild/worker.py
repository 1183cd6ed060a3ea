"""The worker process: runs one Python step in isolation (``python -m qeffbuild.worker REQ``).

A crash, an out-of-memory kill or a leaked ONNX Runtime session ends this process, not the
build. Exit codes: 0 done, 3 a validation check failed (message in failure.txt),
4 a user error (message in failure.txt), anything else a crash (traceback in the log).
"""

from __future__ import annotations

import json
import sys
import traceback
from pathlib import Path

EXIT_CHECK_FAILED = 3
EXIT_USER_ERROR = 4


def main(request_path: str) -> int:
    import faulthandler

    faulthandler.enable()  # a segfault in a native library still leaves a Python traceback in the log
    from .errors import QeffbuildError, ValidationFailed
    from .step_kinds import register_all
    from .steps import STEP_KINDS, StepContext

    req = json.loads(Path(request_path).read_text())
    register_all()
    kind = STEP_KINDS.get(req["kind"])
    ctx = StepContext(
        node_id=req["node_id"],
        params=req["params"],
        inputs={k: Path(v) for k, v in req["inputs"].items()},
        files={k: Path(v) for k, v in req["files"].items()},
        out=Path(req["out"]),
        root=Path(req["root"]) if req.get("root") else None,
        paths={k: Path(v) for k, v in req.get("paths", {}).items()},
    )
    failure = Path(request_path).parent / "failure.txt"
    try:
        kind.load_runner()(ctx)
    except ValidationFailed as e:
        failure.write_text(str(e))
        return EXIT_CHECK_FAILED
    except QeffbuildError as e:
        failure.write_text(str(e))
        return EXIT_USER_ERROR
    except Exception:
        traceback.print_exc()
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
