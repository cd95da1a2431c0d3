"""Workers on PostgreSQL: enqueue and wait, claims, leases and heartbeats, fencing,
takeover of a dead worker's sagas, parked retries, deadlines, graceful shutdown."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psycopg
import pytest
from pg_sagas import AHello, Flaky, Hello, Hurried, Slow, SlowSync, calls_of
from psycopg import sql
from wait_sagas import serving

from sagaflow import (
    SagaDeadlineExceeded,
    SagaflowError,
    SagaNotFound,
    SagaStatus,
    events,
)
from sagaflow.definition import spec_of
from sagaflow.engine import new_record
from sagaflow.stores import MemoryStore
from sagaflow.stores.postgres import PostgresStore
from sagaflow.worker import (
    Worker,
    aenqueue,
    current_lease,
    enqueue,
    enqueue_many,
    wait,
    wait_async,
)

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]


def kinds(*classes: type) -> dict[str, list[str]]:
    specs = [spec_of(c) for c in classes]
    return {"names": [s.name for s in specs], "fingerprints": [s.fingerprint for s in specs]}


def expire_leases(url: str, schema: str) -> None:
    """Make every lease in ``schema`` lapse, as if its worker had stalled that long."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(schema)))
        conn.execute("UPDATE sagaflow_sagas SET lease_until = now() - interval '1s', "
                     "run_at = 0 WHERE owner IS NOT NULL")


def test_enqueued_sagas_run_on_a_worker_and_wait_returns_their_results(
    pg_store: PostgresStore,
) -> None:
    plain = [enqueue(pg_store, Hello(who=f"p{i}")) for i in range(10)]
    failing = enqueue(pg_store, AHello(fail=True), "refused-1")
    fine = enqueue_many(pg_store, [AHello() for _ in range(10)])
    assert failing == "refused-1"
    worker = Worker(pg_store, [Hello, AHello], poll=0.05)
    with serving(worker):
        results = [wait(pg_store, sid, timeout=30) for sid in [*plain, *fine]]
        refused = wait(pg_store, failing, timeout=30)
    assert all(r.ok for r in results)
    assert results[0].data == Hello(who="p0", greeted=True)
    assert refused.status is SagaStatus.COMPENSATED and "refused" in str(refused.error)
    assert worker.stats.finished == {"COMPLETED": 20, "COMPENSATED": 1}
    # Each step saw the lease it ran under: this worker's, with the claim's token.
    for sid in (plain[0], fine[0], failing):
        seen = calls_of(sid)
        assert seen and all(owner == worker.id and token == 1 for *_, token, owner in seen)
    assert [c[1] for c in calls_of(failing)] == ["greet", "finish", "ungreet"]
    stored = pg_store.load_raw(plain[0])
    assert stored is not None and stored.owner is None and stored.run_at is None
    assert current_lease() is None  # outside a worker's saga


def test_enqueue_again_returns_the_id_and_runs_nothing_twice(pg_store: PostgresStore) -> None:
    sid = enqueue(pg_store, Hello(who="once"), "same-id")
    assert enqueue(pg_store, Hello(who="twice"), "same-id") == sid
    with pytest.raises(SagaflowError, match="saga ids must be unique across saga types"):
        enqueue(pg_store, AHello(), "same-id")
    with pytest.raises(ValueError, match="saga_id must be a non-empty string"):
        enqueue(pg_store, Hello(), "")
    with serving(Worker(pg_store, [Hello], poll=0.05)):
        result = wait(pg_store, sid, timeout=30)
    assert result.data.who == "once" and len(calls_of(sid)) == 2


def test_the_async_client_enqueues_and_waits(pg_store: PostgresStore) -> None:
    async def client() -> list[SagaStatus]:
        ids = await asyncio.gather(*(aenqueue(pg_store, AHello()) for _ in range(5)))
        results = await asyncio.gather(*(wait_async(pg_store, i, timeout=30) for i in ids))
        return [r.status for r in results]

    with serving(Worker(pg_store, [AHello], poll=0.05)):
        assert asyncio.run(client()) == [SagaStatus.COMPLETED] * 5


def test_wait_names_unknown_ids_and_gives_up_after_its_timeout(
    pg_store: PostgresStore,
) -> None:
    with pytest.raises(SagaNotFound):
        wait(pg_store, "no-such-saga", timeout=1)
    sid = enqueue(pg_store, Hello())  # no worker runs it
    with pytest.raises(TimeoutError, match=r"did not finish within 0.05s \(it is RUNNING\)"):
        wait(pg_store, sid, timeout=0.05)
    with pytest.raises(TimeoutError):
        asyncio.run(wait_async(pg_store, sid, timeout=0.05))


