"""The one saga loader every command uses: a target names modules, the loader finds sagas.

A target is a dotted module importable from the current directory (as under
``python -m``: ``examples.quickstart``), or a path to a ``.py`` file or a package
folder, optionally followed by ``:Class``. A module target means every saga class it
defines and, for a package, every saga of every module in it. ``:Class`` names one
saga: an attribute of the module, or else (in a package) the one saga of that class
name or saga name anywhere in it, so ``examples.registration:RegistrationSaga`` finds
the class that ``examples.registration.saga`` defines.

Problems the user can fix raise :class:`~sagaflow.cli.problems.CliError`; saga
definitions that ``@saga`` rejects are collected, so that one run reports them all.
"""

from __future__ import annotations

import importlib
import os
import pkgutil
import re
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from types import ModuleType

import attrs

from ..errors import SagaDefinitionError
from ..spec import is_saga, spec_of
from .problems import CliError, DefinitionProblems, one_line

__all__ = [
    "Loaded",
    "import_module",
    "load",
    "load_class",
    "load_imports",
    "saga_names",
    "split_target",
]

_MODULE_PATH = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")
_MISSING = object()


@attrs.frozen
class Loaded:
    """The saga classes a target names (module by module, each in definition order), and
    the definition errors met on the way (``(module, error)``)."""

    target: str
    sagas: tuple[type, ...]
    errors: tuple[tuple[str, SagaDefinitionError], ...] = ()

    def one(self) -> type:
        """The one saga the target names; every definition problem, or a one-line error
        saying how to name one, otherwise."""
        if self.errors:
            raise DefinitionProblems(self.errors)
        if len(self.sagas) != 1:
            raise CliError(
                f"{self.target!r} defines {len(self.sagas)} sagas ({saga_names(self.sagas)}): "
                "name one as MODULE:CLASS, or draw them all with --all --output DIR"
            )
        return self.sagas[0]


def load(target: str) -> Loaded:
    """The sagas ``target`` names (see the module's docstring)."""
    where, attr = split_target(target)
    name = _module_name(where)
    if attr is None:
        found = _walk(target, name)
        if not found.sagas and not found.errors:
            raise CliError(f"no saga classes in {where!r}: decorate a class with @sagaflow.saga")
        return found
    try:
        module = import_module(name)
    except SagaDefinitionError as exc:
        raise DefinitionProblems([(name, exc)]) from None
    obj: object = module
    for part in attr.split("."):
        obj = getattr(obj, part, _MISSING)
        if obj is _MISSING:
            break
    if obj is not _MISSING:
        if not (isinstance(obj, type) and is_saga(obj)):
            raise CliError(
                f"{name}:{attr} is not a saga class (decorate it with @sagaflow.saga); "
                f"sagas in {name!r}: {saga_names(_walk(target, name).sagas)}"
            )
        return Loaded(target, (obj,))
    # Not an attribute: in a package, the saga of that class (or saga) name in any module.
    found = _walk(target, name)
    matches = [c for c in found.sagas if attr in (c.__qualname__, spec_of(c).name)]
    if len(matches) == 1:
        return Loaded(target, (matches[0],))
    if matches:
        raise CliError(
            f"{len(matches)} sagas in {name!r} are called {attr!r} ({saga_names(matches)}): "
            "name the module that defines the one you mean"
        )
    if found.errors:  # it may be one of those that failed to define
        raise DefinitionProblems(found.errors)
    raise CliError(f"module {name!r} has no {attr!r}; its sagas: {saga_names(found.sagas)}")


def load_imports(targets: Iterable[str]) -> list[type]:
    """The saga classes of each ``--import`` target: the one ``MODULE:CLASS`` names, or
    those a module defines (for a package, every module in it) and those it imports."""
    classes: list[type] = []
    for target in targets:
        where, attr = split_target(target)
        if attr is not None:
            sagas = [load(target).one()]
        else:
            name = _module_name(where)
            found = _walk(target, name)
            if found.errors:
                raise DefinitionProblems(found.errors)
            imported = vars(sys.modules[name]).values()
            sagas = [*found.sagas, *(v for v in imported if isinstance(v, type) and is_saga(v))]
        if not sagas:
            raise CliError(
                f"--import {target}: no saga class in that module; give the module that "
                "defines (or imports) your @saga classes"
            )
        classes += [cls for cls in dict.fromkeys(sagas) if cls not in classes]
    return classes


def load_class(path: str) -> type | None:
    """The saga class at ``module:QualName`` (the path a store records with a saga), or
    ``None`` when it cannot be imported from here."""
    if split_target(path)[1] is None:
        return None
    try:
        return load(path).one()
    except (CliError, DefinitionProblems):
        return None


def saga_names(sagas: Sequence[type]) -> str:
    """``module:Class, ...`` for a message (``none`` when empty)."""
    return ", ".join(f"{c.__module__}:{c.__qualname__}" for c in sagas) or "none"


def split_target(target: str) -> tuple[str, str | None]:
    """``("module.or/path.py", "Class" or None)``."""
    where, sep, attr = target.rpartition(":")
    if sep and where and re.fullmatch(r"[A-Za-z_][\w.]*", attr):
        return where, attr
    return target, None


def import_module(name: str) -> ModuleType:
    """Import module ``name``: a user error becomes one line (exit status 2).

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
        raise CliError(f"importing {name!r} failed: {one_line(exc)}") from None
    except (Exception, SystemExit) as exc:
        raise CliError(f"importing {name!r} failed: {one_line(exc)}") from None


def _walk(target: str, name: str) -> Loaded:
    """The sagas module ``name`` defines and, for a package, those of every module in it."""
    found: list[type] = []
    errors: list[tuple[str, SagaDefinitionError]] = []
    pending = [name]
    while pending:
        current = pending.pop(0)
        try:
            module = import_module(current)
        except SagaDefinitionError as exc:
            errors.append((current, exc))
            continue
        found += [
            value
            for value in vars(module).values()
            if isinstance(value, type) and value.__module__ == module.__name__ and is_saga(value)
        ]
        if hasattr(module, "__path__"):
            pending[0:0] = _submodules(module)
    return Loaded(target, tuple(found), tuple(errors))


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


def _ensure_cwd_on_path() -> None:
    # The console script, unlike `python -m`, does not put the current directory on
    # sys.path; a project's own sagas must import the same way under both.
    cwd = os.getcwd()
    if "" not in sys.path and cwd not in sys.path:
        sys.path.insert(0, cwd)


def _module_name(where: str) -> str:
    looks_like_path = where.endswith(".py") or "/" in where or os.sep in where
    if looks_like_path or (Path(where).is_dir() and (Path(where) / "__init__.py").is_file()):
        return _module_of_path(Path(where))
    if not _MODULE_PATH.fullmatch(where):
        raise CliError(
            f"{where!r} is not a module path: give a dotted module (examples.quickstart), "
            "a .py file, or either followed by :Class"
        )
    return where


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
