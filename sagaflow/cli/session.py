"""A store and the saga classes one operator command knows: ``--store URL --import MODULE``.

Every operator command reads a durable store: ``--store URL`` (``sqlite:///sagas.db``),
or the ``SAGAFLOW_STORE`` environment variable. A saga's class comes from ``--import
MODULE`` (the loader's targets), or else from the import path the store recorded with
the saga (``module:QualName``), when that is importable from the current directory.
"""

from __future__ import annotations

import asyncio
import urllib.parse
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import click

from ..errors import ConcurrentModification, SagaflowError, UnknownSaga
from ..events import Listener
from ..orchestrator import Orchestrator
from ..records import SagaRecord, SagaResult, SagaStatus
from ..spec import SagaSpec, is_saga, spec_of
from ..stores import Store, Stored, open_store
from .loader import load_class, load_imports
from .problems import CliError

__all__ = ["ACTIVE", "STORE_ENV", "Session", "store_options"]

STORE_ENV = "SAGAFLOW_STORE"
#: The statuses of a saga that has not finished (``--status active``).
ACTIVE = tuple(status for status in SagaStatus if not status.is_terminal)


def store_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """The ``--store URL`` and ``--import MODULE`` options, as ``url`` and ``modules``."""
    fn = click.option(
        "--import", "modules", multiple=True, metavar="MODULE",
        help="Import MODULE (dotted path, file or package: all its modules; or "
        "MODULE:CLASS) and use the saga classes in it. Repeatable. Default: import each "
        "saga's class from the path the store recorded.",
    )(fn)
    return click.option(
        "--store", "url", envvar=STORE_ENV, metavar="URL",
        help=f"The store, e.g. sqlite:///sagas.db (default: ${STORE_ENV}).",
    )(fn)


