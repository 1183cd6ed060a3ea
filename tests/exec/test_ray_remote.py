"""Ray over the remote cache: two raylets with separate local caches and no shared disk exchange artifacts
through a real S3 server (SeaweedFS on loopback); the driver's out/ equals a local build's byte for byte."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from ..helpers import ProjectDir
from ..raycluster import RayCluster, ray_cluster
from ..s3server import S3Server, s3_server

pytestmark = pytest.mark.slow

CHAIN = """
[project]
name = "chain"

[steps.make]                      # only node B offers node_b
cmd = ["sh", "-c", "head -c 300000 /dev/urandom > blob.bin; echo made-on-b > made.txt"]
outputs = ["blob.bin", "made.txt"]
resources = { node_b = 1 }

[steps.use]                       # only node A offers node_a: its input must come through S3
cmd = ["sh", "-c", "cat {dep:make}/made.txt > used.txt; wc -c < {dep:make}/blob.bin >> used.txt"]
outputs = ["used.txt"]
deps = ["make"]
resources = { node_a = 1 }
"""


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    with s3_server(tmp_path_factory.mktemp("s3")) as server:
        yield server


@pytest.fixture(scope="module")
def nodes(tmp_path_factory: pytest.TempPathFactory, s3: S3Server) -> Iterator[tuple[RayCluster, list[Path]]]:
    root = tmp_path_factory.mktemp("nodes")
    caches = [root / "node-a-cache", root / "node-b-cache"]
    with ray_cluster(node_env=[{**s3.env, "QEFFBUILD_NODE_CACHE": str(caches[0])},
                               {**s3.env, "QEFFBUILD_NODE_CACHE": str(caches[1])}],
                     resources=['{"node_a": 1}', '{"node_b": 1}']) as cluster:
        yield cluster, caches


def _entries(cache: Path) -> dict[str, dict[str, str]]:
    return {json.loads(e.read_text())["step"]: json.loads(e.read_text())["outputs"]
            for e in (cache / "ac").glob("*/*.json")}


def test_a_step_on_node_a_reads_node_bs_output_through_s3(nodes: tuple[RayCluster, list[Path]], s3: S3Server,
                                                          tmp_path: Path) -> None:
    cluster, (cache_a, cache_b) = nodes
    env = {**cluster.env, **s3.env, "QEFFBUILD_CACHE_DIR": str(tmp_path / "driver-cache"),
           "QEFFBUILD_REMOTE_TRUST": "any"}
    p = ProjectDir(tmp_path / "ray", env)
    p.manifest(CHAIN)
    url = s3.url + "/ray-chain"
    r = p.cli("build", "--executor", "ray", "--remote-cache", url, "--json")
    assert r.code == 0, r.err
    steps = r.json()["steps"]  # stdout is JSON alone
    assert {s["status"] for s in steps.values()} == {"built"}
    ids = {n: res for n, res in cluster.nodes().items()}
    node_of = {sid: s["where"].split("/")[1] for sid, s in steps.items()}
    assert any(n.startswith(node_of["command:make"]) and ids[n].get("node_b") for n in ids)
    assert any(n.startswith(node_of["command:use"]) and ids[n].get("node_a") for n in ids)
    # each node has only its own cache: A got make's outputs from S3, B never saw use's
    assert set(_entries(cache_b)) == {"command:make"}
    assert set(_entries(cache_a)) == {"command:make", "command:use"}
    assert (p.root / "out" / "use" / "used.txt").read_text() == "made-on-b\n300000\n"

    local = ProjectDir(tmp_path / "local", {"QEFFBUILD_CACHE_DIR": str(tmp_path / "local-cache")})
    local.manifest(CHAIN)
    assert local.cli("build").code == 0
    for target, name in (("use", "used.txt"), ("make", "made.txt")):
        assert (local.root / "out" / target / name).read_bytes() == (p.root / "out" / target / name).read_bytes()
    # a second driver with an empty cache of its own builds nothing: everything comes from S3
    again = ProjectDir(tmp_path / "ray", {**env, "QEFFBUILD_CACHE_DIR": str(tmp_path / "driver-2")})
    r2 = again.cli("build", "--executor", "ray", "--remote-cache", url, "--json", "--out-dir", str(tmp_path / "o2"))
    assert r2.code == 0, r2.err
    assert {s["status"] for s in r2.json()["steps"].values()} == {"remote"}
    assert (tmp_path / "o2" / "make" / "blob.bin").read_bytes() == (p.root / "out" / "make" / "blob.bin").read_bytes()


def test_nothing_in_the_bucket_names_a_missing_blob(nodes: tuple[RayCluster, list[Path]], s3: S3Server) -> None:
    """Entries are uploaded after their blobs: every entry in the bucket names blobs that are there."""
    fs = s3.fs()
    root = s3.url.removeprefix("s3://") + "/ray-chain"
    entries = fs.glob(f"{root}/ac/*/*.json")  # type: ignore[attr-defined]
    assert entries
    for path in entries:
        entry = json.loads(fs.cat_file(path))  # type: ignore[attr-defined]
        for digest in entry["outputs"].values():
            assert fs.exists(f"{root}/cas/{digest[:2]}/{digest}")  # type: ignore[attr-defined]


BIG = """
[project]
name = "big"

