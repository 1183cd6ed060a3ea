"""A real two-node Ray cluster on loopback: `ray start --head` plus `ray start --address` (the second
node offers the custom resource ``qaic``), each with its own temporary folder, stopped after."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path


@dataclass
class RayCluster:
    address: str
    env: dict[str, str]

    def nodes(self) -> dict[str, dict[str, float]]:
        """Node id -> its resources (through a short-lived driver)."""
        import json
        import sys

        code = (f"import ray, json; ray.init(address={self.address!r}, log_to_driver=False, logging_level=40); "
                "print(json.dumps({n['NodeID']: n['Resources'] for n in ray.nodes() if n['Alive']}))")
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             env={**os.environ, **self.env}, check=True)
        data: dict[str, dict[str, float]] = json.loads(out.stdout.strip().splitlines()[-1])
        return data


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def ray_cluster(config: dict[str, str] | None = None) -> Iterator[RayCluster]:
    """``config``: Ray system settings for the cluster's daemons, as RAY_* environment variables."""
    ray = shutil.which("ray")
    if ray is None:
        raise RuntimeError("the `ray` command (pip install 'qeffbuild[ray]', in the dev extra) is not on PATH")
    port = _free_port()
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", **(config or {})}
    common = ["--num-cpus=2", "--object-store-memory=100000000", "--disable-usage-stats"]
    # Ray's socket paths must fit AF_UNIX's 107 bytes: pytest's tmp_path (with a session folder below it)
    # is too long on some machines, so the head's folder is a short one in /tmp, removed after
    temp = Path(tempfile.mkdtemp(prefix="qr", dir="/tmp"))
    try:
        head = ["--head", f"--port={port}", "--include-dashboard=false", f"--temp-dir={temp}"]
        _run([ray, "start", *head, *common], env)
        _run([ray, "start", f"--address=127.0.0.1:{port}", "--resources={\"qaic\": 1}", *common], env)
        yield RayCluster(f"127.0.0.1:{port}", {"RAY_ADDRESS": f"127.0.0.1:{port}", "RAY_USAGE_STATS_ENABLED": "0"})
    finally:
        # `ray stop` stops every Ray process of this user on this machine: the test cluster is the only one
        subprocess.run([ray, "stop", "--force"], capture_output=True, env=env)
        shutil.rmtree(temp, ignore_errors=True)


def _run(cmd: list[str], env: dict[str, str]) -> None:
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if done.returncode != 0:  # say why: a bare CalledProcessError hides Ray's own message
        said = f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        raise RuntimeError(f"{' '.join(cmd[:3])} exited {done.returncode}:\n{said}")
