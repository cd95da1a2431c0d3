"""What a ``sagaflow`` command reports instead of a traceback: one line, or every problem.

:class:`CliError` is a problem the user can fix (no such module, no such saga, a store
that is not there): one line on stderr, exit status 2. :class:`DefinitionProblems` is
saga definitions that ``@saga`` rejected: every problem of each, exit status 1.
"""

from __future__ import annotations

from collections.abc import Sequence

import click

from ..errors import SagaDefinitionError

__all__ = ["CliError", "DefinitionProblems", "describe_problems", "one_line"]


class CliError(click.ClickException):
    """A problem the user can fix: one line on stderr, exit status 2."""

    exit_code = 2

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(message.split()))


class DefinitionProblems(click.ClickException):
    """Saga definitions that ``@saga`` rejected: every problem listed, exit status 1."""

    exit_code = 1

    def __init__(self, errors: Sequence[tuple[str, SagaDefinitionError]]) -> None:
        self.errors = tuple(errors)
        super().__init__(describe_problems(self.errors))


def describe_problems(errors: Sequence[tuple[str, SagaDefinitionError]]) -> str:
    """Each module's rejected saga and its problems, one per line."""
    lines = []
    for module, error in errors:
        lines.append(f"{module}: {str(error).splitlines()[0]}")
        lines.extend(f"  - {p}" for p in error.problems)
    return "\n".join(lines)


def one_line(exc: BaseException) -> str:
    """An exception as ``Type: message`` on one line."""
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
