"""The dashboard's server time with 1,000 and with 100,000 sagas in the store, on SQLite
and on PostgreSQL: the list page (unfiltered, and with each filter) and a saga's page.

``python -m benchmarks ui [--quick]`` (``./run.sh bench ui``), or
``python -m benchmarks.ui [--quick] [--sizes 1000,100000]``.

Each page is asked of the dashboard's ASGI app in this process (no socket, no browser:
the time is the server's, from the request to the last byte of the answer), the median
of ``rounds`` requests after a warm-up; the app keeps its store session open, as the
served dashboard does. The figure is each page's time with the large store against the
same page with the small one: it should stay near 1 (a page costs its size, not the
store's).

The stores are filled fast: five sagas of a small order saga are run for real
(completed, compensated, rejected, failed with what it could not undo, left running by
a crash), and their rows, as the store encoded them, are copied in one transaction with
a new id, start time (one a minute, the newest now), business key and update time each:
80% completed, 10% compensated, 5% rejected, 3% failed, 2% running, interleaved. The
PostgreSQL tables are VACUUMed and ANALYZEd after (as autovacuum does to tables that
grew); SQLite's are not (sagaflow never runs ANALYZE there).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sqlite3
import statistics
import sys
import tempfile
import time
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs

from sagaflow import Orchestrator, Retry, SagaRejected, saga, step
from sagaflow.stores import open_store
from sagaflow.stores._rows import AT, COLUMNS

from .rows import Row, show

MINUTE = 60.0
ONCE = Retry(attempts=1)
#: The kinds of saga in the store, and how many of every 100 are of each.
MIX = (("running", 2), ("failed", 3), ("rejected", 5), ("compensated", 10), ("completed", 80))


class _Crash(BaseException):
    """The process dies in the middle of a step (the record stays RUNNING)."""


@saga(name="bench-order", key="order")
@attrs.define
class Order:
    order: str
    fail: str = ""

    @step
    def reserve(self, ctx: Any) -> None:
        pass

    @reserve.compensate(retry=ONCE)
    def release(self, ctx: Any) -> None:
        if self.fail == "failed":
            raise ConnectionError("the warehouse is down")

    @step(retry=ONCE)
    def charge(self, ctx: Any) -> None:
        if self.fail == "running":
            raise _Crash
        if self.fail == "rejected":
            raise SagaRejected("card declined")
        if self.fail in ("compensated", "failed"):
            raise ValueError("payment service error")

    @charge.compensate
    def refund(self, ctx: Any) -> None:
        pass

    @step(pivot=True)
    def ship(self, ctx: Any) -> None:
        pass


def templates(url: str) -> dict[str, tuple[Any, ...]]:
    """A saga of each kind run for real on ``url``; their rows as the store wrote them."""
    with Orchestrator(open_store(url)) as orch:
        for kind, _ in MIX:
            # A failed saga raises (and a crash is the process dying): its record counts.
            with contextlib.suppress(_Crash, Exception):
                orch.run(Order(f"t-{kind}", kind), f"template-{kind}")
    return {kind: read_row(url, f"template-{kind}") for kind, _ in MIX}


def read_row(url: str, saga_id: str) -> tuple[Any, ...]:
    columns = ", ".join(COLUMNS)
    if url.startswith("sqlite"):
        with sqlite3.connect(url.removeprefix("sqlite:///")) as conn:
            row = conn.execute(f"SELECT {columns} FROM sagaflow_sagas WHERE saga_id = ?",
                               (saga_id,)).fetchone()
    else:
        with _pg(url) as conn:
            row = conn.execute(f"SELECT {columns} FROM sagaflow_sagas WHERE saga_id = %s",
                               (saga_id,)).fetchone()
    assert row is not None, saga_id
    return tuple(row)


def _pg(url: str) -> Any:
    """A psycopg connection to the schema of the store ``url`` (``...&schema=NAME``)."""
    import psycopg
    from psycopg import sql

    base, _, query = url.partition("?")
    params = urllib.parse.parse_qs(query)
    schema = params.pop("schema")[0]
    conn = psycopg.connect(base + "?" + urllib.parse.urlencode(params, doseq=True))
    conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(schema)))
    return conn


def copies(rows: dict[str, tuple[Any, ...]], n: int, now: float) -> list[tuple[Any, ...]]:
    """``n`` copies of the template rows, as :data:`MIX` says: ids ``order-000000``...,
    one started a minute, the last one now."""
    bucket: list[str] = []
    for kind, share in MIX:
        bucket += [kind] * share
    out = []
    for i in range(n):
        kind = bucket[i % 100]
        row = list(rows[kind])
        started = now - (n - 1 - i) * MINUTE
        row[AT["saga_id"]] = f"order-{i:06d}"
        row[AT["business_key"]] = f"k-{i}"
        shift = started - row[AT["created_at"]]
        for column in ("created_at", "updated_at", "finished_at"):
            if row[AT[column]] is not None:
                row[AT[column]] += shift
        out.append(tuple(row))
    return out


def bulk_insert(url: str, rows: list[tuple[Any, ...]]) -> None:
    """``rows`` into the saga table, in one transaction."""
    columns = ", ".join(COLUMNS)
    if url.startswith("sqlite"):
        marks = ", ".join("?" * len(COLUMNS))
        with sqlite3.connect(url.removeprefix("sqlite:///")) as conn:
            conn.executemany(f"INSERT INTO sagaflow_sagas ({columns}) VALUES ({marks})", rows)
        return
    with _pg(url) as conn:
        with conn.cursor().copy(f"COPY sagaflow_sagas ({columns}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
        conn.commit()
        conn.autocommit = True
        # What autovacuum does to tables that grew (and to the counts' folded rows).
        conn.execute("VACUUM ANALYZE sagaflow_sagas")
        conn.execute("VACUUM ANALYZE sagaflow_counts")


# -- asking the app, in process ------------------------------------------------------------


class Asker:
    """Requests to an ASGI app on one event loop, timed from the call to the last byte."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.loop = asyncio.new_event_loop()

    def get(self, target: str) -> tuple[int, float, bytes]:
        path, _, query = target.partition("?")
        scope = {
            "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
            "method": "GET", "scheme": "http", "path": urllib.parse.unquote(path),
            "raw_path": path.encode(), "query_string": query.encode(), "root_path": "",
            "headers": [(b"host", b"bench")], "client": ("127.0.0.1", 1),
            "server": ("bench", 80),
        }
        answer: dict[str, Any] = {"body": []}

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                answer["status"] = message["status"]
            elif message["type"] == "http.response.body":
                answer["body"].append(message.get("body", b""))

        started = time.perf_counter()
        self.loop.run_until_complete(self.app(scope, receive, send))
        took = time.perf_counter() - started
        return answer["status"], took, b"".join(answer["body"])

    def close(self) -> None:
        self.loop.close()


