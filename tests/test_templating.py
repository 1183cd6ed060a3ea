"""Project templates are data: rendering one (init, qaic bundles, reports) never runs its code."""

from __future__ import annotations

from pathlib import Path

import pytest

from qeffbuild.errors import TemplateError
from qeffbuild.reports.html import Page, render
from qeffbuild.templating import render_files

from .helpers import ProjectDir

ESCAPES = {
    "lipsum": '{{ lipsum.__globals__["os"].popen("touch MARKER").read() }}',
    "cycler": '{{ cycler.__init__.__globals__.__builtins__["open"]("/etc/hostname").read() }}',
    "mro": "{{ value.__class__.__mro__[1].__subclasses__() }}",
    "format": '{{ "{0.__class__}".format(value) }}',
    "mutation": "{% set x = [] %}{{ x.append(1) }}",
}


@pytest.mark.parametrize("name", sorted(ESCAPES))
def test_a_hostile_template_is_refused_with_its_file_and_line(name: str, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    template = tmp_path / "t.j2"
    template.write_text("ok {{ value }}\n" + ESCAPES[name] + "\n")
    with pytest.raises(TemplateError) as err:
        render_files({"template:qaic/t.j2": template}, "qaic/t.j2", value="v")
    assert str(err.value).startswith("templates/qaic/t.j2:2: ")
    assert not (tmp_path / "MARKER").exists()


def test_a_template_formats_the_values_it_is_given(tmp_path: Path) -> None:
    template = tmp_path / "t.j2"
    template.write_text('{% for d in range(n) %}{{ d }} {% endfor %}{{ name | upper }} {{ "%s" | format(n) }}')
    assert render_files({"template:t.j2": template}, "t.j2", n=3, name="x") == "0 1 2 X 3"


def test_the_report_template_is_sandboxed_too() -> None:
    with pytest.raises(TemplateError) as err:
        render(Page("t", True, []), "<h1>{{ page.title }}</h1>\n{{ page.__class__.__init__.__globals__ }}")
    assert "templates/report/report.html.j2:2" in str(err.value)


def test_init_refuses_a_checked_out_template_that_runs_code(project: ProjectDir) -> None:
    project.write("templates/project.toml.j2", '[project]\nname = "{{ name }}"\n' + ESCAPES["lipsum"] + "\n")
    res = project.cli("init")
    assert res.code == 2 and "internal error" not in res.err and "Traceback" not in res.err
    assert "templates/project.toml.j2:3: 'lipsum' is undefined" in res.err
    assert not (project.root / "MARKER").exists() and not (project.root / "manifests" / "project.toml").exists()
