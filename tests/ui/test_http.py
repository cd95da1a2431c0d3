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
    assert re.search(r'id="count-RUNNING">3<', page.text)  # running, waiting, aside
    failed = c.get("/sagas?status=failed").text
    assert 'href="/sagas/failed"' in failed and 'href="/sagas/done"' not in failed
    assert 'href="/sagas/xss"' in c.get("/sagas?q=XS").text
    assert 'href="/sagas/done"' not in c.get("/sagas?q=XS").text
    assert "No sagas match" in c.get("/sagas?class=nothing").text
    assert 'href="/sagas/failed"' in c.get("/sagas?outcome=failed").text


def test_paging_is_by_keyset(tmp_path: Path) -> None:
    path = tmp_path / "many.db"
    fill(path, extra=120, acting=True)
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
    assert pages == 3 and len(seen) == 126 and len(set(seen)) == 126


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


def ids_of(text: str) -> list[str]:
    return re.findall(r'<tr class="saga">\s*<td><a href="/sagas/([^"]+)"', text)


def link(text: str, anchor: str) -> str | None:
    found = re.search(rf'href="(/sagas\?[^"]*)" id="{anchor}"', text)
    return found.group(1).replace("&amp;", "&") if found else None


def test_a_previous_page_link_goes_back_page_by_page(tmp_path: Path) -> None:
    path = tmp_path / "many.db"
    fill(path, extra=120, acting=True)
    c = client(create_app(f"sqlite:///{path}", [MODULE]))
    first = c.get("/sagas").text
    assert link(first, "previous") is None  # the first page has none
    second = c.get(link(first, "next")).text
    third = c.get(link(second, "next")).text
    assert link(third, "next") is None
    back = c.get(link(third, "previous")).text
    assert ids_of(back) == ids_of(second)
    assert link(back, "next") == link(second, "next")
    again = c.get(link(back, "previous")).text
    assert ids_of(again) == ids_of(first) and link(again, "previous") is None
    filtered = c.get("/sagas?status=COMPLETED").text  # the filters go along
    assert "status=COMPLETED" in link(c.get(link(filtered, "next")).text, "previous")


def test_a_saga_class_page(app) -> None:
    c = client(app)
    assert 'href="/classes/shop"' in c.get("/sagas").text
    assert 'href="/classes/shop" id="class"' in c.get("/sagas/failed").text
    page = c.get("/classes/shop")
    assert page.status_code == 200
    rows = re.findall(r'<tr class="step">(.*?)</tr>', page.text)
    assert len(rows) == 2
    assert "<td>reserve</td><td>compensatable</td>" in rows[0] and "release (timeout" in rows[0]
    assert "<td>charge</td>" in rows[1] and "no retry" in rows[1] and "refund" in rows[1]
    assert "<svg" in page.text
    assert re.search(r'id="count-COMPLETED">2<', page.text)  # done, xss
    assert re.search(r'id="count-RUNNING">2<', page.text)  # running, aside
    assert 'href="/sagas?status=FAILED&amp;class=shop" id="link-FAILED"' in page.text
    listed = c.get("/sagas?status=RUNNING&class=shop").text
    assert sorted(ids_of(listed)) == ["aside", "running"]

    waits = c.get("/classes/approve").text
    assert "signal approval (Approval)" in waits and "timeout 7d" in waits
    assert re.search(r"<td>ship</td><td>pivot</td>", waits)
    missing = c.get("/classes/nothing")
    assert missing.status_code == 404 and "no saga class &#39;nothing&#39;" in missing.text


def test_a_running_sagas_page_reloads_itself_until_it_is_finished(app) -> None:
    c = client(app)
    assert '<meta http-equiv="refresh" content="2">' in c.get("/sagas/running").text
    assert '<meta http-equiv="refresh"' in c.get("/sagas/waiting").text
    for finished in ("done", "failed"):
        assert 'http-equiv="refresh"' not in c.get(f"/sagas/{finished}").text


def signal_form(c: TestClient, saga_id: str, **fields: str):
    token, version = csrf_of(c, saga_id, "signal")
    return c.post(f"/sagas/{saga_id}/signal",
                  data={"csrf": token, "version": version, **fields})


def test_signal_a_waiting_saga(app, store: str) -> None:
    c = client(app)
    page = c.get("/sagas/waiting").text
    assert 'id="act-signal"' in page and 'id="act-retry"' not in page
    assert 'id="act-signal"' not in c.get("/sagas/running").text  # it waits for nothing
    asked = c.get("/sagas/waiting/confirm/signal").text
    assert '<option value="approval">approval — Approval(by: str, amount: int)' in asked

    bad = signal_form(c, "waiting", signal="approval", payload="{by: bob}")
    assert bad.status_code == 400 and "the payload is not JSON" in bad.text
    wrong = signal_form(c, "waiting", signal="approval", payload='{"by": "bob"}')
    assert wrong.status_code == 409 and "Refused: signal" in wrong.text
    assert "does not fit" in wrong.text and "amount" in wrong.text
    unknown = signal_form(c, "waiting", signal="nope", payload="")
    assert unknown.status_code == 409
    assert "declares no wait for signal &#39;nope&#39;" in unknown.text
    with Session(store, [MODULE], readonly=True) as session:
        assert session.store.signals("waiting") == []  # nothing was stored
    assert status_of(store, "waiting") is SagaStatus.RUNNING

    done = signal_form(c, "waiting", signal="approval",
                       payload='{"by": "bob", "amount": 12}')
    assert done.status_code == 303
    assert status_of(store, "waiting") is SagaStatus.COMPLETED
    shown = c.get(done.headers["location"]).text
    assert "signal approval: now COMPLETED" in shown
    delivered = r"SignalDelivered &#39;approval&#39; to &#39;approved&#39; \(id by ann "
    assert re.search(delivered, shown)
    assert "&#34;approved_by&#34;: &#34;bob&#34;" in shown

    late = signal_form(c, "waiting", signal="approval", payload='{"by": "x", "amount": 1}')
    assert late.status_code == 409 and "COMPLETED" in late.text