[steps.big]                       # node B: a 64 MB output, so that the upload takes a while
cmd = ["sh", "-c", "head -c 64000000 /dev/urandom > big.bin; echo small > small.txt"]
outputs = ["big.bin", "small.txt"]
resources = { node_b = 1 }
"""


def test_a_node_killed_mid_upload_leaves_no_entry_naming_a_missing_blob(nodes: tuple[RayCluster, list[Path]],
                                                                         s3: S3Server, tmp_path: Path) -> None:
    """The worker uploading the step's outputs is SIGKILLed as soon as its first blob is in the bucket (before
    the entry, which goes last): nothing in the bucket names a missing blob, and Ray's retry on that node
    finds the step in the node's cache and finishes the upload, so the build succeeds."""
    import os
    import signal
    import time

    from ..helpers import HANG_S

    cluster, _caches = nodes
    env = {**cluster.env, **s3.env, "QEFFBUILD_CACHE_DIR": str(tmp_path / "driver-cache"),
           "QEFFBUILD_REMOTE_TRUST": "any"}
    p = ProjectDir(tmp_path / "big", env)
    p.manifest(BIG)
    root = s3.url.removeprefix("s3://") + "/ray-kill"
    fs = s3.fs()
    proc = p.popen("build", "--executor", "ray", "--remote-cache", s3.url + "/ray-kill")
    killed = False
    deadline = time.monotonic() + HANG_S  # only a hang ends the wait
    while proc.poll() is None and time.monotonic() < deadline:
        fs.invalidate_cache()  # type: ignore[attr-defined]
        if fs.glob(f"{root}/cas/*/*"):  # type: ignore[attr-defined]
            for pid in _worker_pids("command:big"):
                os.kill(pid, signal.SIGKILL)
                killed = True
            break
        time.sleep(0.05)
    _out, err = proc.communicate(timeout=HANG_S)
    fs.invalidate_cache()  # type: ignore[attr-defined]
    for path in fs.glob(f"{root}/ac/*/*.json"):  # type: ignore[attr-defined]
        entry = json.loads(fs.cat_file(path))  # type: ignore[attr-defined]
        for digest in entry["outputs"].values():
            assert fs.exists(f"{root}/cas/{digest[:2]}/{digest}"), (path, digest)  # type: ignore[attr-defined]
    # Ray runs the task again; the node finds the step in its own cache and finishes the upload
    assert proc.returncode == 0, err
    assert killed, "no worker was found to kill: the test did not test anything"


def _worker_pids(task: str) -> list[int]:
    """Ray names a worker's process after the task it runs (``ray::<name>``)."""
    found = []
    for status in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if f"ray::{task}" in status.read_bytes().decode(errors="replace"):
                found.append(int(status.parent.name))
        except OSError:
            continue
    return found
