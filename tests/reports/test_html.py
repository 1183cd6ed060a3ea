"""The HTML report in a real headless Chromium: every plot drawn, nothing logged, offline."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from ..helpers import ProjectDir, checkout
from .browser import render

TARGETS = ("tiny-bert-parity", "whisper-tiny-random-parity")


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, shared_cache: Path) -> ProjectDir:
    p = checkout(tmp_path_factory.mktemp("html"), shared_cache)
    r = p.cli("build", *TARGETS)
    assert r.code == 0, r.err
    return p


@pytest.mark.slow
@pytest.mark.parametrize(("target", "plots"), [
    ("tiny-bert-parity", ["Mean absolute difference from the reference", "Lowest cosine similarity per runtime",
                          "Latency per sequence", "Throughput against sequence length"]),
    ("whisper-tiny-random-parity", ["Token agreement with the reference (exact subset)",
                                    "WER per runtime (random weights: noise)", "WER per utterance (random weights: "
                                    "noise)", "Latency per utterance"]),
])
def test_report_renders_every_plot_without_errors(built: ProjectDir, target: str, plots: list[str],
                                                  tmp_path: Path) -> None:
    html = built.root / "out" / target / "report.html"
    text = html.read_text()
    assert "<script" not in text and "<link" not in text and "<img" not in text  # self-contained: nothing fetched
    assert not re.search(r"""(src|href)=["']?https?:""", text)
    page = render(html, tmp_path / f"{target}.png")
    assert page.errors == []
    assert page.misaligned == [] and page.covered == []  # headers over their numbers; no legend over a bar
    report = json.loads((html.parent / "report.json").read_text())
    assert report["random_weights"] and "random weights: this model was built" in text  # said first, on top
    assert [p["title"] for p in page.plots] == plots
    for p in page.plots:  # drawn: a real size and many marks (axes, bars, dots)
        assert float(p["width"]) > 300 and float(p["height"]) > 150 and int(p["marks"]) > 10, p
    assert page.title.startswith(f"{target}:") and page.title.endswith("ok")
    assert page.screenshot.stat().st_size > 50_000


@pytest.mark.slow
def test_report_command_rerenders_with_the_build_provenance(built: ProjectDir, tmp_path: Path) -> None:
    target = "whisper-tiny-random-parity"
    r = built.cli("report", target, "-o", str(tmp_path / "r.html"))
    assert r.code == 0, r.err
    assert r.out.strip() == str(tmp_path / "r.html")
    text = (tmp_path / "r.html").read_text()
    provenance = json.loads((built.root / "out" / target / "provenance.json").read_text())
    keys = [s["key"] for s in provenance["steps"]]
    assert "duration_s" in text and all(k in text for k in keys)  # every step of the build, by key
    # the built copy is the cached one; a rebuild leaves it (and the re-render) alone
    assert built.cli("build", target).code == 0
    assert render(tmp_path / "r.html", tmp_path / "r.png").errors == []


def test_report_of_an_unbuilt_or_wrong_target_is_a_clear_error(project: ProjectDir) -> None:
    project.manifest("""
        [project]
        name = "r"
        [models.t]
        source = { random = "BertModel", config = { hidden_size = 8, num_attention_heads = 2 } }
        task = "embedding"
        [validations.v]
        model = "t"
        specializations = ["s"]
        runtimes = ["pytorch"]
        inputs = "x.txt"
        [specializations.s]
        model = "t"
        seq_len = [8]
    """)
    project.write("manifests/x.txt", "a sentence\n")
    r = project.cli("report", "v")
    assert r.code == 2 and "v has no report" in r.err and "qeffbuild build v" in r.err
    r = project.cli("report", "s")
    assert r.code == 2 and "takes a validation target" in r.err
