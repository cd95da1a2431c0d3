"""Four worker processes, one SIGKILLed every second or two and started again, drain
2,000 sagas with random failures (10,000 under SAGAFLOW_PROFILE=deep, in the slow
test): every saga ends terminal, none is lost, no step runs under a stale lease (the
participant's log carries the tokens), and every participant's net effect is exactly
once (each step done once, or done and undone once)."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest
from kill_sagas import TABLES, Transfer
from psycopg import sql

from sagaflow.stores.postgres import PostgresStore
from sagaflow.worker import enqueue_many

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
DEEP = os.environ.get("SAGAFLOW_PROFILE") == "deep"
WORKERS = 4
LEASE = 1.5


class Cluster:
    """The worker processes of one kill test, their logs, and the kills."""

    def __init__(self, url: str, schema: str, logs: Path) -> None:
        self.url = url
        self.schema = schema
        self.logs = logs
        self.procs: list[subprocess.Popen[bytes]] = []
        self.paths: dict[int, Path] = {}
        self.started = 0
        self.kills = 0
        self.env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(HERE), str(ROOT)]),
            "KILL_PG_URL": url,
            "KILL_PG_SCHEMA": schema,
        }

    def spawn(self) -> subprocess.Popen[bytes]:
        self.started += 1
        path = self.logs / f"worker-{self.started}.log"
        log = open(path, "wb")  # noqa: SIM115
        proc = subprocess.Popen(
            [sys.executable, "-m", "sagaflow", "worker", "--store",
             f"{self.url}&schema={self.schema}", "--import", "kill_sagas",
             "--concurrency", "16", "--lease", str(LEASE), "--poll", "0.05",
             "--park-after", "0.15", "--grace", "1", "-v"],
            env=self.env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
        )
        log.close()
        self.paths[proc.pid] = path
        return proc

    def start(self) -> None:
        self.procs = [self.spawn() for _ in range(WORKERS)]

    def kill_one(self, rng: random.Random) -> None:
        k = rng.randrange(len(self.procs))
        self.procs[k].send_signal(signal.SIGKILL)
        self.procs[k].wait()
        self.kills += 1
        self.procs[k] = self.spawn()

    def stop(self) -> list[int | None]:
        """SIGTERM every worker once it has started (a process killed by a signal
        before its Python code runs cannot exit cleanly: not what is tested here)."""
        for proc in self.procs:
            deadline = time.monotonic() + 30
            path = self.paths[proc.pid]
            while proc.poll() is None and time.monotonic() < deadline:
                if b": running " in path.read_bytes():
                    break
                time.sleep(0.02)
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        codes = []
        for proc in self.procs:
            try:
                codes.append(proc.wait(timeout=30))
            except subprocess.TimeoutExpired:
                proc.kill()
                codes.append(None)
        return codes

    def tail(self) -> str:
        out = []
        for path in sorted(self.logs.glob("worker-*.log"))[-6:]:
            lines = path.read_text(errors="replace").splitlines()[-15:]
            out.append(f"--- {path.name}\n" + "\n".join(lines))
        return "\n".join(out)


def query(conn: psycopg.Connection[Any], statement: str) -> list[tuple[Any, ...]]:
    return conn.execute(statement).fetchall()


def run_kill_test(pg_url: str, schema: str, tmp_path: Path, n: int, seed: int) -> None:
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
        conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(schema)))
        for statement in TABLES:
            conn.execute(statement)
    with PostgresStore(pg_url, schema=schema) as store:
        ids = enqueue_many(store, [Transfer() for _ in range(n)])
    rng = random.Random(seed)
    cluster = Cluster(pg_url, schema, tmp_path)
    cluster.start()
    deadline = time.monotonic() + (1800 if DEEP else 150)
    try:
        with psycopg.connect(pg_url, autocommit=True) as conn:
            conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(schema)))
            next_kill = time.monotonic() + rng.uniform(1.0, 2.0)
            while True:
                [(left,)] = query(conn, "SELECT count(*) FROM sagaflow_sagas WHERE status "
                                        "NOT IN ('COMPLETED', 'COMPENSATED', 'FAILED')")
                if left == 0:
                    break
                assert time.monotonic() < deadline, f"{left} sagas unfinished\n{cluster.tail()}"
                if time.monotonic() >= next_kill:
                    cluster.kill_one(rng)
                    next_kill = time.monotonic() + rng.uniform(1.0, 2.0)
                time.sleep(0.05)
    finally:
        codes = cluster.stop()
    assert codes == [0] * WORKERS, cluster.tail()
    assert cluster.kills >= 3, "the sagas finished before the test killed enough workers"

    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(schema)))
        # None lost: every saga enqueued is there, terminal, off the queue, readable.
        statuses = dict(query(conn, "SELECT status, count(*) FROM sagaflow_sagas GROUP BY 1"))
        assert sum(statuses.values()) == n and set(statuses) <= {"COMPLETED", "COMPENSATED"}
        assert statuses.get("COMPLETED", 0) > n // 2 and statuses.get("COMPENSATED", 0) > 0
        assert query(conn, "SELECT count(*) FROM sagaflow_sagas WHERE run_at IS NOT NULL "
                           "OR owner IS NOT NULL") == [(0,)]
        # Never two workers on a saga at once: the participant refused no stale token,
        # and along each saga's log the tokens never go back.
        rejected = query(conn, "SELECT * FROM kill_rejected")
        assert rejected == [], f"{rejected}\n{cluster.tail()}"
        assert query(conn, """SELECT count(*) FROM (SELECT token, lag(token) OVER
            (PARTITION BY saga_id ORDER BY id) AS before FROM kill_log) t
            WHERE token < before""") == [(0,)]
        [(taken_over,)] = query(conn, "SELECT count(*) FROM (SELECT saga_id FROM kill_log "
                                      "GROUP BY saga_id HAVING count(DISTINCT token) > 1) t")
        assert taken_over > 0  # the kills did hit sagas in flight
        [(calls,)] = query(conn, "SELECT count(*) FROM kill_log")
        print(f"\nkill test: {n} sagas {statuses}, {cluster.kills} kills, {taken_over} "
              f"sagas taken over, {calls} participant calls")
        # Exactly once: a completed saga's five effects, each once, nothing undone; a
        # compensated saga's effects each undone once: net nothing.
        wrong = query(conn, """
            SELECT s.saga_id, s.status, count(e.key) FILTER (WHERE e.direction = 'forward'),
                   count(e.key) FILTER (WHERE e.direction = 'compensate'),
                   coalesce(sum(e.amount), 0)
            FROM sagaflow_sagas s LEFT JOIN kill_effects e ON e.saga_id = s.saga_id
            GROUP BY s.saga_id, s.status
            HAVING NOT (
                (s.status = 'COMPLETED' AND count(e.key) FILTER (WHERE e.direction = 'forward') = 5
                 AND count(e.key) FILTER (WHERE e.direction = 'compensate') = 0
                 AND coalesce(sum(e.amount), 0) = 15)
             OR (s.status = 'COMPENSATED'
                 AND count(e.key) FILTER (WHERE e.direction = 'forward')
                     = count(e.key) FILTER (WHERE e.direction = 'compensate')
                 AND coalesce(sum(e.amount), 0) = 0))
            LIMIT 5""")
        assert wrong == [], wrong
    with PostgresStore(pg_url, schema=schema) as store:
        store.register(Transfer)
        for sid in random.Random(seed).sample(ids, 50):  # records decode, histories close
            record = store.load(sid)
            assert record is not None and record.history[-1].__class__.__name__ in (
                "SagaCompleted", "SagaCompensated")


def test_four_workers_killed_in_turn_lose_nothing_and_do_everything_once(
    pg_url: str, schema: str, tmp_path: Path
) -> None:
    run_kill_test(pg_url, schema, tmp_path, n=2_000, seed=7)


@pytest.mark.slow
def test_four_workers_killed_in_turn_deep(pg_url: str, schema: str, tmp_path: Path) -> None:
    run_kill_test(pg_url, schema, tmp_path, n=10_000 if DEEP else 4_000, seed=11)
