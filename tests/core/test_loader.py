"""Manifest loading: golden error messages for bad manifests, and what good ones load into."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from qeffbuild.core.loader import load
from qeffbuild.core.plugins import plugins
from qeffbuild.errors import ManifestError

from ..helpers import REPO, ProjectDir, run_cli

BAD = REPO / "tests" / "fixtures" / "bad"
CASES = sorted(p.stem for p in BAD.glob("*.toml"))


def test_there_are_enough_golden_cases() -> None:
    assert len(CASES) >= 15


@pytest.mark.parametrize("case", CASES)
def test_bad_manifest_golden_message(case: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each bad manifest gives exactly its golden message: file, line, table, key, fix."""
    monkeypatch.chdir(REPO)
    with pytest.raises(ManifestError) as err:
        load([BAD / f"{case}.toml"])
    golden = BAD / f"{case}.expected"
    families = ", ".join(plugins().tasks.names())  # golden files say {families}: a new family edits none of them
    if os.environ.get("QEFFBUILD_UPDATE_GOLDEN"):
        golden.write_text(str(err.value).replace(families, "{families}") + "\n")
    assert str(err.value) + "\n" == golden.read_text().replace("{families}", families)


def test_cli_reports_manifest_errors_with_exit_2_and_no_traceback() -> None:
    res = run_cli(REPO, "-m", str(BAD / "unknown_key.toml"), "build")
    assert res.code == 2
    assert "Traceback" not in res.err
    assert "did you mean 'pooling'?" in res.err


def test_errors_of_several_files_are_reported_together(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)
    with pytest.raises(ManifestError) as err:
        load([BAD / "unknown_key.toml", BAD / "cycle.toml", BAD / "bad_dtype.toml"])
    files = {p.file for p in err.value.problems}
    assert len(files) == 3
    assert str(err.value).endswith("3 errors in 3 manifests")


def test_duplicate_names_across_files_name_both_places(project: ProjectDir) -> None:
    project.manifest('[project]\nname = "a"\n[steps.x]\ncmd = ["true"]\noutputs = ["o"]\n', "a.toml")
    project.manifest('[project]\nname = "b"\n\n[steps.x]\ncmd = ["true"]\noutputs = ["o"]\n', "b.toml")
    res = project.cli("ls")
    assert res.code == 2
    assert "manifests/b.toml:4: [steps.x]: duplicate target name 'x', already defined as [steps.x] at " \
           "manifests/a.toml:3" in res.err


def test_good_manifest_loads_every_table(project: ProjectDir) -> None:
    project.write("manifests/data/s.txt", "hello\n")
    project.manifest("""
        [project]
        name = "ok"
        default = ["v"]

        [models.m]
        source = { random = "BertModel", config = { hidden_size = 8 }, seed = 3 }
        task = "embedding"
        pooling = "cls"

        [specializations.s]
        model = "m"
        seq_len = 16

        [validations.v]
        model = "m"
        specializations = ["s"]
        runtimes = ["pytorch", "onnxruntime"]
        inputs = "data/s.txt"

        [steps.c]
        cmd = ["true"]
        outputs = ["o"]
    """)
    ws = load([project.root / "manifests"])
    assert sorted(ws.targets) == ["c", "m", "s", "v"]
    assert ws.defaults() == ["v"]
    spec = ws.targets["s"].spec
    assert spec.seq_len == [16]  # a single int is a one-entry list
    assert ws.targets["m"].spec.source.seed == 3
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="frozen"):
        spec.batch_size = 2


def test_no_manifests_is_a_usage_error(tmp_path: Path) -> None:
    (tmp_path / "manifests").mkdir()
    res = run_cli(tmp_path, "build")
    assert res.code == 2
    assert "no *.toml manifests found" in res.err and "qeffbuild init" in res.err


def _problems(project: ProjectDir, text: str) -> list[str]:
    project.manifest(text)
    with pytest.raises(ManifestError) as err:
        load([project.root / "manifests"])
    return [p.render().split("project.toml", 1)[1] for p in err.value.problems]


MODEL = """
[project]
name = "f"

[models.e]
source = { random = "BertModel", config = { hidden_size = 8 } }
task = "embedding"

[models.w]
source = { random = "WhisperForConditionalGeneration" }
task = "speech-seq2seq"
"""


def test_family_fields_belong_to_their_family(project: ProjectDir) -> None:
    problems = _problems(project, MODEL + """
[specializations.e-b1]
model = "e"
seq_len = [8]
ctx_len = 32

[specializations.w-b1]
model = "w"
seq_len = [8]
""")
    assert problems[0].startswith(":15: [specializations.e-b1] ctx_len: 'ctx_len' applies to task 'causal-lm' or "
                                  "'speech-seq2seq', not 'embedding' (expected one of: batch_size, compile")
    assert problems[1].startswith(":19: [specializations.w-b1] seq_len: 'seq_len' applies to task 'embedding', not "
                                  "'speech-seq2seq'")


