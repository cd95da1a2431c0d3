"""How a type is named in stored JSON (``"module:QualName"``), and found again from its name.

A name must outlive the process that wrote it. A class defined in the script being run
(``python myscript.py``) has ``__module__ == "__main__"``, which means another module in
every other process: it is named by the module it can be imported as (``myscript``, from
``__main__.__file__`` against ``sys.path``; the spec's name under ``python -m``). A class
registered with a name (:meth:`TypeNames.register`) is stored under that name.
:meth:`TypeNames.name_of` refuses, with the fix, a type that could not be found again (a
class defined inside a function, a script that cannot be imported), so that the first save
fails rather than a later recovery.
"""

from __future__ import annotations

import importlib
import os
import sys
import threading
from pathlib import Path
from typing import Any

from ..errors import CodecError

__all__ = ["TypeNames", "import_path", "main_module_name", "type_path"]

_MAIN = "__main__"


def main_module_name() -> str | None:
    """The name the running ``__main__`` module can be imported by in another process:
    its spec's name when run with ``-m``, else its file's path relative to the first
    ``sys.path`` entry holding it; ``None`` for an interactive session or a file whose
    path is no module name."""
    main = sys.modules.get(_MAIN)
    if main is None:
        return None
    spec = getattr(main, "__spec__", None)
    name = getattr(spec, "name", None)
    if name and name != _MAIN:
        return str(name)
    file = getattr(main, "__file__", None)
    if not file:
        return None
    return _cached_module_for(str(file), tuple(sys.path))


_MODULE_FOR: dict[tuple[str, tuple[str, ...]], str | None] = {}


def _cached_module_for(file: str, path: tuple[str, ...]) -> str | None:
    key = (file, path)
    try:
        return _MODULE_FOR[key]
    except KeyError:
        found = _MODULE_FOR[key] = _module_for(file, path)
        return found


def _module_for(file: str, search: tuple[str, ...]) -> str | None:
    source = Path(file).resolve()
    if source.suffix != ".py":
        return None
    for entry in search:
        try:
            base = Path(entry or os.getcwd()).resolve()
            relative = source.relative_to(base)
        except (OSError, ValueError):
            continue
        parts = relative.with_suffix("").parts
        if parts and parts[-1] == "__init__":
            parts = parts[:-1]
        if parts and all(p.isidentifier() for p in parts):
            return ".".join(parts)
    return None


def type_path(t: type) -> str:
    """``"module:QualName"``: how a type is named in stored JSON. A class of the running
    script is named by the module the script can be imported as (``__main__`` if it has
    none: such a name is only good in this process)."""
    module = t.__module__
    if module == _MAIN:
        module = main_module_name() or _MAIN
    return f"{module}:{t.__qualname__}"


def import_path(path: str) -> Any:
    """The object a ``"module:QualName"`` path names; a clear error if it is gone. The
    running script's own module name finds its classes in ``__main__`` (importing the
    script a second time would run it again)."""
    module, sep, qualname = path.partition(":")
    if not sep or not module or not qualname:
        raise CodecError(f"{path!r} is not a 'module:QualName' type path")
    if "<locals>" in qualname:
        raise CodecError(
            f"{path!r} is defined inside a function, so a new process cannot import it: "
            "define it at module level (or register it with this store or codec first)"
        )
    try:
        if module not in sys.modules and module == main_module_name():
            obj: Any = sys.modules[_MAIN]
        else:
            obj = importlib.import_module(module)
        for part in qualname.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as exc:
        raise CodecError(f"cannot import {path!r}: {exc}") from exc
    return obj


class TypeNames:
    """The names of the types a codec tags values with, both ways, cached."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._names: dict[type, str] = {}
        self._types: dict[str, type] = {}
        #: ``"__main__:QualName"`` (how 0.1 stored a script's classes) -> registered type
        self._main_aliases: dict[str, type | None] = {}

    def register(self, t: type, name: str | None = None) -> str:
        """Store ``t`` under ``name`` (default: its :func:`type_path`) from now on, and find
        it by that name in this process whatever its module. Returns the name."""
        if name is None:
            name = type_path(t)
        elif not name or ":" not in name:
            raise ValueError(f"a type's name is 'module:QualName', got {name!r}")
        alias = f"{_MAIN}:{t.__qualname__}"
        with self._lock:
            self._names[t] = name
            self._types[name] = t
            # Records written by 0.1 from a script name the class "__main__:QualName":
            # a registered class of that qualified name reads them (unless two do).
            known = self._main_aliases.get(alias, t)
            self._main_aliases[alias] = t if known is t else None
        return name

    def name_of(self, t: type) -> str:
        """The name ``t``'s values are tagged with; a :class:`CodecError` with the fix if
        another process could not find ``t`` by it."""
        name = self._names.get(t)
        if name is not None:
            return name
        name = type_path(t)
        problem = None
        if "<locals>" in t.__qualname__:
            problem = "it is defined inside a function"
        elif name.startswith(_MAIN + ":"):
            problem = "it is defined in a __main__ module that no other process can import"
        if problem is not None:
            raise CodecError(
                f"{t.__name__} cannot be stored by name: {problem}, so a later process "
                f"(a recovery, an operator's command) could not find it again. To fix: "
                f"define it at module level in an importable module, or name it with "
                f"sagaflow.codec.register({t.__name__}, name='yourapp.module:{t.__name__}') "
                "in every process that runs or reads the saga"
            )
        with self._lock:
            self._names[t] = name
            self._types.setdefault(name, t)
        return name

    def remember(self, name: str, t: type) -> None:
        """Find ``t`` by ``name`` in this process (a name that may be good only here)."""
        if name not in self._types:
            with self._lock:
                self._types.setdefault(name, t)

    def type_of(self, name: str) -> type:
        """The type stored as ``name``: a registered or already seen one, else imported;
        :class:`CodecError` if it cannot be found in this process."""
        t = self._types.get(name)
        if t is not None:
            return t
        found = self._main_aliases.get(name) if name.startswith(_MAIN + ":") else None
        if found is None:
            found = import_path(name)
            if not isinstance(found, type):
                raise CodecError(f"{name!r} names a {type(found).__name__}, not a type")
        with self._lock:
            self._types[name] = found
        return found