def cases(n: int) -> list[tuple[str, str]]:
    """The pages asked: (what, target). The same targets for every store size: the
    business key, id text and saga are the ones of the middle of the small store."""
    some = "order-000500"
    return [
        ("list", "/sagas"),
        ("list, next page", "NEXT"),
        ("list status=FAILED", "/sagas?status=FAILED"),
        ("list class=bench-order", "/sagas?class=bench-order"),
        ("list outcome=rejected", "/sagas?outcome=rejected"),
        ("list outcome=compensated", "/sagas?outcome=compensated"),
        ("list key (one saga)", "/sagas?key=k-500"),
        ("list id text (many: 'order-0')", "/sagas?q=order-0"),
        ("list newer=1h", "/sagas?newer=1h"),
        ("list older=1h", "/sagas?older=1h"),
        ("list status+class+newer=1d", "/sagas?status=COMPLETED&class=bench-order&newer=1d"),
        ("list id text (one saga)", f"/sagas?q={some}"),
        ("saga page", f"/sagas/{some}"),
    ]


def measure(urls: dict[int, str], rounds: int) -> dict[int, dict[str, float]]:
    """Each case's median server time (ms) on each store, the stores asked in turn
    (request by request), so that what else the machine does weighs on both alike."""
    from sagaflow.ui import create_app

    apps = {n: create_app(url, ["benchmarks.ui:Order"]) for n, url in urls.items()}
    askers = {n: Asker(app) for n, app in apps.items()}
    found: dict[int, dict[str, float]] = {n: {} for n in urls}
    try:
        targets = {}
        for n, asker in askers.items():
            first = asker.get("/sagas")[2].decode()
            marker = first.find('id="next"')
            start = first.rfind('href="', 0, marker) + len('href="')
            targets[n] = first[start:first.find('"', start)].replace("&amp;", "&")
        for what, target in cases(0):
            times: dict[int, list[float]] = {n: [] for n in urls}
            for k in range(rounds + 3):
                for n, asker in askers.items():
                    asked = targets[n] if target == "NEXT" else target
                    status, took, body = asker.get(asked)
                    if status != 200:
                        raise RuntimeError(f"{asked}: {status}: {body[:400]!r}")
                    if k >= 3:  # after a warm-up
                        times[n].append(took)
            for n in urls:
                found[n][what] = statistics.median(times[n]) * 1000
    finally:
        for n, app in apps.items():
            app.state.kept.close()
            askers[n].close()
    return found


