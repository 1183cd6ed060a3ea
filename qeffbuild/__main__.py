"""`python -m qeffbuild` runs the CLI."""

from .cli import main

main(prog_name="qeffbuild")
