"""The dashboard over HTTP on a PostgreSQL store (Starlette's TestClient): the list, its
filters and pages, a saga's page, an action; one store session kept across requests;
the server stopped (an error page, 503, the dashboard serving on) and started again
(pages served again by the same app, its store opened anew)."""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("starlette")

from postgres_cluster import cluster_url, drop_schema, fresh_schema
from starlette.testclient import TestClient

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "ui"))

import ui_sagas
from ui_sagas import Crash, Shop

from sagaflow import Orchestrator, SagaStatus
from sagaflow.stores import open_store
from sagaflow.testing.pgcluster import PgCluster
from sagaflow.ui import create_app

MODULE = "ui_sagas"


def fill(url: str, extra: int = 0) -> None:
    """done, failed (release could not undo reserve), running (crashed in charge); and
    ``extra`` completed sagas p-000..."""
    with Orchestrator(open_store(url)) as orch:
        orch.run(Shop("fine"), "done")
        ui_sagas.broken.update({"charge", "release"})
        orch.run(Shop("bad"), "failed")
        ui_sagas.broken.clear()
        ui_sagas.broken.add("crash")
        with pytest.raises(Crash):
            orch.run(Shop("stuck"), "running")
        ui_sagas.broken.clear()
        for i in range(extra):
            orch.run(Shop(f"p{i}"), f"p-{i:03d}")


@pytest.fixture
def store_url(request: pytest.FixtureRequest) -> Iterator[str]:
    url = cluster_url(request.config)
    schema = fresh_schema()
    yield f"{url}&schema={schema}"
    drop_schema(url, schema)


def listed(text: str) -> list[str]:
    return re.findall(r'<tr class="saga">\s*<td><a href="/sagas/([^"]+)"', text)


def status_of(url: str, saga_id: str) -> str:
    store = open_store(url, readonly=True)
    try:
        stored = store.load_raw(saga_id)
        assert stored is not None
        return stored.status
    finally:
        store.close()  # type: ignore[attr-defined]


def test_the_dashboard_lists_filters_pages_shows_and_acts_on_postgres(store_url: str) -> None:
    fill(store_url, extra=55)
    app = create_app(store_url, [MODULE], operator="ann")
    c = TestClient(app, follow_redirects=False)
    first = c.get("/sagas")
    assert first.status_code == 200, first.text
    assert re.search(r'id="count-COMPLETED">56<', first.text)
    assert re.search(r'id="count-FAILED">1<', first.text)
    # Newest started first; 50 a page, the next from the last one's position.
    assert listed(first.text)[:3] == ["p-054", "p-053", "p-052"]
    more = re.search(r'href="(/sagas\?[^"]*)" id="next"', first.text)
    assert more is not None
    rest = listed(c.get(more.group(1).replace("&amp;", "&")).text)
    assert len(listed(first.text)) == 50 and len(rest) == 8
    assert set(listed(first.text)) | set(rest) == {"done", "failed", "running"} | {
        f"p-{i:03d}" for i in range(55)}
    # Each filter, in PostgreSQL's query.
    assert listed(c.get("/sagas?status=failed").text) == ["failed"]
    assert listed(c.get("/sagas?outcome=running").text) == ["running"]
    assert listed(c.get("/sagas?q=UNN").text) == ["running"]
    assert listed(c.get("/sagas?class=shop&q=p-05").text) == [f"p-05{i}" for i in range(4, -1, -1)]
    assert listed(c.get("/sagas?newer=1h&status=failed").text) == ["failed"]
    assert listed(c.get("/sagas?older=1h").text) == []
    assert c.get("/sagas?older=soon").status_code == 400
    # A saga's page, and an action.
    page = c.get("/sagas/failed")
    assert page.status_code == 200 and "card declined" in page.text and "<svg" in page.text
    confirm = c.get("/sagas/failed/confirm/resolve").text
    token = re.search(r'name="csrf" value="([^"]+)"', confirm)
    version = re.search(r'name="version" value="(\d+)"', confirm)
    assert token and version
    done = c.post("/sagas/failed/resolve", data={
        "csrf": token.group(1), "version": version.group(1), "note": "refunded by hand"})
    assert done.status_code == 303, done.text
    assert "by ann: refunded by hand" in c.get("/sagas/failed").text
    assert status_of(store_url, "failed") == SagaStatus.FAILED.value
    # One store session served every read.
    assert app.state.kept.opened == 1


@pytest.fixture
def own_cluster(request: pytest.FixtureRequest) -> Iterator[PgCluster]:
    """A cluster of this test's own, to stop and start again (the session's serves the
    other tests)."""
    cluster_url(request.config)  # without PostgreSQL: skipped (failed in CI), saying why
    cluster = PgCluster()
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


def pg_ctl(cluster: PgCluster, *args: str) -> None:
    cluster._run("pg_ctl", "-D", str(cluster.datadir), "-l", str(cluster.base / "server.log"),
                 "-w", "-m", "fast", *args)


def test_a_stopped_server_is_an_error_page_and_the_same_app_serves_again_once_it_is_back(
    own_cluster: PgCluster,
) -> None:
    url = own_cluster.create_database("dashboard")
    fill(url)
    app = create_app(url, [MODULE])
    c = TestClient(app, follow_redirects=False)
    assert c.get("/sagas").status_code == 200
    assert c.get("/sagas/done").status_code == 200
    assert app.state.kept.opened == 1

    pg_ctl(own_cluster, "stop")
    for path in ("/sagas", "/sagas/done", "/sagas?status=failed"):
        down = c.get(path)
        assert down.status_code == 503, down.text
        assert "The store cannot be read" in down.text
    pg_ctl(own_cluster, "start")

    back = c.get("/sagas")
    assert back.status_code == 200, back.text
    assert sorted(listed(back.text)) == ["done", "failed", "running"]
    assert c.get("/sagas/done").status_code == 200
    # Opened again after the failure, then kept again.
    opened = app.state.kept.opened
    assert opened >= 2
    c.get("/sagas")
    assert app.state.kept.opened == opened


def test_the_kept_session_is_not_dropped_by_a_page_the_app_refuses(store_url: str) -> None:
    fill(store_url)
    app = create_app(store_url, [MODULE])
    c = TestClient(app, follow_redirects=False)
    assert c.get("/sagas/nope").status_code == 404
    assert c.get("/sagas?status=nope").status_code == 400
    assert c.get("/sagas").status_code == 200
    assert app.state.kept.opened == 1
