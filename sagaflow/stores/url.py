"""``open_store``: a store from a URL (configuration files, the CLI) or a store object.

=================================  ==================================================
``memory://``                      a fresh :class:`~sagaflow.stores.MemoryStore`
``sqlite:///sagas.db``             SQLite file ``sagas.db``, relative to the working
                                   directory (three slashes, as in SQLAlchemy)
``sqlite:////var/lib/app/sagas.db``  an absolute path (four slashes); ``~`` expands
``sqlite:///:memory:``             an in-memory SQLite database (tests: not durable)
``...?synchronous=NORMAL``         SQLite options: ``synchronous``, ``busy_timeout``
``postgresql://user@host/db``      a :class:`~sagaflow.stores.postgres.PostgresStore`
                                   (also ``postgres://``, ``postgresql+psycopg://``;
                                   needs ``pip install 'sagaflow[postgres]'``)
``...?schema=app&pool_size=8``     sagaflow's PostgreSQL options: ``schema`` (the
                                   tables' schema), ``pool_size``, ``max_batch``;
                                   every other parameter goes to libpq
=================================  ==================================================

``open_store(url, readonly=True)`` (what read-only commands use) never writes: no table
is created, no schema migrated (SQLite opens the file read-only; PostgreSQL reads in
read-only transactions), and a database without sagaflow's schema is a
:class:`~sagaflow.StoreError` saying so.
"""

from __future__ import annotations

import os
import urllib.parse
from types import ModuleType
from typing import Any

from .base import Store
from .memory import MemoryStore
from .sqlite import SQLiteStore

__all__ = ["SCHEMES", "open_store", "postgres_module"]

#: The URL schemes open_store understands.
SCHEMES = ("memory://", "sqlite:///", "postgresql://")
_POSTGRES = ("postgresql", "postgres", "postgresql+psycopg")
_SQLITE_OPTIONS = {"synchronous": str, "busy_timeout": float}
_POSTGRES_OPTIONS = {"schema": str, "pool_size": int, "max_batch": int}


def open_store(store: str | Store, *, readonly: bool = False) -> Store:
    """The store ``store`` names (a URL), or ``store`` itself if it is already one.

    ``readonly=True`` opens a durable store for reading only (see the module's doc).
    """
    if not isinstance(store, str):
        if isinstance(store, Store):
            return store
        raise TypeError(
            f"a store is a URL such as 'sqlite:///sagas.db' or a store object "
            f"(MemoryStore, SQLiteStore...), got {store!r}"
        )
    url = store.strip()
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise ValueError(
            f"{store!r} is not a store URL: write 'sqlite:///{url}' for a SQLite file "
            f"or 'memory://' (supported: {', '.join(SCHEMES)})"
        )
    scheme = scheme.lower()
    if scheme == "memory":
        if rest.strip("/"):
            raise ValueError(f"{store!r}: 'memory://' takes no path or options")
        return MemoryStore()
    if scheme == "sqlite":
        return _sqlite(store, rest, readonly)
    if scheme in _POSTGRES:
        return _postgres(store, rest, readonly)
    raise ValueError(
        f"{store!r}: unknown store scheme {scheme + '://'!r}; supported: {', '.join(SCHEMES)}"
    )


def postgres_module() -> ModuleType:
    """:mod:`sagaflow.stores.postgres`, or an error saying how to install psycopg."""
    try:
        import psycopg  # noqa: F401
        import psycopg_pool  # noqa: F401
    except ImportError as exc:
        raise ImportError(
            f"the PostgreSQL store needs psycopg 3 with its pool ({exc}): "
            "pip install 'sagaflow[postgres]'"
        ) from exc
    from . import postgres

    return postgres


def _postgres(url: str, rest: str, readonly: bool) -> Store:
    """A PostgresStore for ``url``; sagaflow's own options are taken out of the query,
    the rest of the URL is libpq's (it reports its own mistakes)."""
    location, _, query = rest.partition("?")
    options: dict[str, Any] = {}
    kept: list[tuple[str, str]] = []
    for key, value in urllib.parse.parse_qsl(query, keep_blank_values=True):
        convert = _POSTGRES_OPTIONS.get(key)
        if convert is None:
            kept.append((key, value))
            continue
        try:
            options[key] = convert(value)
        except ValueError:
            raise ValueError(f"{url!r}: option {key}={value!r} is not valid") from None
    conninfo = "postgresql://" + location
    if kept:
        conninfo += "?" + urllib.parse.urlencode(kept)
    module = postgres_module()
    store: Store = module.PostgresStore(conninfo, readonly=readonly, **options)
    return store


def _sqlite(url: str, rest: str, readonly: bool) -> Store:
    location, _, query = rest.partition("?")
    if location and not location.startswith("/"):
        raise ValueError(
            f"{url!r}: a SQLite URL has no host: write 'sqlite:///relative/path.db' or "
            "'sqlite:////absolute/path.db'"
        )
    path = urllib.parse.unquote(location[1:])  # drop the slash that ends the empty host
    path = ":memory:" if path in ("", ":memory:") else os.path.expanduser(path)
    options: dict[str, Any] = {}
    for key, values in urllib.parse.parse_qs(query, keep_blank_values=True).items():
        convert = _SQLITE_OPTIONS.get(key)
        if convert is None:
            raise ValueError(
                f"{url!r}: unknown SQLite option {key!r}; known: {', '.join(_SQLITE_OPTIONS)}"
            )
        try:
            options[key] = convert(values[-1])
        except ValueError:
            raise ValueError(f"{url!r}: option {key}={values[-1]!r} is not valid") from None
    return SQLiteStore(path, readonly=readonly, **options)
