"""The chaos suite, short form (the long form is benchmarks/chaos.py): the store's promises under kills,
concurrent builders, gc beside builds, every corruption kind and fuzzed manifests."""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ..helpers import REPO
from .harness import (
    CORRUPTIONS,
    SEED_MANIFESTS,
    ChaosProject,
    Tally,
    concurrent_scenario,
    corruption_scenario,
    fuzz_case,
    kill_scenario,
    mutate,
    read_only_scenario,
    template_scenario,
)


@pytest.fixture(scope="module")
def chaos(tmp_path_factory: pytest.TempPathFactory) -> ChaosProject:
    return ChaosProject(tmp_path_factory.mktemp("chaos") / "p", n=12, seed=7)


def test_kills_at_random_points_leave_nothing_half_done(chaos: ChaosProject) -> None:
    tally, rng = Tally(), random.Random(1)
    for i in range(4):
        kill_scenario(chaos, tally, rng, f"kill {i}")
    assert tally.problems() == {}


@pytest.mark.parametrize("with_gc", [False, True], ids=["8 builders", "8 builders and gc"])
def test_concurrent_builders_run_each_step_once(chaos: ChaosProject, with_gc: bool) -> None:
    tally = Tally()
    concurrent_scenario(chaos, tally, 8, "concurrent", with_gc=with_gc)
    assert tally.problems() == {}


def test_every_corruption_kind_heals_or_fails_loudly(chaos: ChaosProject) -> None:
    tally, rng = Tally(), random.Random(2)
    for kind in CORRUPTIONS:
        corruption_scenario(chaos, tally, kind, rng, kind)
    assert tally.problems() == {}
    assert sum(tally.runs.values()) == len(CORRUPTIONS)


def test_a_read_only_out_and_hostile_templates_fail_cleanly(chaos: ChaosProject, tmp_path: Path) -> None:
    tally, rng = Tally(), random.Random(3)
    for i in range(3):
        read_only_scenario(chaos, tally, rng, f"read-only {i}")
        template_scenario(tmp_path / "t", tally, rng, f"template {i}")
    assert tally.problems() == {}


@pytest.fixture(scope="module")
def fuzz_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("fuzz")
    shutil.copytree(REPO / "manifests" / "data", root / "manifests" / "data")
    return root


def test_mutated_manifests_never_crash_or_hang(fuzz_root: Path) -> None:
    rng = random.Random(3)
    seeds = [(REPO / "manifests" / name).read_text() for name in SEED_MANIFESTS]
    crashes = [p for i in range(150) if (p := fuzz_case(fuzz_root, mutate(rng.choice(seeds), rng)))]
    assert crashes == []


def test_a_name_the_file_system_refuses_is_a_located_error(fuzz_root: Path) -> None:
    """Every quoted value of the shipped manifests, one at a time, replaced by a 300-character name (too
    long for a file name): paths, package folders, data sets and class names all end in a qeffbuild error."""
    import re

    long_name = '"' + "a" * 300 + '"'
    crashes = []
    for name in SEED_MANIFESTS:
        text = (REPO / "manifests" / name).read_text()
        for m in re.finditer(r'"[^"\n]*"', text):
            if problem := fuzz_case(fuzz_root, text[:m.start()] + long_name + text[m.end():]):
                crashes.append(f"{name}:{text[:m.start()].count(chr(10)) + 1}: {problem}")
    assert crashes == []


KEYS = st.sampled_from(["source", "task", "pooling", "seq_len", "ctx_len", "model", "specializations",
                        "runtimes", "inputs", "checks", "cmd", "outputs", "deps", "dtype", "compile", "random",
                        "config", "path", "hf", "package", "batch_size", "max_new_tokens", "name", "x"])
SCALARS = st.one_of(st.integers(-2**70, 2**70), st.floats(allow_nan=True, allow_infinity=True),
                    st.booleans(), st.text(max_size=30), st.sampled_from(["embedding", "speech-seq2seq", "m",
                                                                          "BertModel", "ort", "aoti", "data"]))


def _toml_value(v: object) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return "nan" if v != v else ("inf" if v == float("inf") else "-inf" if v == float("-inf") else repr(v))
    if isinstance(v, int):
        return str(v)
    if isinstance(v, str):
        return '"' + v.encode("unicode_escape").decode("ascii").replace('"', '\\"') + '"'
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    assert isinstance(v, dict)
    return "{ " + ", ".join(f"{k} = {_toml_value(x)}" for k, x in v.items()) + " }"


VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(KEYS, inner, max_size=3),
                      max_leaves=8)
TABLES = st.dictionaries(st.sampled_from(["models", "specializations", "validations", "steps", "project", "x"]),
                         st.dictionaries(st.sampled_from(["m", "s", "v", "c", "n" * 120]),
                                         st.dictionaries(KEYS, VALUES, max_size=6), max_size=3), max_size=4)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(tables=TABLES)
def test_generated_manifests_never_crash_or_hang(fuzz_root: Path, tables: dict[str, dict[str, dict]]) -> None:
    lines = ['[project]\nname = "f"\n']
    for table, named in tables.items():
        for name, body in named.items():
            lines.append(f"[{table}.{name}]" if table != "project" else "[extra]")
            lines += [f"{k} = {_toml_value(v)}" for k, v in body.items()]
    assert fuzz_case(fuzz_root, "\n".join(lines) + "\n") is None
