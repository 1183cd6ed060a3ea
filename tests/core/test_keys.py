"""Step keys: stable across hash seeds, dict order and checkout location; sensitive to content."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from qeffbuild.core.hashing import canonical_json, digest_file, digest_json
from qeffbuild.core.statcache import StatCache, StateDB

from ..helpers import ProjectDir

MANIFEST = """
[project]
name = "keys"
salt = "s1"

[models.m]
source = { random = "BertModel", config = { hidden_size = 8, num_attention_heads = 2 }, seed = 1 }
task = "embedding"

[specializations.s]
model = "m"
seq_len = [8, 16]
compile = ["ort"]

[steps.a]
cmd = ["sh", "-c", "cat {root}/data/in.txt > o.txt"]
inputs = ["data/in.txt"]
outputs = ["o.txt"]
env = { B = "2", A = "1" }
"""

PLAN_KEYS = (
    "import json, sys\n"
    "from qeffbuild.api import Project\n"
    "p = Project()\n"
    "plan = p.plan(sys.argv[1:], with_reasons=False)\n"
    "print(json.dumps({s.id: s.key for s in plan.steps}))\n"
)


def _keys(root: Path, seed: str, *targets: str) -> dict[str, str]:
    env = {**os.environ, "PYTHONHASHSEED": seed}
    out = subprocess.run([sys.executable, "-c", PLAN_KEYS, *targets], cwd=root, env=env, capture_output=True,
                         text=True, check=True)
    data: dict[str, str] = json.loads(out.stdout)
    return data


def _setup(project: ProjectDir, manifest: str = MANIFEST) -> None:
    project.manifest(manifest)
    project.write("manifests/data/in.txt", "hello\n")


def test_canonical_json_ignores_dict_order() -> None:
    assert canonical_json({"b": 1, "a": {"y": 2, "x": [1, 2]}}) == canonical_json({"a": {"x": [1, 2], "y": 2}, "b": 1})
    assert digest_json({"a": 1.0}) != digest_json({"a": 1})  # a config float stays a float


def test_keys_are_stable_across_hash_seeds(project: ProjectDir) -> None:
    _setup(project)
    first = _keys(project.root, "1", "a", "s")
    assert first == _keys(project.root, "12345", "a", "s")
    assert len(set(first.values())) == len(first)  # every step has its own key


def test_keys_ignore_table_and_key_order(project: ProjectDir, tmp_path: Path) -> None:
    _setup(project)
    before = _keys(project.root, "0", "a", "s")
    reordered = MANIFEST.replace('env = { B = "2", A = "1" }', 'env = { A = "1", B = "2" }')
    # move the [steps.a] table above the model
    head, steps = reordered.split("[steps.a]")
    reordered = head.replace("[models.m]", "[steps.a]" + steps + "\n[models.m]", 1)
    project.manifest(reordered)
    assert _keys(project.root, "0", "a", "s") == before


def test_keys_survive_moving_the_checkout(project: ProjectDir, tmp_path: Path) -> None:
    _setup(project)
    before = _keys(project.root, "0", "a", "s")
    moved = tmp_path.parent / (tmp_path.name + "-moved")
    shutil.copytree(project.root, moved)
    try:
        assert _keys(moved, "0", "a", "s") == before
    finally:
        shutil.rmtree(moved)


def test_keys_change_with_content_params_and_salt(project: ProjectDir) -> None:
    _setup(project)
    base = _keys(project.root, "0", "a", "s")
    project.write("manifests/data/in.txt", "changed\n")
    changed = _keys(project.root, "0", "a", "s")
    assert changed["command:a"] != base["command:a"]
    assert changed["load:m"] == base["load:m"]
    project.manifest(MANIFEST.replace("seed = 1", "seed = 2"))
    reseeded = _keys(project.root, "0", "a", "s")
    assert reseeded["load:m"] != base["load:m"]  # same name, other weights: never the same key
    assert reseeded["compile:ort:s:seq8"] != base["compile:ort:s:seq8"]
    project.manifest(MANIFEST.replace('salt = "s1"', 'salt = "s2"'))
    assert set(_keys(project.root, "0", "a", "s").values()).isdisjoint(base.values())


def test_stat_cache_reads_an_unchanged_file_once(tmp_path: Path) -> None:
    f = tmp_path / "weights.bin"
    f.write_bytes(b"x" * 1000)
    db = StateDB(tmp_path / "stat.sqlite")
    cache = StatCache(db)
    d1 = cache.digest(f)
    assert cache.hashed == 1
    cache.flush()
    db.close()
    again = StatCache(StateDB(tmp_path / "stat.sqlite"))
    assert again.digest(f) == d1
    assert again.hashed == 0  # served from sqlite by (path, size, mtime_ns, inode)
    f.write_bytes(b"y" * 1000)
    assert again.digest(f) != d1
    assert again.hashed == 1


@pytest.mark.parametrize("garbage", [b"", b"not a database at all" * 100, b"SQLite format 3\x00" + b"\x00" * 50])
def test_a_corrupt_state_database_is_moved_aside_and_rebuilt(tmp_path: Path, garbage: bytes) -> None:
    f = tmp_path / "w.bin"
    f.write_bytes(b"x")
    path = tmp_path / "state.sqlite"
    path.write_bytes(garbage)
    db = StateDB(path)
    assert StatCache(db).digest(f) == digest_file(f)
    if garbage:
        assert any("moved it to" in n for n in db.notes)
        assert list(tmp_path.glob("state.sqlite.corrupt-*"))


def test_an_unwritable_state_database_still_answers(tmp_path: Path) -> None:
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        f = tmp_path / "w.bin"
        f.write_bytes(b"x")
        db = StateDB(ro / "sub" / "state.sqlite")
        cache = StatCache(db)
        if os.geteuid() != 0:  # root writes anyway
            assert cache.digest(f) and any("cannot be written" in n for n in db.notes)
        cache.flush()
    finally:
        ro.chmod(0o700)


def test_toolchain_enters_keys_per_backend(project: ProjectDir, monkeypatch: pytest.MonkeyPatch) -> None:
    """An onnxruntime upgrade rebuilds `ort` artifacts and the validation, never AOTInductor packages."""
    from qeffbuild.core import keys

    _setup(project, MANIFEST.replace('compile = ["ort"]', 'compile = ["ort", "aoti"]'))
    before = {s.id: s.key for s in project.api().plan(["s"], with_reasons=False).steps}
    real = keys.dist_version
    monkeypatch.setattr(keys, "dist_version", lambda d: "99.0" if d == "onnxruntime" else real(d))
    after = {s.id: s.key for s in project.api().plan(["s"], with_reasons=False).steps}
    changed = sorted(k for k in before if before[k] != after[k])
    assert changed == ["compile:ort:s:seq16", "compile:ort:s:seq8"]


def test_a_model_is_its_content_however_it_is_declared(project: ProjectDir, tmp_path: Path) -> None:
    """The same bytes as a local folder, a hub snapshot in the HF cache, or a folder reached another way share
    every key; one changed byte does not."""
    folder = project.root / "manifests" / "ckpt"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"model_type": "bert", "architectures": ["BertModel"],
                                                    "hidden_size": 8, "num_attention_heads": 2}))
    (folder / "model.safetensors").write_bytes(b"weights" * 100)
    hub = tmp_path / "hf" / "hub" / "models--org--tiny"
    commit = "0123456789abcdef0123456789abcdef01234567"
    (hub / "refs").mkdir(parents=True)
    (hub / "refs" / "main").write_text(commit)
    for f in folder.iterdir():  # the HF cache layout: snapshot files are links to blobs named by hash
        blob = hub / "blobs" / digest_file(f)
        blob.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(f, blob)
        (hub / "snapshots" / commit).mkdir(parents=True, exist_ok=True)
        (hub / "snapshots" / commit / f.name).symlink_to(os.path.relpath(blob, hub / "snapshots" / commit))
    models = {"local": 'source = { path = "ckpt" }', "hub": 'source = { hf = "org/tiny" }',
              "again": 'source = { path = "../manifests/ckpt" }'}
    project.manifest("[project]\nname = \"same\"\n" + "".join(
        f'[models.{name}]\n{src}\ntask = "embedding"\n' for name, src in models.items()))
    project.env = {"HF_HUB_CACHE": str(tmp_path / "hf" / "hub")}
    keys = {s["id"]: s["key"] for s in project.cli("plan", "--json").json()["steps"]}
    assert keys["load:local"] == keys["load:hub"] == keys["load:again"]
    (folder / "model.safetensors").write_bytes(b"weights" * 99 + b"Weights")
    changed = {s["id"]: s["key"] for s in project.cli("plan", "--json").json()["steps"]}
    assert changed["load:local"] != keys["load:local"] and changed["load:hub"] == keys["load:hub"]


@pytest.mark.parametrize("size", [0, 1, 1023, 1024, 1025, 2048, 2600])
def test_a_files_digest_is_blake3_of_its_bytes_however_it_is_read(tmp_path: Path, size: int,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """digest_file reads a large file in chunks, alternating two buffers with a reader thread, and hashes each on
    every core: the digest is blake3 of the whole file at every size around the chunk (shrunk to 1 KiB here)."""
    from blake3 import blake3

    from qeffbuild.core import hashing

    monkeypatch.setattr(hashing, "PARALLEL_CHUNK", 1024)
    data = os.urandom(size)
    f = tmp_path / "f.bin"
    f.write_bytes(data)
    assert digest_file(f) == blake3(data).hexdigest()
