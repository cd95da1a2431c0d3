"""The ``sagaflow`` command (also ``python -m sagaflow``): draw, check and scaffold sagas.

::

    sagaflow diagram MODULE[:CLASS] [--format svg|png|dot|mermaid] [--output PATH]
    sagaflow diagram PACKAGE --all --output DIR [--prune]
    sagaflow check MODULE[:CLASS]
    sagaflow new saga NAME [--steps a,b,c] [--pivot STEP] [--path DIR]

A target is a dotted module path importable from the current directory (as under
``python -m``), or a path to a ``.py`` file or a package folder, with ``:Class``
to name one saga. Problems the user can fix print one line and exit with status 2;
an invalid saga definition exits with status 1 and lists every problem.

Other modules add commands in two ways: ``main.add_command(cmd)`` once they are
imported, or without importing anything until the command is used,
``main.add_lazy_command("sagas", "sagaflow.operator:sagas")`` (or an entry in
:data:`LAZY_COMMANDS`), which keeps ``sagaflow --help`` fast and keeps an optional
dependency of one command (a database driver) from breaking the others.
"""

from __future__ import annotations

import importlib
import os
import pkgutil
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import click

from . import __version__
from .definition import SagaSpec, StepKind, is_saga, spec_of
from .diagram import FORMATS, SUFFIXES, file_stem, format_for, render, write_all
from .errors import GraphvizNotFound, SagaDefinitionError, ScaffoldError
from .machine import TERMINAL_STATES
from .policy import Retry
from .scaffold import DEFAULT_STEPS, create

__all__ = [
    "LAZY_COMMANDS",
    "CliError",
    "DefinitionProblems",
    "SagaflowGroup",
    "find_sagas",
    "import_target",
    "load_saga",
    "main",
]

#: Commands defined in other modules, imported only when used: name -> "module:attribute".
LAZY_COMMANDS: dict[str, str] = {}


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
        super().__init__(_describe_problems(self.errors))


def _describe_problems(errors: Sequence[tuple[str, SagaDefinitionError]]) -> str:
    lines = []
    for module, error in errors:
        lines.append(f"{module}: {str(error).splitlines()[0]}")
        lines.extend(f"  - {p}" for p in error.problems)
    return "\n".join(lines)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


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

    def _lazy(self) -> dict[str, str]:
        return {**LAZY_COMMANDS, **self.lazy}

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self._lazy()})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        found = super().get_command(ctx, cmd_name)
        if found is not None or cmd_name not in self._lazy():
            return found
        module_name, _, attr = self._lazy()[cmd_name].partition(":")
        try:
            command = getattr(importlib.import_module(module_name), attr)
        except Exception as exc:
            raise CliError(
                f"the {cmd_name!r} command could not be loaded from {module_name}: "
                f"{_one_line(exc)}"
            ) from None
        if not isinstance(command, click.Command):
            raise CliError(f"{self._lazy()[cmd_name]} is not a click command")
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
                f"{_one_line(exc)} (set SAGAFLOW_DEBUG=1 to see the traceback)"
            ) from None


