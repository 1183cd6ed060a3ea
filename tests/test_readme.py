"""CI does what the README tells a new user: its install command, then its test command, verbatim."""

from __future__ import annotations

import re

from .helpers import REPO


def test_ci_runs_the_readme_commands() -> None:
    readme = (REPO / "README.md").read_text()
    setup = readme.split("## Set-up", 1)[1].split("\n## ", 1)[0]
    commands = re.findall(r"```sh\n(.+?)\n```", setup, re.S)
    assert len(commands) == 2, commands
    ci = [line.strip() for line in (REPO / ".ci" / "run").read_text().splitlines()
          if line.strip() and not line.lstrip().startswith(("#", "set ", "cd ", "export ", "start=", "phase=", "trap ",
                                                                 "echo "))]
    assert ci == commands
