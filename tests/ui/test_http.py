"""The dashboard over HTTP (Starlette's TestClient): pages, bad requests, the store
going away, CSRF and the record's version on actions, binding beyond loopback."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import MODULE, XSS, fill
from starlette.testclient import TestClient

from sagaflow.cli import main
from sagaflow.cli.session import Session
from sagaflow.records import SagaStatus
from sagaflow.ui import create_app


def client(app) -> TestClient:
    return TestClient(app, follow_redirects=False)


def csrf_of(c: TestClient, saga_id: str, verb: str) -> tuple[str, str]:
    """The confirmation page's CSRF token and version."""
    page = c.get(f"/sagas/{saga_id}/confirm/{verb}")
    assert page.status_code == 200, page.text
    token = re.search(r'name="csrf" value="([^"]+)"', page.text)
    version = re.search(r'name="version" value="(\d+)"', page.text)
    assert token and version
    return token.group(1), version.group(1)


def status_of(store: str, saga_id: str) -> SagaStatus:
    with Session(store, [MODULE], readonly=True) as session:
        return session.record(saga_id)[0].status


def test_list_counts_and_filters(app) -> None:
    c = client(app)
    page = c.get("/sagas")
    assert page.status_code == 200
    for sid in ("done", "failed", "running", "xss"):
        assert f'href="/sagas/{sid}"' in page.text
    assert re.search(r'id="count-COMPLETED">2<', page.text)
    assert re.search(r'id="count-FAILED">1<', page.text)
    assert re.search(r'id="count-RUNNING">1<', page.text)
    failed = c.get("/sagas?status=failed").text
    assert 'href="/sagas/failed"' in failed and 'href="/sagas/done"' not in failed
    assert 'href="/sagas/xss"' in c.get("/sagas?q=XS").text
    assert 'href="/sagas/done"' not in c.get("/sagas?q=XS").text
    assert "No sagas match" in c.get("/sagas?class=nothing").text
    assert 'href="/sagas/failed"' in c.get("/sagas?outcome=failed").text


def test_paging_is_by_keyset(tmp_path: Path) -> None:
    path = tmp_path / "many.db"
    fill(path, extra=120)
    c = client(create_app(f"sqlite:///{path}", [MODULE]))
    seen: list[str] = []
    url = "/sagas"
    pages = 0
    while url:
        page = c.get(url)
        assert page.status_code == 200
        ids = re.findall(r'<tr class="saga">\s*<td><a href="/sagas/([^"]+)"', page.text)
        assert len(ids) <= 50
        seen += ids
        pages += 1
        more = re.search(r'href="(/sagas\?[^"]*)" id="next"', page.text)
        url = more.group(1).replace("&amp;", "&") if more else ""
    assert pages == 3 and len(seen) == 124 and len(set(seen)) == 124


@pytest.mark.parametrize("query, parameter", [
    ("status=nope", "status"), ("outcome=weird", "outcome"), ("after=garbage", "after"),
])
def test_a_malformed_filter_is_a_400_naming_it(app, query: str, parameter: str) -> None:
    page = client(app).get(f"/sagas?{query}")
    assert page.status_code == 400
    assert f"Bad filter: {parameter}" in page.text


def test_an_unknown_saga_is_a_404_that_says_so(app) -> None:
    page = client(app).get("/sagas/no-such-id")
    assert page.status_code == 404
    assert "there is no saga &#39;no-such-id&#39;" in page.text


def test_a_store_that_cannot_be_reached_is_an_error_page_and_the_server_serves_on(
    tmp_path: Path,
) -> None:
    path = tmp_path / "later.db"
    c = client(create_app(f"sqlite:///{path}", [MODULE]))
    page = c.get("/sagas")
    assert page.status_code == 503
    assert "The store cannot be read" in page.text and "no SQLite store" in page.text
    fill(path)
    assert c.get("/sagas").status_code == 200


def test_the_saga_page_escapes_data_and_draws_the_diagram(app) -> None:
    page = client(app).get("/sagas/xss")
    assert page.status_code == 200
    assert XSS not in page.text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text
    failed = client(app).get("/sagas/failed").text
    assert "<svg" in failed and "card declined" in failed and "release down" in failed
    assert 'id="act-retry"' in failed and 'id="act-resolve"' in failed


def test_an_action_without_the_csrf_token_is_refused(app, store: str) -> None:
    c = client(app)
    _, version = csrf_of(c, "running", "cancel")
    for form in ({"version": version}, {"version": version, "csrf": "forged"}):
        page = c.post("/sagas/running/cancel", data=form)
        assert page.status_code == 403
        assert "nothing was done" in page.text
    assert status_of(store, "running") is SagaStatus.RUNNING


def test_an_action_on_a_saga_changed_since_is_refused(app, store: str) -> None:
    c = client(app)
    token, version = csrf_of(c, "running", "cancel")
    page = c.post("/sagas/running/cancel", data={"csrf": token, "version": int(version) - 1})
    assert page.status_code == 409 and "changed since the page was drawn" in page.text
    assert status_of(store, "running") is SagaStatus.RUNNING


def test_cancel_resolve_and_a_retry_that_does_not_apply(app, store: str) -> None:
    c = client(app)
    token, version = csrf_of(c, "running", "cancel")
    done = c.post("/sagas/running/cancel", data={"csrf": token, "version": version,
                                                 "note": "stuck"})
    assert done.status_code == 303
    assert status_of(store, "running") is SagaStatus.COMPENSATED
    shown = c.get(done.headers["location"]).text
    assert "cancel: now COMPENSATED" in shown and "by ann: stuck" in shown

    token, version = csrf_of(c, "failed", "resolve")
    empty = c.post("/sagas/failed/resolve", data={"csrf": token, "version": version})
    assert empty.status_code == 400
    done = c.post("/sagas/failed/resolve", data={"csrf": token, "version": version,
                                                 "note": "released by hand"})
    assert done.status_code == 303
    assert "by ann: released by hand" in c.get("/sagas/failed").text

    token, version = csrf_of(c, "done", "retry")
    refused = c.post("/sagas/done/retry", data={"csrf": token, "version": version})
    assert refused.status_code == 409
    assert "Refused: retry" in refused.text and "COMPLETED" in refused.text
    assert status_of(store, "done") is SagaStatus.COMPLETED


def test_a_token_guards_every_page_when_given(store: str) -> None:
    c = client(create_app(store, [MODULE], token="s3cret"))
    assert c.get("/sagas").status_code == 401
    assert c.get("/sagas?token=wrong").status_code == 401
    assert c.get("/sagas?token=s3cret").status_code == 200
    assert c.get("/sagas").status_code == 200  # the cookie carries it on


def test_serving_beyond_loopback_needs_a_token(store: str) -> None:
    result = CliRunner().invoke(main, ["ui", "--store", store, "--host", "0.0.0.0"])
    assert result.exit_code == 2
    assert "pass --token" in result.output
