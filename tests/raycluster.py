"""A real two-node Ray cluster on loopback: `ray start --head` plus `ray start --address`, stopped after.

Every node binds to 127.0.0.1 (``--node-ip-address``: Ray would otherwise resolve 127.0.0.1 to the machine's
own interface address and dial that) and nothing is sent elsewhere. Each node may get environment variables
of its own (``QEFFBUILD_NODE_CACHE``: its local cache, so no node reads another's disk) and resources of its
own. Stopping kills only this cluster's processes — those whose command line names its GCS port or its
temporary folder — never another Ray cluster of the same user (``ray stop`` would stop them all).
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

from .helpers import alive, start_time


@dataclass
class RayCluster:
    address: str
    env: dict[str, str]
    port: int = 0
    temp: Path | None = None
    node_env: list[dict[str, str]] = field(default_factory=list)
    # every process pids() has found, by pid and start time: a Ray worker renames itself (``ray::IDLE``) and
    # loses the marks pids() looks for, yet must still be stopped with its cluster
    seen: dict[int, str | None] = field(default_factory=dict)

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

    def pids(self) -> list[int]:
        """Every live process of this cluster (its daemons and workers), found by its port or folder in its
        command line, or its folder in its environment: Ray's agents and workers rename themselves
        (``ray::DashboardAgent``, ``ray::IDLE``), but keep the RAY_AUTH_TOKEN_PATH they were started with."""
        marks = [f"127.0.0.1:{self.port}", f"--gcs_server_port={self.port}", f"--gcs-address=127.0.0.1:{self.port}"]
        if self.temp is not None:
            marks.append(str(self.temp))
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == os.getpid():
                continue
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                environ = (entry / "environ").read_bytes().decode(errors="replace") if self.temp is not None else ""
            except OSError:
                continue
            if any(m in cmdline for m in marks) or (self.temp is not None and str(self.temp) in environ):
                found.append(int(entry.name))
        self.seen.update({pid: start_time(pid) for pid in found if pid not in self.seen})
        return found

    def live(self) -> list[int]:
        """This cluster's processes still running: those found now, and those found before (same start time)."""
        now = set(self.pids())
        return sorted(now | {pid for pid, started in self.seen.items() if alive(pid, started)})

    def stop(self) -> None:
        """SIGTERM this cluster's processes, then SIGKILL what is left after a grace period."""
        # after SIGKILL, wait until they are gone (a loaded machine can take seconds): only a hang ends it
        for sig, grace in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 120.0)):
            for pid in self.live():
                with suppress(OSError):
                    os.kill(pid, sig)
            deadline = time.monotonic() + grace
            while self.live() and time.monotonic() < deadline:
                time.sleep(0.1)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def ray_cluster(config: dict[str, str] | None = None, node_env: list[dict[str, str]] | None = None,
                resources: list[str] | None = None, cpus: int = 2) -> Iterator[RayCluster]:
    """``config``: Ray system settings for every daemon, as RAY_* environment variables; ``node_env``: extra
    environment of the head and the second node; ``resources``: their `--resources` JSON (default: the second
    node offers ``qaic``)."""
    ray = shutil.which("ray")
    if ray is None:
        raise RuntimeError("the `ray` command (pip install 'qeffbuild[ray]', in the dev extra) is not on PATH")
    port = _free_port()
    # Ray gives a joining node ~20 s to reach the head's GCS; a loaded machine can take longer, and Ray then
    # reports a misleading auth error: the generous wait only lengthens what a hang would take.
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_gcs_server_port_wait_time_s": "180",
           **(config or {})}
    per_node = node_env or [{}, {}]
    res = resources or ["{}", '{"qaic": 1}']
    common = [f"--num-cpus={cpus}", "--object-store-memory=100000000", "--disable-usage-stats",
              "--node-ip-address=127.0.0.1"]
    # Ray's socket paths must fit AF_UNIX's 107 bytes: pytest's tmp_path (with a session folder below it)
    # is too long on some machines, so the head's folder is a short one in /tmp, removed after
    temp = Path(tempfile.mkdtemp(prefix="qr", dir="/tmp"))
    # The cluster's own auth token, given to its daemons, workers and drivers alike: a head otherwise turns
    # token auth on by itself when ~/.ray/auth_token exists (any local ray.init() writes one), and then a
    # joining node without it fails with a misleading auth error.
    (temp / "token").write_text(secrets.token_hex(32))
    auth = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(temp / "token")}
    env.update(auth)
    cluster = RayCluster(f"127.0.0.1:{port}", {"RAY_ADDRESS": f"127.0.0.1:{port}", "RAY_USAGE_STATS_ENABLED": "0",
                                               **auth}, port, temp, per_node)
    try:
        head = ["--head", f"--port={port}", "--include-dashboard=false", f"--temp-dir={temp}"]
        _run([ray, "start", *head, *common, f"--resources={res[0]}"], {**env, **per_node[0]})
        _run([ray, "start", f"--address=127.0.0.1:{port}", f"--resources={res[1]}", *common],
             {**env, **per_node[1]})
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(temp, ignore_errors=True)


def _run(cmd: list[str], env: dict[str, str]) -> None:
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if done.returncode != 0:  # say why: a bare CalledProcessError hides Ray's own message
        said = f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        raise RuntimeError(f"{' '.join(cmd[:3])} exited {done.returncode}:\n{said}")
