"""The dashboard in a real browser: Debian's headless Chromium driven by Selenium,
against the server running on a free port in a thread. Listing, filtering, paging, a
saga's page, each action through its confirmation, CSRF refusal, escaping, the
version conflict.

Without Chromium these tests skip, except under CI=true, where they fail
(``.ci/run`` installs ``chromium chromium-driver``)."""

from __future__ import annotations

import os
import shutil
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import ui_sagas
from conftest import MODULE, XSS, fill

from sagaflow.cli.session import Session
from sagaflow.records import SagaStatus
from sagaflow.ui import create_app
from sagaflow.ui.serve import chromium, served

pytest.importorskip("selenium")
if not (shutil.which("chromium") and shutil.which("chromedriver")):
    if os.environ.get("CI"):
        pytest.fail("CI: chromium and chromium-driver are needed (apt-get install chromium "
                    "chromium-driver)", pytrace=False)
    pytest.skip("no chromium/chromedriver: apt-get install chromium chromium-driver",
                allow_module_level=True)

from selenium.common.exceptions import WebDriverException
from selenium.webdriver.common.by import By
from selenium.webdriver.support.expected_conditions import staleness_of
from selenium.webdriver.support.ui import WebDriverWait


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    driver = chromium()
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def site(tmp_path: Path) -> Iterator[tuple[str, str]]:
    """The dashboard over a filled store; its pages do not reload themselves (a reload
    would replace what a test is about to click)."""
    path = tmp_path / "sagas.db"
    fill(path, extra=55, acting=True)
    url = f"sqlite:///{path}"
    with served(create_app(url, [MODULE], operator="ann", refresh=0)) as base:
        yield base, url


def status_of(store: str, saga_id: str) -> SagaStatus:
    with Session(store, [MODULE], readonly=True) as session:
        return session.record(saga_id)[0].status


def click(browser: Any, by: str, what: str) -> None:
    """Click what navigates, and wait until the next page replaced this one."""
    page = browser.find_element(By.TAG_NAME, "html")
    browser.find_element(by, what).click()
    # Asked mid-navigation, chromedriver may answer "unhandled inspector error" (the old
    # document's context is being torn down) instead of "stale element": ask again.
    WebDriverWait(browser, 10, ignored_exceptions=[WebDriverException]).until(
        staleness_of(page)
    )


def ids(browser: Any) -> list[str]:
    return [a.text for a in browser.find_elements(By.CSS_SELECTOR, "tr.saga td:first-child a")]


def test_listing_filtering_and_paging(browser: Any, site: tuple[str, str]) -> None:
    base, _ = site
    browser.get(base + "/sagas")
    assert browser.find_element(By.ID, "count-COMPLETED").text == "57"
    first = ids(browser)
    assert len(first) == 50
    click(browser, By.ID, "next")
    second = ids(browser)
    assert len(second) == 11 and not set(first) & set(second)
    assert not browser.find_elements(By.ID, "next")
    click(browser, By.ID, "previous")
    assert ids(browser) == first
    assert not browser.find_elements(By.ID, "previous")  # the first page has none
    click(browser, By.ID, "next")
    click(browser, By.ID, "first")
    assert ids(browser) == first

    browser.find_element(By.CSS_SELECTOR, "#f-status option[value=FAILED]").click()
    click(browser, By.ID, "f-apply")
    assert ids(browser) == ["failed"]
    assert "status=FAILED" in browser.current_url
    browser.get(base + "/sagas")
    browser.find_element(By.ID, "f-q").send_keys("runn")
    click(browser, By.ID, "f-apply")
    assert ids(browser) == ["running"]