def filled(make_url: Callable[[str], str], sizes: list[int]) -> dict[int, str]:
    """A store of each size (its URL)."""
    out = {}
    for n in sizes:
        url = make_url(f"s{n}")
        rows = templates(url)
        started = time.perf_counter()
        bulk_insert(url, copies(rows, n, time.time()))
        print(f"  {n:,} sagas copied into {url.split('?')[0]} in "
              f"{time.perf_counter() - started:.1f}s")
        out[n] = url
    return out


def compare(store: str, urls: dict[int, str], rounds: int) -> list[Row]:
    small, large = min(urls), max(urls)
    times = measure(urls, rounds)
    print(f"\n{store}: server time per page (median of {rounds}), {large:,} sagas against "
          f"{small:,}")
    rows = []
    for what in times[small]:
        a, b = times[small][what], times[large][what]
        rows.append(Row(f"{what}", b, "ms", b / a, f"{a:.2f} ms at {small:,}",
                        target_max=1.5))
    show(rows)
    return rows


def report(quick: bool = False, directory: str | None = None,
           sizes: tuple[int, ...] | None = None) -> dict[str, list[Row]]:
    """Print the figures of both stores; return them (for the summary)."""
    wanted = sorted(sizes or (1_000, 100_000))
    rounds = 10 if quick else 30
    where = Path(tempfile.mkdtemp(prefix="sagaflow-bench-ui-", dir=directory))
    print(f"sagaflow dashboard: python {sys.version.split()[0]}, sqlite "
          f"{sqlite3.sqlite_version}, {os.cpu_count()} cpus, load {os.getloadavg()[0]:.1f}")
    figures: dict[str, list[Row]] = {}
    print("\nfilling the SQLite stores")
    urls = filled(lambda name: f"sqlite:///{where / name}.db", wanted)
    figures["ui sqlite"] = compare("SQLite", urls, rounds)
    from sagaflow.testing.pgcluster import PgCluster, find_binaries

    if find_binaries() is None:
        print("\nPostgreSQL skipped: no PostgreSQL server binaries")
        return figures
    with PgCluster() as cluster:
        print("\nfilling the PostgreSQL stores")
        base = cluster.create_database("bench")
        urls = filled(lambda name: f"{base}&schema={name}", wanted)
        figures["ui postgres"] = compare("PostgreSQL", urls, rounds)
    return figures


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m benchmarks.ui")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--sizes", default="1000,100000")
    args = parser.parse_args()
    report(args.quick, sizes=tuple(int(s) for s in args.sizes.split(",")))
