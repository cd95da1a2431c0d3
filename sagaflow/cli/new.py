"""``sagaflow new saga``: scaffold a saga package, its pure rules and its tests."""

from __future__ import annotations

from pathlib import Path

import click

from ..errors import ScaffoldError
from ..scaffold import DEFAULT_STEPS, create
from .problems import CliError

__all__ = ["new"]


@click.group()
def new() -> None:
    """Scaffold new code: `sagaflow new saga NAME`."""


@new.command("saga")
@click.argument("name")
@click.option(
    "--steps",
    default=",".join(DEFAULT_STEPS),
    show_default=True,
    help="Comma-separated step names, in order; each gets a compensation undo_<step>.",
)
@click.option(
    "--pivot",
    default=None,
    help="The step that is the point of no return (no compensation); the steps after "
    "it become retriable.",
)
@click.option(
    "--path",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("."),
    show_default=True,
    help="The folder to write into (usually your project root).",
)
def new_saga(name: str, steps: str, pivot: str | None, path: Path) -> None:
    """Write a saga package NAME (saga.py, rules.py) and tests/test_<name>.py.

    NAME is the saga class or package name: OnboardClientSaga, OnboardClient and
    onboard_client all make the package onboard_client with class OnboardClientSaga.
    The business rules go in rules.py, which never imports sagaflow. The result
    passes `sagaflow check` and its tests pass as generated. Existing files are never
    overwritten.
    """
    try:
        made = create(name, steps, path, pivot)
    except ScaffoldError as exc:
        raise CliError(str(exc)) from None
    for file in made.files:
        click.echo(f"wrote {file}")
    click.echo(
        f"next: sagaflow check {made.module}   (from {path}), then fill in the TODOs"
    )
