"""The saga of the kill test, and its participant: a ledger in the same database.

Every step calls the participant with its idempotency key and the lease token it runs
under (:func:`sagaflow.worker.current_lease`). In one transaction the participant
checks the token against the saga's current one (a fencing check, ``FOR SHARE`` so
that no claim can slip in before it commits), applies the effect at most once per key
and appends a row to its log with the token. A call with a stale token changes
nothing and is counted in ``kill_rejected``.

Failures are decided by hashes, so a rerun after a kill meets the same ones:

- transient (ConnectionError, retried), on a step's or compensation's first attempt,
  before the participant is reached; step ``s2`` retries late enough to be parked;
- refusals by the participant of ``s3`` or ``s4`` (a business "no": the saga
  compensates), decided per saga and step. Like any idempotent participant, it
  answers a key it has already applied with success: a rerun after a kill, whose
  first run took effect, is never refused.

Transient failures only hit first attempts because the engine does not yet count an
attempt cut off by a crash as "outcome unknown": if every later attempt failed, the
saga would compensate without undoing what that attempt did (reported to the lead).

The participant's connection comes from ``KILL_PG_URL`` and ``KILL_PG_SCHEMA``.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from typing import Any

import attrs
from psycopg import sql
from psycopg_pool import ConnectionPool

from sagaflow import Retry, saga, step
from sagaflow.worker import current_lease

TABLES = (
    "CREATE TABLE kill_effects (key text PRIMARY KEY, saga_id text NOT NULL, "
    "step integer NOT NULL, direction text NOT NULL, amount integer NOT NULL)",
    "CREATE TABLE kill_log (id bigserial PRIMARY KEY, saga_id text NOT NULL, "
    "step integer NOT NULL, direction text NOT NULL, token bigint NOT NULL, "
    "pid integer NOT NULL, at timestamptz NOT NULL DEFAULT clock_timestamp())",
    "CREATE TABLE kill_rejected (saga_id text NOT NULL, step integer NOT NULL, "
    "token bigint, current bigint, pid integer NOT NULL, "
    "at timestamptz NOT NULL DEFAULT clock_timestamp())",
)

_pool: ConnectionPool[Any] | None = None
_pool_pid = 0
_guard = threading.Lock()


class StaleLease(Exception):
    """The participant refused a call made under a lease that is no longer current."""


def _connection_pool() -> ConnectionPool[Any]:
    global _pool, _pool_pid
    with _guard:
        if _pool is None or _pool_pid != os.getpid():
            schema = os.environ["KILL_PG_SCHEMA"]

            def configure(conn: Any) -> None:
                conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(schema)))
                conn.commit()

            _pool = ConnectionPool(
                os.environ["KILL_PG_URL"], min_size=1, max_size=16, configure=configure,
                open=True,
            )
            _pool_pid = os.getpid()
        return _pool


def _roll(*parts: object) -> int:
    text = ":".join(str(p) for p in parts)
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=4).digest(), "big") % 1000


def act(ctx: Any, index: int, *, may_refuse: bool = False) -> None:
    """Step ``index`` (1-5) or its compensation, as a participant sees it."""
    direction = ctx.direction.value
    roll = _roll(ctx.saga_id, index, direction, ctx.attempt)
    if ctx.attempt == 1 and roll < 80:
        raise ConnectionError("participant busy")
    refuse = may_refuse and _roll(ctx.saga_id, index, "refuse") < 60
    time.sleep((roll % 4) / 1000)  # the participant's own work
    lease = current_lease()
    token = None if lease is None else lease.token
    forward = direction == "forward"
    with _connection_pool().connection() as conn:
        row = conn.execute(
            "SELECT fence FROM sagaflow_sagas WHERE saga_id = %s FOR SHARE", (ctx.saga_id,)
        ).fetchone()
        current = None if row is None else row[0]
        if token is None or current != token:
            conn.rollback()
            conn.execute(
                "INSERT INTO kill_rejected VALUES (%s, %s, %s, %s, %s)",
                (ctx.saga_id, index, token, current, os.getpid()),
            )
            conn.commit()
            raise StaleLease(f"lease token {token} is stale (current: {current})")
        if forward:
            if refuse and conn.execute(
                "SELECT 1 FROM kill_effects WHERE key = %s", (ctx.idempotency_key,)
            ).fetchone() is None:
                conn.rollback()
                raise ValueError("participant refused")
            conn.execute(
                "INSERT INTO kill_effects VALUES (%s, %s, %s, 'forward', %s) "
                "ON CONFLICT (key) DO NOTHING",
                (ctx.idempotency_key, ctx.saga_id, index, index),
            )
        else:  # undo what was done, and tolerate that nothing was
            conn.execute(
                "INSERT INTO kill_effects SELECT %s, %s, %s, 'compensate', %s "
                "WHERE EXISTS (SELECT 1 FROM kill_effects WHERE saga_id = %s AND step = %s "
                "AND direction = 'forward') ON CONFLICT (key) DO NOTHING",
                (ctx.idempotency_key, ctx.saga_id, index, -index, ctx.saga_id, index),
            )
        conn.execute(
            "INSERT INTO kill_log (saga_id, step, direction, token, pid) "
            "VALUES (%s, %s, %s, %s, %s)",
            (ctx.saga_id, index, direction, token, os.getpid()),
        )
        conn.commit()


_FORWARD = Retry(attempts=4, backoff=0.02, jitter=0.0, retry_on=ConnectionError)
_LATE = Retry(attempts=4, backoff=0.3, jitter=0.0, retry_on=ConnectionError)
_UNDO = Retry(attempts=12, backoff=0.02, jitter=0.0, retry_on=ConnectionError)


@saga(name="kill-transfer")
@attrs.define
class Transfer:
    """Five participants: four undoable steps and a pivot."""

    n: int = 0

    @step(retry=_FORWARD)
    def s1(self, ctx: Any) -> None:
        act(ctx, 1)

    @s1.compensate(retry=_UNDO)
    def u1(self, ctx: Any) -> None:
        act(ctx, 1)

    @step(retry=_LATE)
    def s2(self, ctx: Any) -> None:
        act(ctx, 2)

    @s2.compensate(retry=_UNDO)
    def u2(self, ctx: Any) -> None:
        act(ctx, 2)

    @step(retry=_FORWARD)
    def s3(self, ctx: Any) -> None:
        act(ctx, 3, may_refuse=True)

    @s3.compensate(retry=_UNDO)
    def u3(self, ctx: Any) -> None:
        act(ctx, 3)

    @step(retry=_FORWARD)
    def s4(self, ctx: Any) -> None:
        act(ctx, 4, may_refuse=True)

    @s4.compensate(retry=_UNDO)
    def u4(self, ctx: Any) -> None:
        act(ctx, 4)

    @step(pivot=True, retry=_UNDO)
    def s5(self, ctx: Any) -> None:
        act(ctx, 5)