@click.group(
    cls=SagaflowGroup,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.version_option(__version__, "--version", prog_name="sagaflow")
def main() -> None:
    """sagaflow: declarative sagas for Python.

    Draw a saga's state machine, check saga definitions, scaffold new sagas. TARGET
    arguments are a dotted module path importable from the current directory
    (examples.quickstart), or a path to a .py file or package folder, optionally
    followed by :Class.
    """


# --------------------------------------------------------------------------- targets

def _ensure_cwd_on_path() -> None:
    # The console script, unlike `python -m`, does not put the current directory on
    # sys.path; a project's own sagas must import the same way under both.
    cwd = os.getcwd()
    if "" not in sys.path and cwd not in sys.path:
        sys.path.insert(0, cwd)


def _split(target: str) -> tuple[str, str | None]:
    where, sep, attr = target.rpartition(":")
    if sep and where and re.fullmatch(r"[A-Za-z_][\w.]*", attr):
        return where, attr
    return target, None


def _module_of_path(path: Path) -> str:
    """The dotted module name of a file or package folder; puts its root on sys.path."""
    path = path.resolve()
    if path.is_dir():
        if not (path / "__init__.py").is_file():
            raise CliError(f"{path} is a folder without __init__.py: give a .py file or a package")
        parts, folder = [path.name], path.parent
    elif path.is_file() and path.suffix == ".py":
        parts = [] if path.stem == "__init__" else [path.stem]
        folder = path.parent
    else:
        raise CliError(f"no such Python file or package: {path}")
    while (folder / "__init__.py").is_file():
        parts.insert(0, folder.name)
        folder = folder.parent
    root = str(folder)
    if root not in sys.path:
        sys.path.insert(0, root)
    return ".".join(parts)


def _module_name(where: str) -> str:
    looks_like_path = where.endswith(".py") or "/" in where or os.sep in where
    if looks_like_path or (Path(where).is_dir() and (Path(where) / "__init__.py").is_file()):
        return _module_of_path(Path(where))
    if not re.fullmatch(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*", where):
        raise CliError(
            f"{where!r} is not a module path: give a dotted module (examples.quickstart), "
            "a .py file, or either followed by :Class"
        )
    return where


def import_target(name: str) -> ModuleType:
    """Import module ``name`` for the CLI: a user error becomes one line, exit status 2.

    A :class:`~sagaflow.SagaDefinitionError` raised by the import propagates: callers
    report it with every problem (exit status 1).
    """
    _ensure_cwd_on_path()
    try:
        return importlib.import_module(name)
    except SagaDefinitionError:
        raise
    except ModuleNotFoundError as exc:
        missing = exc.name or ""
        if missing and (name == missing or name.startswith(missing + ".")):
            raise CliError(
                f"no module named {missing!r} (looked in the current directory and sys.path): "
                "give a dotted module path such as examples.quickstart, or a path to a .py file"
            ) from None
        raise CliError(f"importing {name!r} failed: {_one_line(exc)}") from None
    except (Exception, SystemExit) as exc:
        raise CliError(f"importing {name!r} failed: {_one_line(exc)}") from None


def _sagas_of(module: ModuleType) -> list[type]:
    """Saga classes defined in ``module`` (not imported into it), in definition order."""
    return [
        value
        for value in vars(module).values()
        if isinstance(value, type) and value.__module__ == module.__name__ and is_saga(value)
    ]


def _submodules(package: ModuleType) -> list[str]:
    names: list[str] = []
    for info in sorted(
        pkgutil.iter_modules(package.__path__, package.__name__ + "."), key=lambda i: i.name
    ):
        last = info.name.rpartition(".")[2]
        if last in ("__main__", "conftest"):  # __main__ runs a program when imported
            continue
        names.append(info.name)
    return names


def find_sagas(
    name: str, *, walk: bool = True
) -> tuple[list[type], list[tuple[str, SagaDefinitionError]]]:
    """The saga classes of module ``name`` and, for a package, of every module in it.

    Returns the sagas (module by module, each in definition order) and the definition
    errors met while importing, so that one run reports every invalid saga.
    """
    found: list[type] = []
    errors: list[tuple[str, SagaDefinitionError]] = []
    pending = [name]
    while pending:
        current = pending.pop(0)
        try:
            module = import_target(current)
        except SagaDefinitionError as exc:
            errors.append((current, exc))
            continue
        found.extend(_sagas_of(module))
        if walk and hasattr(module, "__path__"):
            pending[0:0] = _submodules(module)
    return found, errors


def _names(sagas: Sequence[type]) -> str:
    return ", ".join(f"{c.__module__}:{c.__qualname__}" for c in sagas) or "none"


def load_saga(target: str) -> type:
    """The one saga class ``MODULE:CLASS`` names (or ``MODULE``, when it defines exactly one)."""
    where, attr = _split(target)
    module_name = _module_name(where)
    try:
        module = import_target(module_name)
    except SagaDefinitionError as exc:
        raise DefinitionProblems([(module_name, exc)]) from None
    if attr is None:
        sagas, errors = find_sagas(module_name)  # a package: the sagas of its modules
        if errors:
            raise DefinitionProblems(errors)
        if len(sagas) == 1:
            return sagas[0]
        if not sagas:
            raise CliError(
                f"module {module_name!r} defines no saga class: decorate one with "
                "@sagaflow.saga, or name it as MODULE:CLASS"
            )
        raise CliError(
            f"module {module_name!r} defines {len(sagas)} sagas ({_names(sagas)}): name one "
            "as MODULE:CLASS, or draw them all with --all --output DIR"
        )
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise CliError(
                f"module {module_name!r} has no {attr!r}; its sagas: {_names(_sagas_of(module))}"
            )
        obj = getattr(obj, part)
    if not is_saga(obj) or not isinstance(obj, type):
        raise CliError(
            f"{module_name}:{attr} is not a saga class (decorate it with @sagaflow.saga); "
            f"sagas in {module_name!r}: {_names(_sagas_of(module))}"
        )
    return obj


def _targets(target: str) -> tuple[list[type], list[tuple[str, SagaDefinitionError]]]:
    """Sagas for ``MODULE:CLASS`` (one) or ``MODULE`` (all of it, packages walked)."""
    where, attr = _split(target)
    if attr is not None:
        return [load_saga(target)], []
    sagas, errors = find_sagas(_module_name(where))
    if not sagas and not errors:
        raise CliError(
            f"no saga classes in {where!r}: decorate a class with @sagaflow.saga"
        )
    return sagas, errors


# --------------------------------------------------------------------------- diagram

@main.command()
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
      sagaflow diagram examples.quickstart:TransferSaga -f mermaid
      sagaflow diagram examples --all --prune --output diagrams
    """
    if all_:
        _diagram_all(target, fmt, output, prune)
        return
    if prune:
        raise CliError("--prune only goes with --all")
    cls = load_saga(target)
    spec = spec_of(cls)
    path = output
    if path is not None and (path.is_dir() or str(path).endswith(("/", os.sep))):
        path = path / (file_stem(spec.name) + SUFFIXES[fmt or "svg"])
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
    if _split(target)[1] is not None:
        raise CliError(
            "--all draws every saga of a module or package: give MODULE, not MODULE:CLASS"
        )
    if output is None:
        raise CliError("--all writes one file per saga and format: give --output DIR")
    if output.exists() and not output.is_dir():
        raise CliError(f"--output {output} is a file: --all needs a folder")
    sagas, errors = _targets(target)
    if errors:
        raise DefinitionProblems(errors)
    formats = [fmt] if fmt is not None else ["svg", "mermaid", "dot"]
    try:
        written = write_all(sagas, output, formats)
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


# --------------------------------------------------------------------------- check

def _seconds(value: float | None) -> str:
    return "none" if value is None else f"{value:g}s"


def _retry(policy: Retry) -> str:
    if policy.attempts == 1:
        return "no retry"
    text = f"{policy.attempts} attempts, {policy.backoff:g}s"
    if policy.multiplier != 1:
        text += f" x{policy.multiplier:g}"
    if policy.retry_on != (Exception,):
        text += " on " + "/".join(t.__name__ for t in policy.retry_on)
    return text


def _machine_problems(spec: SagaSpec) -> list[str]:
    """Graph checks of the generated machine: every state reachable and able to finish."""
    machine = spec.machine
    states = [str(s) for s in machine.states]
    out: dict[str, set[str]] = {s: set() for s in states}
    for _, event in machine.events.items():
        for source, transitions in event.transitions.items():
            for t in transitions:
                out[str(source)].add(str(t.dest))
    problems: list[str] = []

    def reach(start: str, edges: dict[str, set[str]]) -> set[str]:
        seen, todo = {start}, [start]
        while todo:
            for nxt in edges.get(todo.pop(), ()):
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        return seen

    reachable = reach(str(machine.initial), out)
    for s in states:
        if s not in reachable and s not in TERMINAL_STATES:
            problems.append(f"state {s!r} cannot be reached from {machine.initial!r}")
        elif s not in TERMINAL_STATES and not (reach(s, out) & TERMINAL_STATES):
            problems.append(f"state {s!r} cannot reach an end state")
    return problems


def _table(rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  " + "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
            for r in rows]


def _describe(cls: type) -> list[str]:
    spec = spec_of(cls)
    head = f"{cls.__module__}:{cls.__qualname__}"
    if spec.name != cls.__qualname__:
        head += f" (saga {spec.name!r})"
    n = len(spec.steps)
    lines = [
        f"{head}: {n} step{'s' if n != 1 else ''}, deadline {_seconds(spec.deadline)}, "
        f"compensation deadline {_seconds(spec.compensation_deadline)}, "
        f"fingerprint {spec.fingerprint}",
    ]
    rows = [["#", "step", "kind", "when", "timeout", "retry", "compensation"]]
    for s in spec.steps:
        if s.compensation_name is not None:
            comp = (
                f"{s.compensation_name} (timeout {_seconds(s.compensation_timeout)}, "
                f"{_retry(s.compensation_retry)})"
            )
        elif s.kind is StepKind.READONLY:
            comp = "- (readonly: nothing to undo)"
        elif s.kind is StepKind.PIVOT:
            comp = "- (pivot: point of no return)"
        else:
            comp = "- (retriable: never undone)"
        rows.append([
            str(s.index + 1),
            s.name + (" [async]" if s.is_async else ""),
            s.kind.value,
            s.guard_name or "-",
            _seconds(s.timeout),
            _retry(s.retry),
            comp,
        ])
    return lines + _table(rows)


@main.command()
@click.argument("target")
def check(target: str) -> None:
    """Validate the sagas of TARGET and list their steps.

    TARGET is MODULE:CLASS, a module, or a package (every module in it). For each
    saga: its steps with kind, guard, timeout, retry and compensation, and checks of
    its state machine. Exit status 0 when every saga is valid, 1 with every problem
    listed when one is not, 2 when TARGET cannot be loaded.
    """
    sagas, errors = _targets(target)
    problems = 0
    for cls in sagas:
        for line in _describe(cls):
            click.echo(line)
        found = _machine_problems(spec_of(cls))
        for p in found:
            click.echo(f"  problem: {p}")
        problems += len(found)
        click.echo("")
    if errors:
        click.echo(_describe_problems(errors))
        problems += sum(len(e.problems) for _, e in errors)
    n = len(sagas) + len(errors)
    noun = "saga" if n == 1 else "sagas"
    if problems:
        click.echo(f"{n} {noun} checked: {problems} problem{'s' if problems != 1 else ''}")
        raise SystemExit(1)
    click.echo(f"{n} {noun} checked: no problems")


# --------------------------------------------------------------------------- new

@main.group()
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


main.add_lazy_command("sagas", "sagaflow.cli_sagas:sagas")
main.add_lazy_command("recover", "sagaflow.cli_sagas:recover")
main.add_lazy_command("worker", "sagaflow.cli_worker:worker")


if __name__ == "__main__":  # pragma: no cover
    main(prog_name="sagaflow")
