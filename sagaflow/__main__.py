"""``python -m sagaflow``: the ``sagaflow`` command."""

from .cli import main

main(prog_name="sagaflow")