def test_queues_need_the_postgres_store_and_workers_need_saga_classes(
    pg_store: PostgresStore,
) -> None:
    with pytest.raises(TypeError, match="queued sagas need the PostgreSQL store"):
        enqueue(MemoryStore(), Hello())
    with pytest.raises(TypeError, match=r"a worker serves a SQLite file .* or a PostgreSQL"):
        Worker(MemoryStore(), [Hello])
    with pytest.raises(ValueError, match="heartbeat must be > 0 and shorter than the lease"):
        Worker(pg_store, [Hello], lease=1, heartbeat=2)
    with pytest.raises(ValueError, match="knows no saga classes"):
        asyncio.run(Worker(pg_store).serve())


def test_a_long_retry_goes_back_to_the_queue_and_is_run_when_due(
    pg_store: PostgresStore,
) -> None:
    sid = enqueue(pg_store, Flaky(failures=2))  # two retries, 0.3 s and 0.6 s away
    worker = Worker(pg_store, [Flaky], poll=0.02, park_after=0.1)
    with serving(worker):
        result = wait(pg_store, sid, timeout=30)
    assert result.ok and result.steps[0].attempts == 3
    assert worker.stats.parked == 2 and worker.stats.released == 2
    # Never before its time: each attempt started once its retry was due.
    retrying = [e for e in result.history if isinstance(e, events.StepRetrying)]
    started = [e for e in result.history if isinstance(e, events.StepStarted)]
    for before, after in zip(retrying, started[1:], strict=True):
        assert after.at >= before.at + before.delay
    # Each attempt ran under a new claim of the saga, so under a new token.
    tokens = [token for _, what, _, token, _ in calls_of(sid) if what == "call"]
    assert tokens == sorted(tokens) and len(set(tokens)) == 3


def test_a_saga_due_later_is_not_claimed_before(pg_store: PostgresStore) -> None:
    now = time.time()
    enqueue(pg_store, Hello(), "later", run_at=now + 3600)
    assert pg_store.claim("w", 10, lease=30, now=now, **kinds(Hello)) == []
    [claimed] = pg_store.claim("w", 10, lease=30, now=now + 3601, **kinds(Hello))
    assert claimed.saga_id == "later"


def test_next_due_finds_the_worker_s_saga_behind_many_it_cannot_take(
    pg_store: PostgresStore,
) -> None:
    # next_due looks at the queue's first rows in run_at order first, then at all of it.
    now = time.time()
    others = [new_record(spec_of(Hello), Hello(), f"h{k}", now) for k in range(300)]
    pg_store.enqueue_many(others, run_at=now + 60)
    mine = kinds(AHello)
    assert pg_store.next_due(**mine) is None
    enqueue(pg_store, AHello(), "a1", run_at=now + 3600)
    enqueue(pg_store, AHello(), "a2", run_at=now + 7200)
    assert pg_store.next_due(**mine) == now + 3600
    assert pg_store.next_due(**mine, exclude=["a1"]) == now + 7200
    assert pg_store.next_due(**kinds(Hello)) == now + 60


def test_a_dead_worker_s_saga_is_taken_over_when_its_lease_expires(
    pg_url: str, schema: str, pg_store: PostgresStore
) -> None:
    sid = enqueue(pg_store, AHello())
    [dead] = pg_store.claim("dead-worker", 1, lease=30, now=time.time(), **kinds(AHello))
    worker = Worker(pg_store, [AHello], poll=0.02)
    with serving(worker):
        with pytest.raises(TimeoutError):  # held by the dead worker's live lease
            wait(pg_store, sid, timeout=0.3)
        expire_leases(pg_url, schema)
        result = wait(pg_store, sid, timeout=30)
    assert result.ok
    assert {token for *_, token, _ in calls_of(sid)} == {dead.fence + 1}
    # The dead worker, back from the dead, can change nothing.
    assert not pg_store.release(sid, dead.fence, time.time())


def test_a_saga_past_its_deadline_is_compensated_by_whoever_takes_it_over(
    pg_url: str, schema: str, pg_store: PostgresStore
) -> None:
    sid = enqueue(pg_store, Hurried())
    pg_store.claim("dead-worker", 1, lease=30, now=time.time(), **kinds(Hurried))
    time.sleep(0.6)  # the saga's half-second deadline passes while the dead worker holds it
    expire_leases(pg_url, schema)
    with serving(Worker(pg_store, [Hurried], poll=0.02)):
        result = wait(pg_store, sid, timeout=30)
    assert result.status is SagaStatus.COMPENSATED
    assert isinstance(result.error, SagaDeadlineExceeded)
    assert calls_of(sid) == []  # no step started past the deadline


