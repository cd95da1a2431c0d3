"""The dashboard's "only with an incident" view (``/sagas?incidents=1``): a store query
in pages of the list's size, newest started first, keyset links that keep the view
and the other filters, each saga's kind of incident shown, and the kinds asked for
alone (``incidents=stalled``, ``incidents=failed,quarantined``); a store without
``browse`` lists the same sagas. A real SQLite file; the app over HTTP."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from sagaflow import SagaStatus, saga, spec_of, step
from sagaflow.engine import new_record
from sagaflow.errors import StepError
from sagaflow.incidents import open_incidents
from sagaflow.stores.sqlite import SQLiteStore
from sagaflow.ui import create_app
from sagaflow.ui.query import PAGE, BadFilter, Filters, page

NOW = 1_700_000_000.0


@saga(name="incident-view")
class Payment:
    amount: int = 1

    @step(readonly=True)
    def charge(self, ctx: Any) -> None:
        pass


def fill(path: Path, failed: int = 120) -> dict[str, str]:
    """``failed`` FAILED sagas (every tenth resolved), a quarantined one, a stalled one,
    and finished ones between them; each incident's kind by saga id."""
    kinds: dict[str, str] = {}
    with SQLiteStore(path) as store:
        for k in range(failed):
            for sid, status in ((f"f-{k:03}", SagaStatus.FAILED),
                                (f"ok-{k:03}", SagaStatus.COMPLETED)):
                record = new_record(spec_of(Payment), Payment(), sid, NOW + k)
                store.create(record)
                record.status = status
                if status is SagaStatus.FAILED:
                    record.error = StepError(0, "charge", "card declined")
                    record.resolution = "refunded by hand" if k % 10 == 0 else None
                    if record.resolution is None:
                        kinds[sid] = "failed"
                store.save(record)
        store.quarantine("ok-005", "cannot be decoded")
        kinds["ok-005"] = "quarantined"
        hung = new_record(spec_of(Payment), Payment(), "hung", NOW + 500)
        store.create(hung)
        hung.status, hung.updated_at = SagaStatus.RUNNING, NOW + 500
        store.save(hung)
        kinds["hung"] = "stalled"
    return kinds


def rows_of(text: str) -> list[tuple[str, str]]:
    return re.findall(r'<a href="/sagas/([^"]+)">[^<]*</a></td>'
                      r'<td class="problem incident-kind">([^<]*)</td>', text)


def next_link(text: str) -> str | None:
    found = re.search(r'href="(/sagas\?[^"]*)" id="next"', text)
    return found.group(1).replace("&amp;", "&") if found else None


def walk(c: TestClient, url: str) -> list[list[tuple[str, str]]]:
    """Every page of ``url``, following the next links."""
    pages = []
    at: str | None = url
    while at is not None:
        response = c.get(at)
        assert response.status_code == 200, response.text
        pages.append(rows_of(response.text))
        at = next_link(response.text)
        if at is not None:
            assert "incidents=" in at  # the next page is of the same view
    return pages


def newest_first(path: Path, ids: list[str]) -> list[str]:
    with SQLiteStore(path, readonly=True) as store:
        rows = [store.load_raw(sid) for sid in ids]
    return [s.saga_id for s in sorted(rows, key=lambda s: (s.created_at, s.saga_id),
                                      reverse=True)]


def test_the_incidents_view_pages_through_every_open_incident(tmp_path: Path) -> None:
    path = tmp_path / "sagas.db"
    kinds = fill(path)
    c = TestClient(create_app(f"sqlite:///{path}", stalled_after=60))
    pages = walk(c, "/sagas?incidents=1")
    assert [len(p) for p in pages] == [PAGE, PAGE, len(kinds) - 2 * PAGE]
    listed = [row for p in pages for row in p]
    assert [sid for sid, _ in listed] == newest_first(path, list(kinds))
    assert dict(listed) == kinds
    # what the CLI's open_incidents finds, the same sagas
    with SQLiteStore(path, readonly=True) as store:
        opened = open_incidents(store, stalled_after=60)
    assert {i.saga_id: i.kind for i in opened} == kinds


def test_the_incidents_view_keeps_the_kinds_and_the_other_filters(tmp_path: Path) -> None:
    path = tmp_path / "sagas.db"
    kinds = fill(path)
    c = TestClient(create_app(f"sqlite:///{path}", stalled_after=60))
    assert walk(c, "/sagas?incidents=stalled") == [[("hung", "stalled")]]
    aside = walk(c, "/sagas?incidents=quarantined,stalled")
    assert aside == [[("hung", "stalled"), ("ok-005", "quarantined")]]
    failed = [row for p in walk(c, "/sagas?incidents=failed&q=f-1") for row in p]
    assert [sid for sid, _ in failed] == newest_first(
        path, [s for s, k in kinds.items() if k == "failed" and s.startswith("f-1")])
    completed = walk(c, "/sagas?incidents=1&status=COMPLETED")
    assert completed == [[("ok-005", "quarantined")]]
    # without a threshold nothing is stalled
    assert walk(TestClient(create_app(f"sqlite:///{path}")), "/sagas?incidents=stalled") == [[]]
    bad = c.get("/sagas?incidents=lost")
    assert bad.status_code == 400 and "incidents" in bad.text


def test_filters_read_the_incidents_parameter() -> None:
    class Params(dict[str, str]):
        def getlist(self, name: str) -> list[str]:
            return [self[name]] if name in self else []

    assert Filters.parse(Params()).incidents is None
    assert Filters.parse(Params(incidents="0")).incidents is None
    assert Filters.parse(Params(incidents="on")).incidents == ("failed", "quarantined",
                                                               "stalled")
    assert Filters.parse(Params(incidents="stalled, failed")).incidents == ("stalled",
                                                                           "failed")
    with pytest.raises(BadFilter, match="'maybe' is not"):
        Filters.parse(Params(incidents="maybe"))
    filters = Filters(incidents=("stalled",))
    assert ("incidents", "stalled") in filters.query(None)
    assert ("incidents", "1") in Filters(incidents=("failed", "quarantined", "stalled")
                                         ).query(None)


class ScanOnly:
    """A store with what ``open_incidents`` reads, and no ``browse``."""

    def __init__(self, store: Any) -> None:
        self.store = store

    def __getattr__(self, name: str) -> Any:
        if name == "browse":
            raise AttributeError(name)
        return getattr(self.store, name)


def test_a_store_without_browse_lists_the_same_incidents(tmp_path: Path) -> None:
    path = tmp_path / "sagas.db"
    fill(path, failed=12)
    with SQLiteStore(path, readonly=True) as store:
        for kinds in (("failed", "quarantined", "stalled"), ("stalled",), ("failed",)):
            filters = Filters(incidents=kinds)
            indexed = page(store, filters, size=4, stalled_after=60)
            read = page(ScanOnly(store), filters, size=4, stalled_after=60)  # type: ignore[arg-type]
            assert [s.saga_id for s in read.sagas] == [s.saga_id for s in indexed.sagas]
            assert read.next == indexed.next
