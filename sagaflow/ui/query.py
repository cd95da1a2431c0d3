"""What the dashboard's list reads: a page of sagas in the store's indexed order, and the
counts per status.

Every filter goes into the store's own query (``browse``: the memory, SQLite and
PostgreSQL stores), read newest started first (then by saga id) from an index that
serves that order, alone or after the status, the class or the outcome; a page starts
after the last saga of the page before (keyset paging), so a page costs its size (plus
what the id text, or a second filter, passes over), never the sagas before it nor the
size of the store. The start time is the order, not the last update: it never changes,
so the indexes that serve the list cost a checkpoint nothing. The sagas with an open
incident (``incidents=1``, or some kinds of incident) are such a filter too: each kind
read from an index in the list's order (:func:`sagaflow.stores._sql.incident_selects`).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Any

import attrs

from ..incidents import FAILED, KINDS, QUARANTINED, STALLED, incident_of
from ..records import OUTCOMES, SagaStatus
from ..stores import Store, Stored

__all__ = [
    "BadFilter", "Filters", "PAGE", "Page", "counts", "duration", "incident_kind", "page",
]

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
    #: started within this many seconds (``newer``), or more than this many ago (``older``)
    newer: float | None = None
    older: float | None = None
    after: tuple[float, str] | None = None
    #: only the sagas with an open incident of these kinds (``None``: every saga)
    incidents: tuple[str, ...] | None = None

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
        ages = {p: duration(p, params.get(p)) if params.get(p) else None
                for p in ("newer", "older")}
        return cls(
            status=tuple(dict.fromkeys(statuses)),
            name=params.get("class") or None,
            outcome=None if outcome is None else outcome.lower(),
            key=params.get("key") or None,
            q=params.get("q") or None,
            newer=ages["newer"],
            older=ages["older"],
            after=None if after is None else _cursor(after),
            incidents=_incident_kinds(params.get("incidents")),
        )

    @property
    def ages(self) -> dict[str, str]:
        """The age filters as the form shows them (``newer``/``older``: ``"15m"``, or ``""``)."""
        return {name: "" if seconds is None else spoken(seconds)
                for name, seconds in (("newer", self.newer), ("older", self.older))}

    def query(self, after: tuple[float, str] | None) -> list[tuple[str, str]]:
        """These filters as query parameters, paging on from ``after``."""
        pairs = [("status", s.value) for s in self.status]
        for name, value in (("class", self.name), ("outcome", self.outcome),
                            ("key", self.key), ("q", self.q)):
            if value:
                pairs.append((name, value))
        for name, seconds in (("newer", self.newer), ("older", self.older)):
            if seconds is not None:
                pairs.append((name, spoken(seconds)))
        if self.incidents is not None:
            every = set(self.incidents) == set(KINDS)
            pairs.append(("incidents", "1" if every else ",".join(self.incidents)))
        if after is not None:
            pairs.append(("after", f"{after[0]!r}~{after[1]}"))
        return pairs

    def keeps(self, stored: Stored, now: float) -> bool:
        """Whether ``stored`` passes these filters (a store without ``browse``)."""
        started = float(getattr(stored, "created_at", stored.updated_at))
        return (
            (not self.status or stored.status in {s.value for s in self.status})
            and (self.name is None or stored.saga_name == self.name)
            and (self.outcome is None or stored.outcome == self.outcome)
            and (self.key is None or business_key(stored) == self.key)
            and (self.q is None or self.q.lower() in stored.saga_id.lower())
            and (self.newer is None or started >= now - self.newer)
            and (self.older is None or started < now - self.older)
        )


_ON = ("1", "on", "true", "yes")
_OFF = ("", "0", "off", "false", "no")


def _incident_kinds(value: str | None) -> tuple[str, ...] | None:
    """The ``incidents`` filter: on (every kind), off (``None``), or kinds of incident
    separated by commas; :class:`BadFilter` for anything else."""
    if value is None or value.strip().lower() in _OFF:
        return None
    if value.strip().lower() in _ON:
        return KINDS
    kinds = tuple(dict.fromkeys(k.strip().lower() for k in value.split(",") if k.strip()))
    if not kinds or not set(kinds) <= set(KINDS):
        raise BadFilter("incidents", f"{value!r} is not on or off (1 or 0) nor kinds of "
                        f"incident ({', '.join(KINDS)}, separated by commas)")
    return kinds


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*", re.IGNORECASE)


def duration(parameter: str, text: str) -> float:
    """Seconds of ``text`` such as ``90s``, ``15m``, ``2h``, ``3d``, ``1w``;
    :class:`BadFilter` naming ``parameter`` when it is not one."""
    found = _DURATION.fullmatch(text)
    if found is None:
        raise BadFilter(parameter, f"{text!r} is not a duration (a number and a unit: "
                        "90s, 15m, 2h, 3d, 1w)")
    return float(found.group(1)) * _UNITS[found.group(2).lower()]


def spoken(seconds: float) -> str:
    """``seconds`` as :func:`duration` reads it, in the largest unit that divides it."""
    for unit in ("w", "d", "h", "m"):
        if seconds % _UNITS[unit] == 0:
            return f"{seconds / _UNITS[unit]:g}{unit}"
    return f"{seconds:g}s"


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


def page(
    store: Store, filters: Filters, size: int = PAGE, *, stalled_after: float | None = None,
) -> Page:
    """The page of sagas after ``filters.after``, newest started first; with
    ``filters.incidents``, of the sagas with an open incident of those kinds (stalled:
    no checkpoint for ``stalled_after`` seconds; ``None``: none is)."""
    now = time.time()
    browse: Callable[..., list[Stored]] | None = getattr(store, "browse", None)
    if browse is not None:
        incidents: dict[str, Any] = {}
        if filters.incidents is not None:  # (a store of one's own may not take them)
            incidents = {"incidents": filters.incidents, "stalled_before":
                         None if stalled_after is None else now - stalled_after}
        found = browse(
            status=filters.status or None, name=filters.name, outcome=filters.outcome,
            key=filters.key, text=filters.q,
            newer=None if filters.newer is None else now - filters.newer,
            older=None if filters.older is None else now - filters.older,
            after=filters.after, limit=size + 1, **incidents,
        )
    else:
        found = _looked_through(store, filters, now, stalled_after)[: size + 1]
    more = len(found) > size
    if not more:
        # A text search that stopped looking before the end: go on from where it did.
        searched: tuple[float, str] | None = getattr(found, "searched_to", None)
        return Page(list(found), searched)
    found = found[:size]
    last = found[-1]
    return Page(found, (_started(last), last.saga_id))


def _started(stored: Stored) -> float:
    return float(getattr(stored, "created_at", stored.updated_at))


def _looked_through(
    store: Store, filters: Filters, now: float, stalled_after: float | None,
) -> list[Stored]:
    """What ``browse`` finds, for a store without it: by reading every saga (and with
    ``filters.incidents``, each one's incident, as the CLI finds them)."""
    found = [s for s in store.scan() if filters.keeps(s, now)]
    if filters.incidents is not None:
        kinds = filters.incidents
        found = [s for s in found if (
            (i := incident_of(store, s, stalled_after=stalled_after, now=now)) is not None
            and i.kind in kinds
        )]
    found.sort(key=lambda s: (_started(s), s.saga_id), reverse=True)
    if filters.after is not None:
        found = [s for s in found if (_started(s), s.saga_id) < filters.after]
    return found


def incident_kind(stored: Stored) -> str:
    """The kind of the open incident of ``stored``, a saga the incidents view lists:
    its quarantine, whatever its status; else FAILED, no one resolved it; else
    stalled."""
    if stored.quarantined is not None:
        return QUARANTINED
    return FAILED if stored.status == SagaStatus.FAILED.value else STALLED


def counts(store: Store, name: str | None = None) -> dict[str, int]:
    """How many sagas of each status the store holds (every status, 0 when none; with
    ``name``, of that class): the store's own count where it has one, else counted from
    a scan."""
    count: Callable[..., dict[str, int]] | None = getattr(store, "counts", None)
    if count is not None:
        return count() if name is None else count(name)
    found = dict.fromkeys((s.value for s in SagaStatus), 0)
    for stored in store.scan(name=name):
        found[stored.status] = found.get(stored.status, 0) + 1
    return found