def test_a_sagas_page_and_escaping(browser: Any, site: tuple[str, str]) -> None:
    base, _ = site
    browser.get(base + "/sagas?q=failed")
    click(browser, By.LINK_TEXT, "failed")
    assert browser.find_element(By.ID, "status").text == "FAILED"
    assert "card declined" in browser.find_element(By.ID, "steps").text
    assert browser.find_elements(By.CSS_SELECTOR, "#diagram svg")
    incident = browser.find_element(By.ID, "incident").text
    assert "release down" in incident and "failed/failed/" in incident

    browser.get(base + "/sagas/xss")
    assert XSS in browser.find_element(By.ID, "data").text  # shown as text...
    assert not browser.find_elements(By.CSS_SELECTOR, "#data script")  # ...not run
    browser.get(base + "/sagas/nope")
    assert "there is no saga 'nope'" in browser.find_element(By.ID, "message").text


def confirm(browser: Any, base: str, saga_id: str, verb: str, note: str = "") -> None:
    browser.get(f"{base}/sagas/{saga_id}")
    click(browser, By.ID, f"act-{verb}")
    assert verb.capitalize() in browser.find_element(By.ID, "question").text
    if note:
        browser.find_element(By.ID, "note").send_keys(note)
    click(browser, By.ID, "confirm")


def test_each_action_through_its_confirmation(browser: Any, site: tuple[str, str]) -> None:
    base, store = site
    # going back from the confirmation does nothing
    browser.get(f"{base}/sagas/running")
    click(browser, By.ID, "act-cancel")
    click(browser, By.ID, "back")
    assert status_of(store, "running") is SagaStatus.RUNNING

    confirm(browser, base, "running", "cancel", "stuck since noon")
    assert browser.find_element(By.ID, "done").text == "cancel: now COMPENSATED"
    assert "by ann: stuck since noon" in browser.find_element(By.ID, "history").text

    ui_sagas.broken.add("release")  # still down: the retry fails again
    try:
        confirm(browser, base, "failed", "retry")
    finally:
        ui_sagas.broken.clear()
    assert browser.find_element(By.ID, "done").text == "retry: now FAILED"  # still down
    assert "OperatorAction retry: by ann" in browser.find_element(By.ID, "history").text

    confirm(browser, base, "failed", "resolve", "released by hand")
    assert browser.find_element(By.ID, "done").text.startswith("resolve: now")
    assert "released by hand" in browser.find_element(By.ID, "resolution").text

    browser.get(f"{base}/sagas/done/confirm/retry")  # does not apply: the engine says why
    click(browser, By.ID, "confirm")
    assert browser.find_element(By.ID, "problem").text == "Refused: retry"
    assert "COMPLETED" in browser.find_element(By.ID, "message").text
    assert status_of(store, "done") is SagaStatus.COMPLETED


def test_the_version_conflict(browser: Any, site: tuple[str, str]) -> None:
    base, store = site
    browser.get(f"{base}/sagas/running/confirm/cancel")  # drawn now...
    second = chromium()
    try:  # ...another operator cancels it meanwhile
        confirm(second, base, "running", "cancel")
    finally:
        second.quit()
    click(browser, By.ID, "confirm")
    assert browser.find_element(By.ID, "problem").text == "Refused: the saga changed"
    assert "nothing was done" in browser.find_element(By.ID, "message").text
    assert status_of(store, "running") is SagaStatus.COMPENSATED


def test_a_post_without_the_csrf_token_is_refused(browser: Any, site: tuple[str, str]) -> None:
    base, store = site
    browser.get(f"{base}/sagas/running")  # a browser session exists; the POST is not its
    version = browser.find_element(By.ID, "version").text
    body = urllib.parse.urlencode({"version": version, "note": "x"}).encode()
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(f"{base}/sagas/running/cancel", data=body, timeout=10)
    assert refused.value.code == 403
    assert status_of(store, "running") is SagaStatus.RUNNING


def test_a_saga_class_page_from_the_list(browser: Any, site: tuple[str, str]) -> None:
    base, _ = site
    browser.get(base + "/sagas?q=waiting")
    click(browser, By.CSS_SELECTOR, "tr.saga a.class")
    assert browser.find_element(By.ID, "class-name").text == "approve"
    definition = browser.find_element(By.ID, "definition").text
    assert "signal approval (Approval)" in definition and "pivot" in definition
    assert browser.find_elements(By.CSS_SELECTOR, "#diagram svg")
    assert browser.find_element(By.ID, "count-RUNNING").text == "1"
    click(browser, By.ID, "link-RUNNING")
    assert ids(browser) == ["waiting"]


