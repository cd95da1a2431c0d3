"""The ``sagaflow`` command's group: commands loaded on use, and no tracebacks.

Other modules add commands in two ways: ``main.add_command(cmd)``, or without importing
anything until the command is used, ``main.add_lazy_command("name", "module:attribute")``,
which keeps an optional dependency of one command (a database driver) from breaking
the others.
"""

from __future__ import annotations

import importlib
import os
from typing import Any

import click

from ..errors import GraphvizNotFound
from .problems import CliError, one_line

__all__ = ["SagaflowGroup"]


class SagaflowGroup(click.Group):
    """A click group that loads lazy commands on use and never shows a traceback.

    An unexpected exception becomes one line and exit status 2; set ``SAGAFLOW_DEBUG=1``
    to see the traceback instead.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lazy: dict[str, str] = {}

    def add_lazy_command(self, name: str, import_path: str) -> None:
        """Add the command at ``"module:attribute"`` as ``name``, imported when used."""
        self.lazy[name] = import_path

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.lazy})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        found = super().get_command(ctx, cmd_name)
        if found is not None or cmd_name not in self.lazy:
            return found
        module_name, _, attr = self.lazy[cmd_name].partition(":")
        try:
            command = getattr(importlib.import_module(module_name), attr)
        except Exception as exc:
            raise CliError(
                f"the {cmd_name!r} command could not be loaded from {module_name}: "
                f"{one_line(exc)}"
            ) from None
        if not isinstance(command, click.Command):
            raise CliError(f"{self.lazy[cmd_name]} is not a click command")
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # Like click's, except that a lazy command which fails to load is listed as
        # unavailable instead of breaking --help for every other command.
        found: list[tuple[str, click.Command | str]] = []
        for name in self.list_commands(ctx):
            try:
                command = self.get_command(ctx, name)
            except click.ClickException as exc:
                found.append((name, f"(unavailable: {exc.message})"))
                continue
            if command is not None and not command.hidden:
                found.append((name, command))
        if not found:
            return
        limit = formatter.width - 6 - max(len(name) for name, _ in found)
        rows = [
            (name, c if isinstance(c, str) else c.get_short_help_str(limit)) for name, c in found
        ]
        with formatter.section("Commands"):
            formatter.write_dl(rows)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except GraphvizNotFound as exc:
            raise CliError(str(exc)) from None
        except Exception as exc:
            if os.environ.get("SAGAFLOW_DEBUG"):
                raise
            raise CliError(
                f"{one_line(exc)} (set SAGAFLOW_DEBUG=1 to see the traceback)"
            ) from None
