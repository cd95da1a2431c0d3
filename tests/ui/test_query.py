"""The list's query (sagaflow/ui/query.py): the age filters (``newer``/``older``: started
within a duration, or more than a duration ago), their 400 naming the parameter, pages
newest started first, a store without ``browse``; and the one store session the app
keeps across requests (sagaflow/ui/serve.py ``Kept``)."""

from __future__ import annotations

import re
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import MODULE, fill
from starlette.testclient import TestClient

from sagaflow.stores import MemoryStore
from sagaflow.ui import create_app
from sagaflow.ui.query import BadFilter, Filters, duration, page
from sagaflow.ui.serve import Kept


def listed(text: str) -> list[str]:
    return re.findall(r'<tr class="saga">\s*<td><a href="/sagas/([^"]+)"', text)


@pytest.mark.parametrize(("text", "seconds"), [
    ("90s", 90), ("15m", 900), ("2h", 7200), ("3d", 3 * 86400), ("1w", 7 * 86400),
    (" 1.5H ", 5400),
])
def test_a_duration_is_a_number_and_a_unit(text: str, seconds: float) -> None:
    assert duration("newer", text) == seconds


@pytest.mark.parametrize("text", ["15", "m", "15 minutes", "-1h", "1h30m", "soon"])
def test_a_malformed_duration_names_its_parameter(text: str) -> None:
    with pytest.raises(BadFilter) as caught:
        duration("older", text)
    assert caught.value.parameter == "older" and "15m" in caught.value.problem


def aged(path: Path) -> None:
    """'done' started three days ago, 'failed' two hours ago; the others just now."""
    now = time.time()
    with sqlite3.connect(path) as conn:
        for saga_id, ago in (("done", 3 * 86400), ("failed", 7200)):
            conn.execute("UPDATE sagaflow_sagas SET created_at = ? WHERE saga_id = ?",
                         (now - ago, saga_id))


def test_the_age_filters_over_http(tmp_path: Path) -> None:
    path = tmp_path / "aged.db"
    fill(path)
    aged(path)
    c = TestClient(create_app(f"sqlite:///{path}", [MODULE]))
    assert listed(c.get("/sagas").text) == ["xss", "running", "failed", "done"]
    assert listed(c.get("/sagas?newer=1h").text) == ["xss", "running"]
    assert listed(c.get("/sagas?older=1h").text) == ["failed", "done"]
    assert listed(c.get("/sagas?older=1d").text) == ["done"]
    assert listed(c.get("/sagas?newer=1d&older=1h").text) == ["failed"]
    assert listed(c.get("/sagas?newer=1d&older=1h&status=completed").text) == []
    # The form shows what was asked, and the next page keeps it.
    form = c.get("/sagas?newer=120m").text
    assert 'id="f-newer" value="2h"' in form
    for parameter in ("newer", "older"):
        bad = c.get(f"/sagas?{parameter}=yesterday")
        assert bad.status_code == 400
        assert f"Bad filter: {parameter}" in bad.text and "15m" in bad.text


def test_the_next_page_keeps_the_filters(tmp_path: Path) -> None:
    path = tmp_path / "many.db"
    fill(path, extra=60)
    c = TestClient(create_app(f"sqlite:///{path}", [MODULE]))
    first = c.get("/sagas?newer=1h&q=p-0")
    more = re.search(r'href="/sagas(\?[^"]*)" id="next"', first.text)
    assert more is not None and "newer=1h" in more.group(1) and "q=p-0" in more.group(1)
    rest = listed(c.get("/sagas" + more.group(1).replace("&amp;", "&")).text)
    assert listed(first.text) + rest == [f"p-{i:03d}" for i in range(59, -1, -1)]


class ScanOnly:
    """A store with ``scan`` only (no ``browse``): the list reads every saga."""

    def __init__(self, store: Any) -> None:
        self.store = store

    def scan(self, **filters: Any) -> Any:
        return self.store.scan(**filters)


def test_a_store_without_browse_is_filtered_the_same(tmp_path: Path) -> None:
    from sagaflow.stores import SQLiteStore

    path = tmp_path / "same.db"
    fill(path, extra=3)
    aged(path)
    with SQLiteStore(path, readonly=True) as store:
        for query in ({}, {"older": "1h"}, {"outcome": "failed"}, {"q": "P-"},
                      {"status": "COMPLETED", "newer": "1h"}):
            filters = Filters.parse(_Params(query))
            indexed = page(store, filters, size=4)
            read = page(ScanOnly(store), filters, size=4)  # type: ignore[arg-type]
            assert [s.saga_id for s in read.sagas] == [s.saga_id for s in indexed.sagas]
            assert read.next == indexed.next


class _Params(dict[str, str]):
    def getlist(self, name: str) -> list[str]:
        return [self[name]] if name in self else []


def test_the_memory_store_pages_the_same_way() -> None:
    store = MemoryStore()
    from ui_sagas import Shop

    from sagaflow import Orchestrator

    with Orchestrator(store) as orch:
        for i in range(7):
            orch.run(Shop(f"m{i}"), f"m-{i}")
    filters = Filters.parse(_Params({}))
    first = page(store, filters, size=4)
    assert first.next is not None
    second = page(store, Filters(after=first.next), size=4)
    ids = [s.saga_id for s in first.sagas + second.sagas]
    assert sorted(ids) == [f"m-{i}" for i in range(7)] and len(set(ids)) == 7


def test_one_store_session_serves_every_request(store: str) -> None:
    app = create_app(store, [MODULE])
    c = TestClient(app)
    for path in ("/sagas", "/sagas/done", "/sagas?status=failed", "/sagas/nope",
                 "/sagas?older=x", "/sagas/done/confirm/retry"):
        c.get(path)
    assert app.state.kept.opened == 1


def test_kept_reopens_after_a_failure_and_closes_what_it_dropped_once_unused() -> None:
    made: list[list[str]] = []
    closed: list[int] = []

    def open_() -> list[str]:
        made.append([])
        return made[-1]

    def close(value: list[str]) -> None:
        closed.append(next(i for i, m in enumerate(made) if m is value))

    kept: Kept[list[str]] = Kept(open_, close, keep=(LookupError,))
    with kept.use() as a, kept.use() as b:
        assert a is b
    with pytest.raises(LookupError), kept.use():
        raise KeyError("a page the app refuses: kept")
    with pytest.raises(OSError), kept.use() as first:
        with kept.use() as other:  # another request using it when it fails
            assert other is first
            with pytest.raises(OSError), kept.use():
                raise OSError("the store went away")
            assert closed == []  # still in use by this request
        raise OSError("and this one")
    assert closed == [0] and kept.opened == 1
    with kept.use() as again:
        assert again is made[1]
    assert kept.opened == 2
    kept.close()
    assert closed == [0, 1]


def test_a_rare_id_text_pages_on_from_where_the_search_stopped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A page of an id text looks through a bounded window of sagas: none found there,
    the page links on from where it stopped, and following the links finds the saga."""
    from sagaflow.stores.sqlite import SQLiteStore

    monkeypatch.setattr(SQLiteStore, "TEXT_REACH", 10)
    path = tmp_path / "rare.db"
    fill(path, extra=40)
    c = TestClient(create_app(f"sqlite:///{path}", [MODULE]))
    url, found, pages = "/sagas?q=XS", [], 0
    while url:
        text = c.get(url).text
        found += listed(text)
        pages += 1
        more = re.search(r'href="(/sagas\?[^"]*)" id="next"', text)
        url = more.group(1).replace("&amp;", "&") if more else ""
    assert found == ["xss"] and pages == 5  # 44 sagas, 10 a window
