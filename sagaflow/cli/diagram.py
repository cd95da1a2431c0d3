"""``sagaflow diagram``: draw one saga's state machine, or every saga of a package."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from ..diagram import FORMATS, SUFFIXES, file_stem, format_for, render, write_all
from ..spec import spec_of
from .loader import load, split_target
from .problems import CliError, DefinitionProblems

__all__ = ["diagram"]


@click.command()
@click.argument("target")
@click.option(
    "-f",
    "--format",
    "fmt",
    type=click.Choice(FORMATS),
    default=None,
    help="Output format. Default: from --output's suffix, else svg; with --all: svg, "
    "mermaid and dot.",
)
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path),
    default=None,
    help="File to write (or a folder: <saga name>.<suffix> in it). Default: stdout. "
    "With --all: the folder to write into.",
)
@click.option(
    "--all",
    "all_",
    is_flag=True,
    help="Draw every saga defined in the module or package TARGET into the folder --output.",
)
@click.option(
    "--prune",
    is_flag=True,
    help="With --all: delete diagram files in --output that belong to no saga any more.",
)
def diagram(target: str, fmt: str | None, output: Path | None, all_: bool, prune: bool) -> None:
    """Draw the state machine of the saga TARGET (MODULE:CLASS).

    The diagram is the class's own state machine: the forward chain, the reverse
    compensation chain, the terminal states, conditional steps with their guard, the
    pivot and retriable steps marked. DOT and Mermaid are text and need nothing; SVG
    and PNG need Graphviz (pip install 'sagaflow[render]', or a `dot` on PATH).

    \b
    Examples:
      sagaflow diagram examples.quickstart:TransferSaga -o transfer.svg
      sagaflow diagram examples.registration:RegistrationSaga -f mermaid
      sagaflow diagram examples --all --prune --output diagrams
    """
    if all_:
        _diagram_all(target, fmt, output, prune)
        return
    if prune:
        raise CliError("--prune only goes with --all")
    cls = load(target).one()
    path = output
    if path is not None and (path.is_dir() or str(path).endswith(("/", os.sep))):
        path = path / (file_stem(spec_of(cls).name) + SUFFIXES[fmt or "svg"])
    if fmt is None:
        fmt = format_for(path) if path is not None and path.suffix else "svg"
    data = render(cls, fmt)
    blob = data.encode("utf-8") if isinstance(data, str) else data
    if path is None:
        if fmt == "png" and sys.stdout.isatty():
            raise CliError("PNG is binary: give --output FILE.png, or redirect stdout to a file")
        click.echo(blob, nl=False)  # bytes go to the binary stream underneath
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(blob)
    click.echo(f"wrote {path}")


def _diagram_all(target: str, fmt: str | None, output: Path | None, prune: bool) -> None:
    if split_target(target)[1] is not None:
        raise CliError(
            "--all draws every saga of a module or package: give MODULE, not MODULE:CLASS"
        )
    if output is None:
        raise CliError("--all writes one file per saga and format: give --output DIR")
    if output.exists() and not output.is_dir():
        raise CliError(f"--output {output} is a file: --all needs a folder")
    found = load(target)
    if found.errors:
        raise DefinitionProblems(found.errors)
    formats = [fmt] if fmt is not None else ["svg", "mermaid", "dot"]
    try:
        written = write_all(found.sagas, output, formats)
    except ValueError as exc:  # two sagas with one name
        raise CliError(str(exc)) from None
    for path in written:
        click.echo(f"wrote {path}")
    if prune:
        keep = set(written)
        suffixes = {SUFFIXES[f] for f in FORMATS}
        for path in sorted(output.iterdir()):
            if path.is_file() and path.suffix in suffixes and path not in keep:
                path.unlink()
                click.echo(f"removed {path}")
