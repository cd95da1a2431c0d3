"""Waiting sagas the worker tests run, in the test process and in worker processes
(``--import wait_sagas``, with this folder on ``PYTHONPATH``), and what those tests
share: the calls their steps make, logged to a file every process appends to, and
signals sent from another process without resuming anything there.

    python wait_sagas.py signal STORE_URL SAGA_ID NAME JSON
        store signal NAME for saga SAGA_ID (checked like any signal), and exit
    python wait_sagas.py run STORE_URL CLASS SAGA_ID JSON
        run a saga of CLASS (its fields: JSON) in this process, until it parks or ends
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import attrs

from sagaflow import Orchestrator, SagaRejected, SagaStatus, saga, signals, step, timer, wait
from sagaflow.stores.sqlite import SQLiteStore
from sagaflow.worker import Worker

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
#: the file the steps log their calls to (every process appends to it)
LOG_ENV = "SAGAFLOW_WAIT_LOG"


def log_call(ctx: Any, what: str) -> None:
    path = os.environ.get(LOG_ENV)
    if path:
        with open(path, "a", encoding="utf-8") as f:
            f.write(f"{ctx.saga_id} {what} {os.getpid()}\n")


def calls(path: str | Path, saga_id: str) -> list[tuple[str, int]]:
    """The calls logged for ``saga_id``: (what, pid), in order."""
    if not os.path.exists(path):
        return []
    with open(path, encoding="utf-8") as f:
        rows = [line.split() for line in f if line.strip()]
    return [(what, int(pid)) for sid, what, pid in rows if sid == saga_id]


@attrs.frozen
class Decision:
    approved: bool
    by: str


@saga(name="w-approval", key="order")
@attrs.define
class Approval:
    """Reserves, waits up to three days for a decision, charges."""

    order: str = "o-1"
    approved_by: str | None = None

    @step
    async def reserve(self, ctx: Any) -> None:
        log_call(ctx, "reserve")

    @reserve.compensate
    async def release(self, ctx: Any) -> None:
        log_call(ctx, "release")

    @wait("decision", payload=Decision, timeout=timedelta(days=3))
    def decide(self, decision: Decision, ctx: Any) -> None:
        if not decision.approved:
            raise SagaRejected(f"refused by {decision.by}")
        self.approved_by = decision.by

    @step(pivot=True)
    async def charge(self, ctx: Any) -> None:
        log_call(ctx, "charge")


@saga(name="w-nap")
@attrs.define
class Nap:
    """Works for ``work`` seconds, then sleeps ``seconds`` (a durable timer), then ends."""

    seconds: float = 1.0
    work: float = 0.0

    @step(readonly=True, timeout=120)
    async def first(self, ctx: Any) -> None:
        log_call(ctx, "first")
        await asyncio.sleep(self.work)

    @timer(after=lambda s: s.seconds)
    def nap(self, ctx: Any) -> None:
        log_call(ctx, "woke")

    @step(pivot=True)
    async def last(self, ctx: Any) -> None:
        log_call(ctx, "last")


@saga(name="w-twice")
@attrs.define
class Twice:
    """Waits for signal ``one``, then for signal ``two``."""

    got: list[str] = attrs.field(factory=list)

    @wait("one", timeout=timedelta(days=3))
    def first(self, ctx: Any) -> None:
        log_call(ctx, "one")
        self.got.append("one")

    @wait("two", timeout=timedelta(days=3))
    def second(self, ctx: Any) -> None:
        log_call(ctx, "two")
        self.got.append("two")

    @step(pivot=True)
    async def last(self, ctx: Any) -> None:
        log_call(ctx, "last")


SAGAS = [Approval, Nap, Twice]


def environment(log: str | Path) -> dict[str, str]:
    """The environment of a process that imports this module and logs to ``log``."""
    path = os.pathsep.join([str(HERE), str(ROOT)])
    return {**os.environ, "PYTHONPATH": path, LOG_ENV: str(log)}


def start_worker(url: str, log: str | Path, *options: str,
                 env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    """``sagaflow worker`` on ``url`` in a process of its own, running these sagas
    (``env``: more of its environment)."""
    return subprocess.Popen(
        [sys.executable, "-m", "sagaflow", "worker", "--store", url, "--import", "wait_sagas",
         "-v", *options],
        env={**environment(log), **(env or {})}, cwd=ROOT, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
    )


def stop(child: subprocess.Popen[str], sig: int | None = None) -> str:
    """Stop ``child`` (SIGTERM, or ``sig``); what it wrote to stderr."""
    if child.poll() is None:
        if sig is None:
            child.terminate()
        else:
            child.send_signal(sig)
    try:
        _, err = child.communicate(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
    return err


def signal_from_another_process(url: str, saga_id: str, name: str, payload: Any,
                                log: str | Path) -> None:
    """Store a signal from a process of its own, which resumes nothing."""
    subprocess.run(
        [sys.executable, str(HERE / "wait_sagas.py"), "signal", url, saga_id, name,
         json.dumps(payload)],
        env=environment(log), cwd=ROOT, check=True, timeout=60,
    )


def park_here(db: Path, saga: object, saga_id: str) -> None:
    """Run ``saga`` in this process until it parks at its wait."""
    with Orchestrator(SQLiteStore(db), sagas=SAGAS) as orch:
        result = asyncio.run(orch.arun(saga, saga_id))
        assert result.status is SagaStatus.RUNNING
        assert orch.store.load(saga_id).waiting is not None
    orch.store.close()  # type: ignore[attr-defined]


@contextlib.contextmanager
def serving(worker: Worker, grace: float = 10.0) -> Iterator[Worker]:
    """Run ``worker`` in a thread for the ``with`` block; stop it (gracefully) after."""
    thread = threading.Thread(target=worker.run, kwargs={"handle_signals": False}, daemon=True)
    thread.start()
    try:
        yield worker
    finally:
        worker.stop(grace=grace)
        thread.join(timeout=60)
        assert not thread.is_alive(), "the worker did not stop"


def until(condition: Any, timeout: float = 30.0, what: str = "the condition") -> None:
    """Wait for ``condition()`` to hold (checked every 10 ms), at most ``timeout``."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {timeout:g}s")
        time.sleep(0.01)