class Session:
    """A store, and the saga classes a command knows, for one command.

    ``readonly``: the command only reads (list, show): the store is opened so that
    nothing is ever written to it, not even sagaflow's tables.
    """

    def __init__(self, url: str | None, modules: Sequence[str], *, readonly: bool) -> None:
        self.url = url
        classes = load_imports(modules)
        self.store = _open(url, readonly=readonly)
        self.specs: dict[str, SagaSpec] = {spec_of(c).name: spec_of(c) for c in classes}

    def close(self) -> None:
        close = getattr(self.store, "close", None)
        if close is not None:
            close()

    def __enter__(self) -> Session:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def raw(self, saga_id: str) -> Stored:
        """The saga as stored, or a one-line error naming the command that lists ids."""
        stored = self.store.load_raw(saga_id)
        if stored is None:
            raise CliError(
                f"no saga {saga_id!r} in {self.url}: `sagaflow sagas list` shows the ids"
            )
        return stored

    def learn(self, stored: Stored) -> SagaSpec | None:
        """The spec for ``stored``'s saga name: from ``--import``, else imported from the
        class path the store recorded; ``None`` if it cannot be found."""
        spec = self.specs.get(stored.saga_name)
        if spec is not None:
            return spec
        data_type = getattr(stored, "data_type", None)
        cls = load_class(data_type) if isinstance(data_type, str) else None
        if cls is None or not is_saga(cls) or spec_of(cls).name != stored.saga_name:
            return None
        spec = self.specs[stored.saga_name] = spec_of(cls)
        return spec

    def record(self, saga_id: str) -> tuple[SagaRecord, SagaSpec | None]:
        """The decoded record of ``saga_id`` and its spec, or (the data left as stored
        JSON) ``None`` when the class is not at hand."""
        stored = self.raw(saga_id)
        spec = self.learn(stored)
        if spec is not None:
            try:
                return self.store.decode(stored, spec.cls), spec
            except UnknownSaga:
                pass
            except SagaflowError as exc:  # a damaged record: say which, and why
                raise CliError(str(exc)) from None
        try:
            decode: Callable[..., SagaRecord] = self.store.decode
            return decode(stored, raw_data=True), None
        except TypeError:  # a store that cannot decode without the class
            raise CliError(
                f"saga {saga_id!r} is a {stored.saga_name!r} saga whose class is unknown: "
                "pass --import MODULE with the module that defines it"
            ) from None
        except SagaflowError as exc:
            raise CliError(str(exc)) from None

    def orchestrator(self, listeners: Iterable[Listener] = ()) -> Orchestrator:
        """An orchestrator on this store that knows every class learnt so far."""
        return Orchestrator(
            self.store, listeners, sagas=[spec.cls for spec in self.specs.values()]
        )

    def act(
        self, verb: str, saga_id: str, note: str | None, listeners: Iterable[Listener] = ()
    ) -> SagaResult:
        """Run the operator verb ``verb`` (cancel, retry, resolve) on ``saga_id``; the
        action is recorded in the saga's history with ``note``."""
        stored = self.raw(saga_id)
        spec = self.learn(stored)
        if spec is None:
            where = getattr(stored, "data_type", None)
            hint = f" (recorded as {where}, not importable from here)" if where else ""
            raise CliError(
                f"cannot {verb} saga {saga_id!r}: its class, saga {stored.saga_name!r}, is "
                f"unknown{hint}: pass --import MODULE with the module that defines it"
            )
        orch = self.orchestrator(listeners)
        try:
            if spec.is_async:  # async steps run on an event loop: the async verbs
                action: Callable[[str, Any], Any] = getattr(orch, "a" + verb)
                result: SagaResult = asyncio.run(action(saga_id, note))
                return result
            method: Callable[[str, Any], SagaResult] = getattr(orch, verb)
            return method(saga_id, note)
        except ConcurrentModification as exc:
            raise CliError(
                f"{exc}: another process saved this saga meanwhile (is it still running "
                "there?); look again with `sagaflow sagas show`"
            ) from None
        except SagaflowError as exc:  # a verb that does not apply (OperatorError), ...
            raise CliError(str(exc)) from None
        finally:
            orch.close()


    def signal(
        self, target: str, name: str, payload: Any, *, signal_id: str | None = None,
        by_key: bool = False, saga_name: str | None = None,
        listeners: Iterable[Listener] = (),
    ) -> tuple[str, SagaResult]:
        """Send signal ``name`` with ``payload`` (its fields as a dict, or ``None``) to
        the saga ``target`` (its business key with ``by_key``); the saga's id and its
        snapshot after (a saga waiting for it goes on here, now). Refused with a
        one-line error, storing nothing, for a finished saga, a name it has no wait for,
        or a payload that does not fit the declared class."""
        try:
            with self.orchestrator(listeners) as orch:
                saga_id = orch.find(target, saga_name, name) if by_key else target
                spec = self.learn(self.raw(saga_id))
                if spec is None:
                    raise CliError(
                        f"cannot signal saga {saga_id!r}: its class is unknown here: pass "
                        "--import MODULE with the module that defines it"
                    )
                orch.register(spec.cls)
                if spec.is_async:
                    result = asyncio.run(orch.asignal(saga_id, name, payload,
                                                      signal_id=signal_id))
                else:
                    result = orch.signal(saga_id, name, payload, signal_id=signal_id)
        except SagaflowError as exc:
            raise CliError(str(exc)) from exc
        return saga_id, result

    def unquarantine(self, saga_id: str, note: str | None = None) -> str:
        """Lift the quarantine of ``saga_id``; why it was quarantined. With ``note``,
        recorded in its history (its record must be readable now). Refused with a
        one-line error, changing nothing, when it is not quarantined."""
        why = self.raw(saga_id).quarantined
        try:
            with self.orchestrator() as orch:
                lifted = why is not None and orch.unquarantine(saga_id, note)
        except ConcurrentModification as exc:
            raise CliError(f"{exc}: another process saved this saga meanwhile") from None
        except SagaflowError as exc:
            raise CliError(str(exc)) from None
        if not lifted:
            raise CliError(f"saga {saga_id!r} is not quarantined: nothing to lift")
        assert why is not None
        return why


def _open(url: str | None, *, readonly: bool) -> Store:
    """The store ``url`` names, read-only if asked (then nothing is ever written, not even
    sagaflow's tables, and a database without them is reported as such); one-line
    errors for a missing URL, an empty memory store, or a SQLite file that is not there
    (opening it to act would create an empty one)."""
    if url is None or not url.strip():
        raise CliError(
            f"no store given: pass --store URL (e.g. --store sqlite:///sagas.db) or set "
            f"{STORE_ENV}"
        )
    scheme, sep, rest = url.strip().partition("://")
    if sep and scheme.lower() == "memory":
        raise CliError(
            f"{url!r} is a fresh, empty store in every process: give the durable store the "
            "application uses, e.g. --store sqlite:///sagas.db"
        )
    if sep and scheme.lower() == "sqlite":
        location = rest.partition("?")[0]
        path = urllib.parse.unquote(location[1:]) if location.startswith("/") else ""
        if path not in ("", ":memory:") and not Path(path).expanduser().exists():
            raise CliError(
                f"no SQLite store at {path!r} (from {url!r}): check the path "
                "(sqlite:///relative/path.db, sqlite:////absolute/path.db)"
            )
    try:
        return open_store(url, readonly=readonly)
    except (ValueError, TypeError, ImportError, SagaflowError) as exc:
        raise CliError(str(exc)) from None
