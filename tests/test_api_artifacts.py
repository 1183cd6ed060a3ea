"""A bench's derived artifacts (a baseline's conversion of the model): made once, then found in the cache."""

from __future__ import annotations

import shutil
from pathlib import Path
from types import SimpleNamespace

from qeffbuild.api import Artifacts
from qeffbuild.store import open_store


def _plan_with_upstream(store: object, tmp_path: Path) -> object:
    """A plan-shaped object: validation ``v`` whose ``model`` role is step ``load:m``, built in the store."""
    from qeffbuild.core.hashing import digest_json

    material = {"step": "load:m"}
    key = digest_json(material)  # the store holds an entry to its key: the material must hash to it
    scratch = store.scratch(key)  # type: ignore[attr-defined]
    (scratch / "model").mkdir()
    (scratch / "model" / "weights.bin").write_bytes(b"weights")
    store.commit(key, "load:m", scratch, material, 0.1, "")  # type: ignore[attr-defined]
    shutil.rmtree(scratch)  # as the runner does after a commit
    validation = SimpleNamespace(node=SimpleNamespace(deps={"model": "load:m"}), key="b" * 64)
    return SimpleNamespace(by_id={"v": validation, "load:m": SimpleNamespace(key=key, node=None)})


def test_a_derived_folder_is_made_once_and_keyed_by_its_source_and_material(tmp_path: Path) -> None:
    store = open_store(tmp_path / "cache")
    artifacts = Artifacts(store, _plan_with_upstream(store, tmp_path), "v")  # type: ignore[arg-type]
    made: list[str] = []

    def convert(source: Path, folder: Path, quantization: str = "int8") -> None:
        made.append(quantization)
        (folder / "model.bin").write_bytes((source / "model" / "weights.bin").read_bytes() + quantization.encode())

    first = artifacts.derived("model", "ctranslate2", {"quantization": "int8"}, convert)
    again = artifacts.derived("model", "ctranslate2", {"quantization": "int8"}, convert)
    assert made == ["int8"] and first == again
    assert (again / "model.bin").read_bytes() == b"weightsint8"
    other = artifacts.derived("model", "ctranslate2", {"quantization": "float32"},
                              lambda s, f: convert(s, f, "float32"))
    assert made == ["int8", "float32"] and other != first
    assert not [p for p in (tmp_path / "cache" / "tmp").iterdir() if p.is_dir()]  # scratch removed
    assert store.notes == []  # no entry was found corrupt (each one's material hashes to its key)
