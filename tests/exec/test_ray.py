"""The Ray executor on a real two-node cluster (loopback): placement, resources, retries, Ctrl-C, and a
cache identical to a local build's."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ..helpers import HANG_S, ProjectDir, alive, start_time
from ..raycluster import RayCluster, ray_cluster

pytestmark = pytest.mark.slow

WIDE = "[project]\nname = \"wide\"\n" + "".join(f"""
[steps.s{i}]
cmd = ["sh", "-c", "sleep 1; echo {i} > o.txt"]
outputs = ["o.txt"]
""" for i in range(8)) + """
[steps.all]
cmd = ["sh", "-c", "cat {dep:s0}/o.txt {dep:s1}/o.txt {dep:s2}/o.txt {dep:s3}/o.txt > all.txt"]
outputs = ["all.txt"]
deps = ["s0", "s1", "s2", "s3"]
"""


@pytest.fixture(scope="module")
def cluster() -> Iterator[RayCluster]:
    with ray_cluster() as c:
        yield c


def _ray_project(root: Path, cluster: RayCluster, manifest: str) -> ProjectDir:
    p = ProjectDir(root, {**cluster.env, "QEFFBUILD_CACHE_DIR": str(root / "cache")})
    p.manifest(manifest)
    return p


def test_steps_spread_over_both_nodes_and_the_cache_matches_a_local_build(cluster: RayCluster,
                                                                          tmp_path: Path) -> None:
    p = _ray_project(tmp_path / "ray", cluster, WIDE)
    r = p.cli("build", "--executor", "ray", "--json")
    assert r.code == 0, r.err
    steps = r.json()["steps"]
    assert {s["status"] for s in steps.values()} == {"built"}
    nodes = {s["where"].split("/")[1] for s in steps.values()}
    assert len(nodes) == 2  # both nodes ran steps
    assert (p.root / "out" / "all" / "all.txt").read_text() == "0\n1\n2\n3\n"
    local = ProjectDir(tmp_path / "local", {"QEFFBUILD_CACHE_DIR": str(tmp_path / "local" / "cache")})
    local.manifest(WIDE)
    assert local.cli("build").code == 0

    def entries(cache: Path) -> dict[str, dict[str, str]]:
        return {json.loads(e.read_text())["step"]: json.loads(e.read_text())["outputs"]
                for e in (cache / "ac").glob("*/*.json")}

    assert entries(tmp_path / "ray" / "cache") == entries(tmp_path / "local" / "cache")
    assert p.cli("build", "--executor", "ray", "--json").json()["counts"] == {"cached": 9}


def test_a_step_needing_the_qaic_resource_runs_only_where_it_is(cluster: RayCluster, tmp_path: Path,
                                                                shared_cache: Path) -> None:
    from ..backends.test_qaic import MANIFEST, fake_sdk

    compiler = fake_sdk(tmp_path / "sdk", "1.20.2")
    p = ProjectDir(tmp_path / "q", {**cluster.env, "QEFFBUILD_CACHE_DIR": str(shared_cache),
                                    "QAIC_COMPILER": str(compiler)})
    p.manifest(MANIFEST.replace("{cores}", "4"))
    r = p.cli("build", "tiny-qpc", "--executor", "ray", "--force", "--json")
    assert r.code == 0, r.err
    steps = r.json()["steps"]
    qaic_nodes = {nid for nid, res in cluster.nodes().items() if res.get("qaic")}
    where = steps["compile:qaic:tiny-qpc"]["where"].split("/")[1]
    assert any(n.startswith(where) for n in qaic_nodes)
    assert (p.root / "out" / "tiny-qpc" / "qaic" / "qpc" / "programqpc.bin").is_file()


def test_a_killed_worker_is_retried_and_the_build_is_correct(cluster: RayCluster, tmp_path: Path) -> None:
    pids = tmp_path / "workers.txt"
    p = _ray_project(tmp_path / "kill", cluster, f"""
[project]
name = "kill"

[steps.slow]
cmd = ["sh", "-c", "echo $PPID >> {pids}; sleep 4; echo survived > o.txt"]
outputs = ["o.txt"]
""")
    proc = p.popen("build", "--executor", "ray", "--json")
    deadline = time.monotonic() + HANG_S  # only a hang ends the wait
    while not pids.exists() or not pids.read_text().strip():
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.1)
    worker = int(pids.read_text().split()[0])
    os.kill(worker, signal.SIGKILL)  # the Ray worker running the step dies mid-step
    out, err = proc.communicate(timeout=HANG_S)
    assert proc.returncode == 0, err
    assert json.loads(out)["ok"] is True  # stdout is the JSON alone: Ray's "(raylet) A worker died" went to stderr
    attempts = pids.read_text().split()
    assert len(attempts) == 2 and attempts[0] != attempts[1]  # retried in a fresh worker
    assert (p.root / "out" / "slow" / "o.txt").read_text() == "survived\n"


def test_ctrl_c_cancels_the_ray_tasks(cluster: RayCluster, tmp_path: Path) -> None:
    """The step's whole process group (the shell and what it started) is gone when the driver has exited, and
    its scratch folder with it."""
    pids = tmp_path / "steps.txt"
    p = _ray_project(tmp_path / "stop", cluster, f"""
[project]
name = "stop"

[steps.long]
cmd = ["sh", "-c", "sleep 60 & echo $$ $! >> {pids}; wait; echo no > o.txt"]
outputs = ["o.txt"]
""")
    proc = p.popen("build", "--executor", "ray", start_new_session=True)
    deadline = time.monotonic() + HANG_S  # only a hang ends the wait
    while not pids.exists() or not pids.read_text().strip():
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.1)
    os.kill(proc.pid, signal.SIGINT)
    _out, err = proc.communicate(timeout=HANG_S)
    assert proc.returncode == 130, err
    shell, sleeper = (int(x) for x in pids.read_text().split()[:2])
    assert not alive(shell) and not alive(sleeper), "the step kept running on the cluster after the driver exited"
    scratch = p.root / "cache" / "tmp"
    assert not scratch.exists() or not [d for d in scratch.iterdir() if d.is_dir()], list(scratch.iterdir())


def test_stopping_a_cluster_leaves_other_clusters_running(cluster: RayCluster) -> None:
    ours = set(cluster.pids())
    assert ours
    with ray_cluster(cpus=1) as other:
        theirs = {pid: start_time(pid) for pid in other.pids()}
        assert theirs and not set(theirs) & ours
    assert not [pid for pid, started in theirs.items() if alive(pid, started)]
    assert all(alive(pid) for pid in ours if pid in set(cluster.pids()))
    assert len(cluster.nodes()) == 2  # the module's cluster still answers