def test_unknown_task_lists_the_known_ones(project: ProjectDir) -> None:
    problems = _problems(project, MODEL.replace('task = "embedding"', 'task = "embeding"'))
    assert problems == [":6: [models.e] task: unknown task 'embeding'; did you mean 'embedding'? "
                        f"(known: {', '.join(plugins().tasks.names())})"]


def test_a_bound_must_be_a_metric_the_task_computes(project: ProjectDir) -> None:
    project.write("manifests/data/s.txt", "hello\n")
    problems = _problems(project, MODEL + """
[specializations.e-b1]
model = "e"
seq_len = [8]

[validations.v]
model = "e"
specializations = ["e-b1"]
runtimes = ["pytorch", "onnxruntime"]
inputs = "data/s.txt"
checks = { onnxruntime = { token_agreement = 1.0, cosin = 0.9, mad = -1.0 } }
""")
    assert problems == [
        ":21: [validations.v] checks.onnxruntime.token_agreement: metric 'token_agreement' is not computed by task "
        "'embedding', so a bound on it would be ignored (it computes: mad, max_abs, cosine)",
        ":21: [validations.v] checks.onnxruntime.cosin: unknown metric 'cosin'; did you mean 'cosine'? (task "
        "'embedding' computes: mad, max_abs, cosine)",
        ":21: [validations.v] checks.onnxruntime.mad: mad bound -1 is outside [0, ∞]",
    ]


def test_nan_and_infinity_are_refused_with_their_line(project: ProjectDir) -> None:
    problems = _problems(project, """
[project]
name = "n"

[models.e]
source = { random = "BertModel", config = { hidden_size = 8, layer_norm_eps = nan } }
task = "embedding"
overrides = { initializer_range = inf }
""")
    assert problems == [
        ":5: [models.e] source.config: nan is not a finite number; use a finite value, got "
        "{'hidden_size': 8, 'layer_norm_eps': nan}",
        ":7: [models.e] overrides: inf is not a finite number; use a finite value, got "
        "{'initializer_range': inf}",
    ]


def test_a_hash_or_a_header_inside_a_string_does_not_move_later_lines(project: ProjectDir) -> None:
    problems = _problems(project, '''
[project]
name = "h"
description = """
[models.phantom]
task = "nothing"
"""

[steps.s]
cmd = ["sh", "-c", "echo '#' > o"]
outputs = ["o"]
bogus = 1
''')
    assert problems == [":11: [steps.s] bogus: unknown key 'bogus' "
                        "(expected one of: cmd, deps, env, exclusive, inputs, outputs, resources)"]


def test_deep_nesting_and_long_names_are_manifest_errors(project: ProjectDir) -> None:
    deep = "[" * 600 + "]" * 600
    problems = _problems(project, f'[project]\nname = "d"\n[steps.s]\ncmd = ["true"]\noutputs = ["o"]\nenv = {deep}\n')
    assert len(problems) == 1 and "too deeply" in problems[0]
    long = "x" * 300
    problems = _problems(project, f'[project]\nname = "d"\n[steps.{long}]\ncmd = ["true"]\noutputs = ["o"]\n')
    assert len(problems) == 1 and "at most 100 characters" in problems[0]


def test_syntax_error_at_end_of_document_still_has_a_line(project: ProjectDir) -> None:
    problems = _problems(project, '[project]\nname = "e"\n[steps.s]\ncmd = ["true",\n  "x"\noutputs = ["o"]\n')
    assert problems[0].startswith(":6: TOML syntax error: Unclosed array")
    problems = _problems(project, '[project]\nname = """e\n\nmore\n')
    assert problems[0].startswith(":2: TOML syntax error")


def test_did_you_mean_among_thousands_of_names_still_finds_the_nearest() -> None:
    """Large name lists go through a trigram index (10,000 unknown deps among 10,000 targets took 90 s)."""
    from qeffbuild.core.diagnostics import MANY, closest

    names = [f"whisper-large-v3-b{i}-fp16-parity" for i in range(5000)] + ["tiny-bert-parity"]
    assert len(names) > MANY
    assert closest("tiny-bert-parityy", names) == "tiny-bert-parity"
    assert closest("whisper-large-v3-b1234-fp16-parit", names) == "whisper-large-v3-b1234-fp16-parity"
    assert closest("something-else-entirely", names) is None
