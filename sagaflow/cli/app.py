"""The ``sagaflow`` command (also ``python -m sagaflow``): one group, every command.

::

    sagaflow diagram MODULE[:CLASS] [--format svg|png|dot|mermaid] [--output PATH]
    sagaflow diagram PACKAGE --all --output DIR [--prune]
    sagaflow check MODULE[:CLASS]
    sagaflow verify MODULE[:CLASS] [--plans N] [--crash] [--diagrams DIR]  (quality gates)
    sagaflow new saga NAME [--steps a,b,c] [--pivot STEP] [--path DIR]
    sagaflow sagas list|show|retry|resolve|cancel ...   (a store's sagas)
    sagaflow recover
    sagaflow worker                                      (SQLite: one per file; PostgreSQL)

Every command that names sagas goes through the one loader (:mod:`sagaflow.cli.loader`).
Problems the user can fix print one line and exit with status 2; an invalid saga
definition exits with status 1 and lists every problem.
"""

from __future__ import annotations

import click

from .. import __version__
from .check import check
from .diagram import diagram
from .group import SagaflowGroup
from .new import new
from .recover import recover
from .sagas import sagas

__all__ = ["main"]


@click.group(
    cls=SagaflowGroup,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.version_option(__version__, "--version", prog_name="sagaflow")
def main() -> None:
    """sagaflow: declarative sagas for Python.

    Draw a saga's state machine, check saga definitions, scaffold new sagas, look at
    stored sagas and act on them, run workers and outbox relays. TARGET arguments are a
    dotted module path importable from the current directory (examples.quickstart), or a path to a
    .py file or package folder, optionally followed by :Class.
    """


for command in (diagram, check, new, sagas, recover):
    main.add_command(command)
main.add_lazy_command("worker", "sagaflow.cli.worker:worker")
main.add_lazy_command("relay", "sagaflow.cli.relay:relay")
main.add_lazy_command("ui", "sagaflow.cli.ui:ui")
main.add_lazy_command("verify", "sagaflow.cli.verify:verify")
