"""``open_store``: a store from a URL (configuration files, the CLI) or a store object.

=================================  ==================================================
``memory://``                      a fresh :class:`~sagaflow.stores.MemoryStore`
``sqlite:///sagas.db``             SQLite file ``sagas.db``, relative to the working
                                   directory (three slashes, as in SQLAlchemy)
``sqlite:////var/lib/app/sagas.db``  an absolute path (four slashes); ``~`` expands
``sqlite:///:memory:``             an in-memory SQLite database (tests: not durable)
``...?synchronous=NORMAL``         SQLite options: ``synchronous``, ``busy_timeout``
``postgresql://...``               reserved: the PostgreSQL store is not available yet
=================================  ==================================================
"""

from __future__ import annotations

import os
import urllib.parse
from typing import Any

from .base import Store
from .memory import MemoryStore

__all__ = ["SCHEMES", "open_store"]

#: The URL schemes open_store understands.
SCHEMES = ("memory://", "sqlite:///")
_POSTGRES = ("postgresql", "postgres", "postgresql+psycopg")
_SQLITE_OPTIONS = {"synchronous": str, "busy_timeout": float}


def open_store(store: str | Store) -> Store:
    """The store ``store`` names (a URL), or ``store`` itself if it is already one."""
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
        return _sqlite(store, rest)
    if scheme in _POSTGRES:
        raise ValueError(
            f"{store!r}: the PostgreSQL store is not available yet in this version of "
            "sagaflow; use 'sqlite:///path/to/sagas.db' meanwhile"
        )
    raise ValueError(
        f"{store!r}: unknown store scheme {scheme + '://'!r}; supported: "
        f"{', '.join(SCHEMES)} (postgresql:// is reserved for a later version)"
    )


def _sqlite(url: str, rest: str) -> Store:
    from .sqlite import SQLiteStore

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
    return SQLiteStore(path, **options)