def test_heartbeats_keep_a_long_step_s_lease_alive(pg_store: PostgresStore) -> None:
    sid = enqueue(pg_store, Slow(seconds=2.0))
    one = Worker(pg_store, [Slow], poll=0.02, lease=1.0, heartbeat=0.1)
    other = Worker(pg_store, [Slow], poll=0.02, lease=1.0, heartbeat=0.1)
    with serving(one), serving(other):
        result = wait(pg_store, sid, timeout=30)
    assert result.ok
    assert [c[1] for c in calls_of(sid)] == ["work", "worked"]  # never taken over
    assert one.stats.lost == other.stats.lost == 0
    assert one.stats.claimed + other.stats.claimed == 1


def test_a_paused_worker_cannot_overwrite_the_saga_s_new_owner(
    pg_url: str, schema: str, pg_store: PostgresStore
) -> None:
    """A worker stalls past its lease in the middle of a step; another takes the saga
    over and finishes it; the first one's late checkpoint is refused, and it stops."""
    sid = enqueue(pg_store, SlowSync(seconds=1.0))
    # concurrency=1: busy with this saga, it claims nothing more (not even it, again).
    stalled = Worker(pg_store, [SlowSync], poll=0.02, lease=30, concurrency=1)
    with serving(stalled):
        while not calls_of(sid):  # its step has started
            time.sleep(0.01)
        stalled.mode._heartbeat_stop.set()  # type: ignore[attr-defined]  # as if paused
        expire_leases(pg_url, schema)
        rescuer = Worker(pg_store, [SlowSync], poll=0.02)
        with serving(rescuer):
            result = wait(pg_store, sid, timeout=30)
        deadline = time.monotonic() + 10
        while stalled.stats.lost == 0 and time.monotonic() < deadline:
            time.sleep(0.02)
    assert result.ok and stalled.stats.lost == 1 and rescuer.stats.finished["COMPLETED"] == 1
    final = pg_store.load(sid)
    assert final is not None and final.status is SagaStatus.COMPLETED
    assert final.history == list(result.history)  # the new owner's record, untouched
    tokens = sorted({token for *_, token, _ in calls_of(sid)})
    assert tokens == [1, 2]  # the step ran under both leases: at least once, never lost


def test_stopping_lets_running_sagas_finish_within_the_grace_period(
    pg_store: PostgresStore,
) -> None:
    sid = enqueue(pg_store, Slow(seconds=0.5))
    worker = Worker(pg_store, [Slow], poll=0.02)
    with serving(worker, grace=30):
        while not calls_of(sid):
            time.sleep(0.01)
    assert pg_store.status_of(sid) is SagaStatus.COMPLETED
    assert worker.stats.released == 0


def test_stopping_releases_what_is_still_running_after_the_grace_period(
    pg_store: PostgresStore,
) -> None:
    sid = enqueue(pg_store, Slow(seconds=30.0))
    waiting = enqueue(pg_store, Flaky(failures=1))  # its retry sleeps in the worker
    worker = Worker(pg_store, [Slow, Flaky], poll=0.02, park_after=5)
    with serving(worker, grace=0.2):
        while not (calls_of(sid) and calls_of(waiting)):
            time.sleep(0.01)
    assert worker.stats.released == 2
    for saga_id in (sid, waiting):
        stored = pg_store.load_raw(saga_id)
        assert stored is not None
        assert stored.status == "RUNNING" and stored.owner is None and stored.queued
    # Nothing was compensated: the cancelled run could not write after the release.
    assert [c[1] for c in calls_of(sid)] == ["work"]
    assert pg_store.load(sid).steps[0].status.value == "RUNNING"
    # Another worker picks them up.
    with serving(Worker(pg_store, [Slow, Flaky], poll=0.02), grace=0):
        assert wait(pg_store, waiting, timeout=30).ok