def test_unquarantine_a_quarantined_saga(app, store: str) -> None:
    c = client(app)
    page = c.get("/sagas/aside").text
    assert 'id="act-unquarantine"' in page
    assert 'id="act-unquarantine"' not in c.get("/sagas/running").text
    token, version = csrf_of(c, "aside", "unquarantine")
    assert "the disk lied" in c.get("/sagas/aside/confirm/unquarantine").text
    stale = c.post("/sagas/aside/unquarantine", data={"csrf": token, "version": int(version) + 1})
    assert stale.status_code == 409
    done = c.post("/sagas/aside/unquarantine",
                  data={"csrf": token, "version": version, "note": "disk replaced"})
    assert done.status_code == 303
    shown = c.get(done.headers["location"]).text
    assert "unquarantine: lifted (it was set aside because: cannot be decoded" in shown
    assert "OperatorAction unquarantine: by ann: disk replaced" in shown
    with Session(store, [MODULE], readonly=True) as session:
        assert session.raw("aside").quarantined is None
    token, version = csrf_of(c, "aside", "unquarantine")  # again: it does not apply
    again = c.post("/sagas/aside/unquarantine", data={"csrf": token, "version": version})
    assert again.status_code == 409 and "is not quarantined: nothing to lift" in again.text


def test_incidents_on_the_list_and_the_sagas_pages(store: str) -> None:
    c = client(create_app(store, [MODULE], operator="ann"))
    listed = c.get("/sagas?incidents=1").text
    kinds = dict(re.findall(r'<a href="/sagas/([^"]+)">[^<]*</a></td>'
                            r'<td class="problem incident-kind">([^<]*)</td>', listed))
    assert kinds == {"failed": "failed", "aside": "quarantined"}
    assert ids_of(c.get("/sagas?incidents=1&status=FAILED").text) == ["failed"]
    assert c.get("/sagas?incidents=maybe").status_code == 400

    failed = c.get("/sagas/failed").text
    assert re.search(r'id="incident-kind">failed<', failed)
    assert re.search(r'id="incident-id">failed/failed/\d+<', failed)
    assert "card declined" in failed  # the reason
    assert re.search(r'<ul id="not-undone"><li>reserve: [^<]*release down', failed)
    aside = c.get("/sagas/aside").text
    assert re.search(r'id="incident-kind">quarantined<', aside) and "the disk lied" in aside
    assert 'id="incident"' not in c.get("/sagas/running").text  # no threshold: not stalled
    assert 'id="incident"' not in c.get("/sagas/done").text

    stalled = client(create_app(store, [MODULE], stalled_after=0))
    assert re.search(r'id="incident-kind">stalled<', stalled.get("/sagas/running").text)
    assert 'id="incident"' not in stalled.get("/sagas/waiting").text  # parked: waiting
    listed = stalled.get("/sagas?incidents=on").text
    assert sorted(ids_of(listed)) == ["aside", "failed", "running"]


def test_the_ui_command_passes_stalled_after_on(store: str, monkeypatch) -> None:
    import uvicorn

    served: list = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: served.append(app))
    result = CliRunner().invoke(main, ["ui", "--store", store, "--import", MODULE,
                                       "--stalled-after", "0"])
    assert result.exit_code == 0, result.output
    page = client(served[0]).get("/sagas/running").text
    assert re.search(r'id="incident-kind">stalled<', page)


def test_an_incident_after_the_pivot_names_what_to_finish_not_what_to_undo(
    tmp_path: Path,
) -> None:
    import ui_sagas

    from sagaflow import Orchestrator
    from sagaflow.stores import SQLiteStore

    path = tmp_path / "ship.db"
    with Orchestrator(SQLiteStore(path)) as orch:
        ui_sagas.broken.add("notify")
        try:
            orch.run(ui_sagas.Ship(), "shipped")
        finally:
            ui_sagas.broken.clear()
    page = client(create_app(f"sqlite:///{path}", [MODULE])).get("/sagas/shipped").text
    assert re.search(r"<th>could not be finished</th><td><ul id=\"not-undone\"><li>notify<",
                     page)
    assert "could not be undone" not in page


def test_an_incident_with_failed_compensations_names_what_could_not_be_undone(
    store: str,
) -> None:
    page = client(create_app(store, [MODULE])).get("/sagas/failed").text
    assert "<th>could not be undone</th>" in page
