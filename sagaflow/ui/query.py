"""What the dashboard's list reads: a page of sagas in the store's indexed order, and the
counts per status.

The order is the store's own (most recently updated first, then saga id), the one its
index serves; a page starts after the last saga of the page before (keyset paging:
``Store.scan(after=...)``), so a page costs its size plus what the filters the index
cannot serve skip, never the sagas before it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import attrs

from ..records import OUTCOMES, SagaStatus
from ..stores import Store, Stored

__all__ = ["BadFilter", "Filters", "PAGE", "Page", "counts", "page"]

PAGE = 50  #: sagas per page
_BATCH = 200


class BadFilter(ValueError):
    """A filter that cannot be read: ``parameter`` names it."""

    def __init__(self, parameter: str, problem: str) -> None:
        super().__init__(f"{parameter}: {problem}")
        self.parameter = parameter
        self.problem = problem


@attrs.frozen
class Filters:
    """The list's filters, as read from a query string."""

    status: tuple[SagaStatus, ...] = ()
    name: str | None = None
    outcome: str | None = None
    key: str | None = None
    q: str | None = None
    after: tuple[float, str] | None = None

    @classmethod
    def parse(cls, params: Any) -> Filters:
        """From a query string's parameters (``MultiDict``-like); :class:`BadFilter`
        naming the parameter that cannot be read."""
        statuses: list[SagaStatus] = []
        for value in params.getlist("status"):
            if not value:
                continue
            try:
                statuses.append(SagaStatus(value.upper()))
            except ValueError:
                known = ", ".join(s.value for s in SagaStatus)
                raise BadFilter("status", f"{value!r} is not a status ({known})") from None
        outcome = params.get("outcome") or None
        if outcome is not None and outcome.lower() not in OUTCOMES:
            raise BadFilter("outcome", f"{outcome!r} is not an outcome ({', '.join(OUTCOMES)})")
        after = params.get("after") or None
        return cls(
            status=tuple(dict.fromkeys(statuses)),
            name=params.get("class") or None,
            outcome=None if outcome is None else outcome.lower(),
            key=params.get("key") or None,
            q=params.get("q") or None,
            after=None if after is None else _cursor(after),
        )

    def query(self, after: tuple[float, str] | None) -> list[tuple[str, str]]:
        """These filters as query parameters, paging on from ``after``."""
        pairs = [("status", s.value) for s in self.status]
        for name, value in (("class", self.name), ("outcome", self.outcome),
                            ("key", self.key), ("q", self.q)):
            if value:
                pairs.append((name, value))
        if after is not None:
            pairs.append(("after", f"{after[0]!r}~{after[1]}"))
        return pairs

    def keeps(self, stored: Stored) -> bool:
        """Whether ``stored`` passes the filters the store's index does not serve."""
        if self.outcome is not None and stored.outcome != self.outcome:
            return False
        if self.key is not None and business_key(stored) != self.key:
            return False
        return self.q is None or self.q.lower() in stored.saga_id.lower()


def _cursor(text: str) -> tuple[float, str]:
    at, sep, saga_id = text.partition("~")
    try:
        value = float(at)
    except ValueError:
        value = float("nan")
    if not sep or not saga_id or value != value:
        raise BadFilter("after", f"{text!r} is not a page position (UPDATED~ID)")
    return value, saga_id


def business_key(stored: Stored) -> str | None:
    """The saga's business key, read without decoding it."""
    return stored.business_key


@attrs.frozen
class Page:
    """One page of the list: its sagas, and where the next page starts (``None``: last)."""

    sagas: list[Stored]
    next: tuple[float, str] | None


def page(store: Store, filters: Filters, size: int = PAGE) -> Page:
    """The page of sagas after ``filters.after``, most recently updated first."""
    found: list[Stored] = []
    for stored in _ordered(store, filters):
        if not filters.keeps(stored):
            continue
        found.append(stored)
        if len(found) > size:
            break
    more = len(found) > size
    found = found[:size]
    last = found[-1] if more else None
    return Page(found, None if last is None else (last.updated_at, last.saga_id))


def _ordered(store: Store, filters: Filters) -> Iterator[Stored]:
    """The store's sagas of ``filters``' statuses and class, newest first, from after
    ``filters.after``: the store pages through its index (keyset)."""
    return store.scan(status=filters.status or None, name=filters.name, newest_first=True,
                      after=filters.after)


def counts(store: Store) -> dict[str, int]:
    """How many sagas of each status the store holds (every status, 0 when none): the
    store's own count where it has one, else counted from a scan."""
    count: Callable[[], dict[str, int]] | None = getattr(store, "counts", None)
    if count is not None:
        return count()
    found = dict.fromkeys((s.value for s in SagaStatus), 0)
    for stored in store.scan():
        found[stored.status] = found.get(stored.status, 0) + 1
    return found
