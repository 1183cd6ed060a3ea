"""`--executor ray` with nothing listening at the address: a clear error in seconds, exit 2."""

from __future__ import annotations

import socket

from ..helpers import ProjectDir


def test_an_unreachable_cluster_is_a_usage_error(project: ProjectDir) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    project.manifest('[project]\nname = "p"\n\n[steps.s]\ncmd = ["true"]\noutputs = ["o"]\n')
    res = project.cli("build", "--executor", "ray", "--ray-address", f"127.0.0.1:{port}", "--json")
    assert res.code == 2, res.err
    assert f"cannot reach the Ray cluster at 127.0.0.1:{port}" in res.err and "Traceback" not in res.err
    assert res.json()["error"] == {"type": "UsageError", "exit_code": 2, "message": res.json()["error"]["message"]}