def _signal(url: str, saga_id: str, name: str, payload: str) -> None:
    with Orchestrator(url, sagas=SAGAS) as orch:
        stored = signals.accept(orch.runtime, orch.spec_for, saga_id, name,
                                json.loads(payload), None)
    print(json.dumps({"seq": None if stored is None else stored.seq}))


def _run(url: str, cls: str, saga_id: str, fields: str) -> None:
    with Orchestrator(url, sagas=SAGAS) as orch:
        saga_object = globals()[cls](**json.loads(fields))
        result = asyncio.run(orch.arun(saga_object, saga_id))
    print(json.dumps({"status": result.status.value}))


def run_elsewhere(url: str, saga: Any, saga_id: str, log: str | Path) -> subprocess.Popen[str]:
    """Run ``saga`` in a process of its own (an application's), until it parks or ends."""
    fields = json.dumps(attrs.asdict(saga))
    return subprocess.Popen(
        [sys.executable, str(HERE / "wait_sagas.py"), "run", url, type(saga).__name__, saga_id,
         fields],
        env=environment(log), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True,
    )


def wait_for_line(child: subprocess.Popen[str], text: str, timeout: float = 60.0) -> list[str]:
    """Read ``child``'s stderr until a line with ``text``; the lines read."""
    assert child.stderr is not None
    lines: list[str] = []
    timer = threading.Timer(timeout, child.kill)  # a hang fails the test, not the suite
    timer.start()
    try:
        for line in child.stderr:
            lines.append(line)
            if text in line:
                return lines
    finally:
        timer.cancel()
    raise AssertionError(f"the process ended without saying {text!r}:\n{''.join(lines)}")


if __name__ == "__main__":
    import wait_sagas  # the classes as the workers know them, not __main__'s

    if sys.argv[1] == "signal":
        wait_sagas._signal(*sys.argv[2:6])
    elif sys.argv[1] == "run":
        wait_sagas._run(*sys.argv[2:6])
    else:
        raise SystemExit(f"unknown command {sys.argv[1]!r}")


def clone_parked(store: Any, seed: str, n: int, queued: bool = False) -> None:
    """Make ``n`` copies of parked saga ``seed`` (ids ``w1``.. ``wN``) in one statement,
    their wake times a second apart; ``queued``: in the PostgreSQL queue, due then."""
    from sagaflow.stores._rows import COLUMNS

    made = {"saga_id": "'w' || x", "wake_at": "wake_at + x", "business_key": "NULL"}
    columns = [*COLUMNS, *(["run_at"] if queued else [])]
    values = [made.get(c, c if c != "run_at" else "wake_at + x") for c in columns]
    store._transact(lambda run: run(
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < ?)"
        f" INSERT INTO sagaflow_sagas ({', '.join(columns)})"
        f" SELECT {', '.join(values)} FROM c, sagaflow_sagas WHERE saga_id = ?",
        (n, seed),
    ))
