"""In-memory participants whose state can live in a file, so that it outlives a process.

``sagaflow verify --crash`` (:func:`sagaflow.testing.check_crash_points`) kills the
saga's process at each crash point and recovers it in a fresh one; an in-memory
participant would forget there what the killed process did, and the check would
compare nothing. An example's ``example_sagas()`` setup therefore points its services
at a :class:`StateFile`: each operation (a method marked :func:`filed`) then loads the
services' state from the file first and writes it back after, all under one file lock.
The demo and the other tests keep their services in memory (no file: each service's
``reset()`` drops it).
"""

from __future__ import annotations

import fcntl
import functools
import os
import pickle
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import attrs

from ._support import case_folder

__all__ = ["Ids", "StateFile", "filed"]

F = TypeVar("F", bound=Callable[..., Any])

#: Attributes that are the process's, not the participant's state: never filed.
TRANSIENT = frozenset({"faults", "_lock", "state_file"})


class Ids:
    """A counter of ids that pickles (``itertools.count`` pickling is deprecated)."""

    def __init__(self, start: int) -> None:
        self.next = start

    def __iter__(self) -> Ids:
        return self

    def __next__(self) -> int:
        n = self.next
        self.next += 1
        return n


class StateFile:
    """The state of ``services`` (name -> service) in one file, read and written whole.

    :meth:`use` starts filing, in a temporary folder of the process that calls it first
    (its forked children share it; it is removed when that process exits); each
    service's operations marked :func:`filed` then work on the filed state. :meth:`held`
    is for a reader too (a ``snapshot``): the state as the last operation, in any
    process, left it.
    """

    def __init__(self, name: str, **services: Any) -> None:
        self.name = name
        self.services: dict[str, Any] = services
        self.path: Path | None = None
        self._depth = 0

    def use(self) -> None:
        """File the services' present state (call right after resetting them)."""
        if self.path is None or not self.path.parent.is_dir():
            self.path = case_folder(self.name) / "state.pickle"
        for service in self.services.values():
            service.state_file = self
        with self._locked():
            self._save()

    @contextmanager
    def held(self) -> Iterator[None]:
        """The services as last filed, for the span of the ``with`` (one operation's
        load, run and save; nested operations share the outer one's)."""
        if self._depth:
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
            return
        with self._locked():
            self._load()
            self._depth = 1
            try:
                yield
            finally:
                self._depth = 0
                self._save()

    @contextmanager
    def _locked(self) -> Iterator[None]:
        assert self.path is not None
        with open(self.path.with_suffix(".lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _load(self) -> None:
        assert self.path is not None
        state = pickle.loads(self.path.read_bytes())
        for name, service in self.services.items():
            for field, value in state[name].items():
                setattr(service, field, value)

    def _save(self) -> None:
        assert self.path is not None
        state = {name: _state(service) for name, service in self.services.items()}
        # written aside, then renamed: a process killed mid-write leaves the last state
        partial = self.path.with_suffix(f".{os.getpid()}")
        partial.write_bytes(pickle.dumps(state))
        partial.replace(self.path)


def _state(service: Any) -> dict[str, Any]:
    """A service's own attributes (an attrs class's fields, else its ``__dict__``), but
    not those its class names in ``UNFILED`` (a process's own settings and gauges)."""
    names = [f.name for f in attrs.fields(type(service))] if attrs.has(type(service)) else (
        list(vars(service)))
    skip = TRANSIENT | getattr(service, "UNFILED", frozenset())
    return {n: getattr(service, n) for n in names if n not in skip}


def filed(method: F) -> F:
    """Run a participant's operation on its filed state when it has a file (else as is)."""

    @functools.wraps(method)
    def call(self: Any, *args: Any, **kwargs: Any) -> Any:
        file: StateFile | None = getattr(self, "state_file", None)
        if file is None:
            return method(self, *args, **kwargs)
        with file.held():
            return method(self, *args, **kwargs)

    return call  # type: ignore[return-value]