def test_sigterm_stops_a_worker_process_which_releases_its_sagas(
    store_url: str, pg_store: PostgresStore
) -> None:
    sid = enqueue(pg_store, Slow(seconds=60.0))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), str(ROOT)])}
    child = subprocess.Popen(
        [sys.executable, "-m", "sagaflow", "worker", "--store", store_url, "--import",
         "pg_sagas", "--poll", "0.02", "--grace", "0.3", "-v"],
        env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while (pg_store.load_raw(sid).owner is None) and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.1)
        child.send_signal(signal.SIGTERM)
        _, err = child.communicate(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
    assert child.returncode == 0, err
    assert "stopped; claimed 1;" in err and "released 1" in err
    stored = pg_store.load_raw(sid)
    assert stored is not None and stored.owner is None and stored.status == "RUNNING"


def test_the_worker_command_explains_what_is_missing(store_url: str) -> None:
    from click.testing import CliRunner

    from sagaflow.cli import main

    runner = CliRunner()
    env = {"SAGAFLOW_STORE": ""}
    cases = [
        (["worker", "--import", "pg_sagas"], "no store given"),
        (["worker", "--store", store_url], "no saga classes: pass --import MODULE"),
        (["worker", "--store", "memory://", "--import", "pg_sagas"],
         "a worker serves a PostgreSQL database (postgresql://user@host/db) or a SQLite file"),
        (["worker", "--store", "sqlite:///:memory:", "--import", "pg_sagas"],
         "a worker serves a SQLite file, not an in-memory database"),
    ]
    for args, message in cases:
        done = runner.invoke(main, args, env=env)
        assert done.exit_code == 2 and message in done.output, done.output


def test_a_saga_of_another_definition_is_left_to_workers_that_know_it(
    pg_store: PostgresStore,
) -> None:
    record = new_record(spec_of(Hello), Hello(), "other-def", time.time())
    record.fingerprint = "an-older-definition"
    pg_store.enqueue(record)
    assert pg_store.claim("w", 5, lease=30, now=time.time() + 1, **kinds(Hello)) == []
    migrated = kinds(Hello)
    migrated["fingerprints"].append("an-older-definition")
    assert len(pg_store.claim("w", 5, lease=30, now=time.time() + 1, **migrated)) == 1


@pytest.mark.parametrize(
    "damage",
    ["steps = 'not json'", "cursor = 7", "state = 'nowhere'"],
)
def test_a_damaged_row_is_quarantined_not_claimed_in_a_loop(
    pg_url: str, schema: str, pg_store: PostgresStore, damage: str
) -> None:
    bad = enqueue(pg_store, Hello(who="bad"))
    good = enqueue(pg_store, Hello(who="good"))
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(schema)))
        conn.execute(f"UPDATE sagaflow_sagas SET {damage} WHERE saga_id = %s", (bad,))
    # Released for a retry in 10 ms, as before, it would be claimed again and again.
    worker = Worker(pg_store, [Hello], poll=0.02, retry_later=0.01)
    with serving(worker):
        assert wait(pg_store, good, timeout=30).ok
        deadline = time.monotonic() + 30
        while worker.stats.quarantined == 0 and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.5)  # some 25 polls: a loop would claim it again meanwhile
    assert worker.stats.claimed == 2 and worker.stats.quarantined == 1
    assert calls_of(bad) == []
    [held] = pg_store.quarantined()
    assert held.saga_id == bad and "CorruptRecord" in held.reason
    stored = pg_store.load_raw(bad)
    assert stored is not None and stored.owner is None and stored.quarantined == held.reason
    # an operator lifts it: claimed again (and quarantined again, still damaged)
    assert pg_store.unquarantine(bad)
    assert [s.saga_id for s in pg_store.claim(
        "w", 5, lease=30, now=time.time() + 1, **kinds(Hello))] == [bad]


def test_a_second_stop_releases_at_once(pg_store: PostgresStore) -> None:
    sid = enqueue(pg_store, Slow(seconds=30.0))
    worker = Worker(pg_store, [Slow], poll=0.02, grace=300)
    thread = threading.Thread(target=worker.run, daemon=True)  # not the main thread
    thread.start()
    while not calls_of(sid):
        time.sleep(0.01)
    worker.stop()  # graceful: would wait up to 300 s for the saga
    time.sleep(0.2)
    assert thread.is_alive()
    worker.stop(grace=0)  # as a second SIGTERM does
    thread.join(timeout=30)
    assert not thread.is_alive() and worker.stats.released == 1
    stored = pg_store.load_raw(sid)
    assert stored is not None and stored.owner is None and stored.status == "RUNNING"


def test_listeners_hear_each_event_once_across_parking(pg_store: PostgresStore) -> None:
    heard: list[str] = []
    sid = enqueue(pg_store, Flaky(failures=1))
    worker = Worker(pg_store, [Flaky], poll=0.02, park_after=0.1,
                    listeners=[lambda event: heard.append(type(event).__name__)])
    with serving(worker):
        result = wait(pg_store, sid, timeout=30)
    assert worker.stats.parked == 1
    assert heard == [type(e).__name__ for e in result.history]
    assert heard[0] == "SagaStarted" and heard.count("StepStarted") == 2


def test_orchestrator_start_and_wait_go_through_the_queue(pg_store: PostgresStore) -> None:
    from sagaflow import Orchestrator

    client = Orchestrator(store=pg_store)
    sid = client.start(Hello(who="queued"))
    assert client.start(Hello(who="queued"), sid) == sid  # starting it again runs nothing
    worker = Worker(pg_store, [Hello], poll=0.05)
    with serving(worker):
        result = client.wait(sid, timeout=30)

        async def also_async() -> str:
            other = await client.astart(Hello(who="async"))
            return (await client.await_result(other, timeout=30)).status.value

        assert asyncio.run(also_async()) == "COMPLETED"
    assert result.ok and result.data == Hello(who="queued", greeted=True)