def test_a_running_sagas_page_shows_it_moving_on(browser: Any, tmp_path: Path) -> None:
    path = tmp_path / "sagas.db"
    fill(path, acting=True)
    store = f"sqlite:///{path}"
    with served(create_app(store, [MODULE], refresh=1)) as base:
        watch_it_move_on(browser, base, store)


def shown(browser: Any) -> tuple[str, bool, str] | None:
    """The page's status, whether it says it reloads, and its history, read at once (in
    one script: a reload cannot come in between); ``None`` while a reload is under way."""
    try:
        got = browser.execute_script(
            "const t = id => document.getElementById(id);"
            "return t('status') && t('history') ? "
            "[t('status').textContent, !!t('refreshing'), t('history').textContent] : null")
    except WebDriverException:
        return None
    return None if got is None else (got[0], got[1], got[2])


def watch_it_move_on(browser: Any, base: str, store: str) -> None:
    browser.get(base + "/sagas/waiting")
    status, reloading, history = WebDriverWait(browser, 10).until(shown)
    assert status == "RUNNING" and reloading and "ship" not in history
    with Session(store, [MODULE], readonly=False) as session:  # elsewhere, it goes on
        session.signal("waiting", "approval", {"by": "cy", "amount": 3})
    status, reloading, history = WebDriverWait(browser, 30).until(
        lambda b: (now := shown(b)) is not None and now[0] == "COMPLETED" and now)
    assert "StepCompleted 'ship'" in history
    assert not reloading  # finished: no more reloads


def test_signal_and_unquarantine_through_their_confirmations(
    browser: Any, site: tuple[str, str],
) -> None:
    base, store = site
    browser.get(f"{base}/sagas/waiting")
    click(browser, By.ID, "act-signal")
    browser.find_element(By.ID, "payload").send_keys('{"by": "dee"}')
    click(browser, By.ID, "confirm")
    assert browser.find_element(By.ID, "problem").text == "Refused: signal"
    assert "does not fit" in browser.find_element(By.ID, "message").text
    assert status_of(store, "waiting") is SagaStatus.RUNNING

    browser.get(f"{base}/sagas/waiting")
    click(browser, By.ID, "act-signal")
    assert "Approval(by: str, amount: int)" in browser.find_element(By.ID, "signal").text
    browser.find_element(By.ID, "payload").send_keys('{"by": "dee", "amount": 9}')
    click(browser, By.ID, "confirm")
    assert browser.find_element(By.ID, "done").text == "signal approval: now COMPLETED"
    assert "(id by ann " in browser.find_element(By.ID, "history").text

    confirm(browser, base, "aside", "unquarantine", "disk replaced")
    assert browser.find_element(By.ID, "done").text.startswith("unquarantine: lifted")
    history = browser.find_element(By.ID, "history").text
    assert "OperatorAction unquarantine: by ann: disk replaced" in history
    assert not browser.find_elements(By.ID, "act-unquarantine")


def test_only_the_sagas_with_an_incident(browser: Any, site: tuple[str, str]) -> None:
    base, _ = site
    browser.get(base + "/sagas")
    browser.find_element(By.ID, "f-incidents").click()
    click(browser, By.ID, "f-apply")
    kinds = {row.find_element(By.CSS_SELECTOR, "td:first-child a").text:
             row.find_element(By.CSS_SELECTOR, "td.incident-kind").text
             for row in browser.find_elements(By.CSS_SELECTOR, "tr.saga")}
    assert kinds == {"failed": "failed", "aside": "quarantined"}
    click(browser, By.LINK_TEXT, "aside")
    assert browser.find_element(By.ID, "incident-kind").text == "quarantined"
