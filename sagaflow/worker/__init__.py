"""Workers: the processes that run sagas in the background, and resume the sagas that
wait, on a SQLite file or a PostgreSQL database.

A :class:`Worker` (or ``sagaflow worker --store URL --import MODULE``) drives sagas with
the orchestrator's public drive (:meth:`Orchestrator.adrive`), many at once on one event
loop. What it serves depends on the store:

**PostgreSQL: a queue, many workers** (on any number of machines, sharing the database
and nothing else; :mod:`sagaflow.worker._queue`). A client *enqueues* a saga
(:func:`~sagaflow.queue.enqueue`: stored, due now, held by nobody) and may
:func:`~sagaflow.queue.wait` for its result.

- **claim**: ``FOR UPDATE SKIP LOCKED`` picks due sagas that no live lease holds, so
  concurrent workers never wait for each other nor take the same saga; each claim sets
  the saga's ``owner``, starts a lease of ``lease`` seconds (the database's clock) and
  bumps the saga's *fence* token.
- **heartbeat**: a thread renews the leases of every saga this worker holds every
  ``heartbeat`` seconds, as long as the event loop is alive (a loop stuck for a whole
  lease stops renewing, so that its sagas are taken over).
- **fencing**: every save carries the token the worker claimed the saga with
  (:meth:`~sagaflow.stores.postgres.PostgresStore.fenced`). A worker that was paused
  or cut off past its lease, whose saga another worker has claimed since, fails its
  next write (:class:`~sagaflow.LeaseLost`) and writes nothing. Steps may read the token
  too (:func:`current_lease`), to pass it on to a participant that checks it.
- **takeover**: a dead worker's sagas are claimed again once their leases expire; the
  step that was in flight runs again with the same idempotency key (at-least-once).
- **waits**: a saga that parks at a wait is released to the queue, due at its wake time
  (its timeout, timer or deadline; none: only a signal wakes it). A signal to a parked
  saga makes it due at once. Holding it costs no worker anything: it is a row.
- **wake-ups**: what makes a saga due (an enqueue, a release, a signal) notifies the
  workers (``LISTEN``/``NOTIFY``, on a connection of each worker's own), which claim at
  once; besides, an idle worker sleeps until the earliest ``run_at`` of the queue (a
  timer, a retry, a dead worker's lease) or ``poll`` seconds, whichever is first.
- **retries**: a retry that must wait longer than ``park_after`` seconds releases its
  saga to the queue, due when the retry is; a saga past its deadline is compensated by
  whichever worker claims it next.

**SQLite: one worker per file** (:mod:`sagaflow.worker._file`); a second one refuses to
start. It recovers the sagas interrupted in the file (:meth:`Orchestrator.arecover`)
when it starts, then resumes each parked saga when a signal for it is stored (by any
process) or its time comes. Every 10 ms it asks SQLite whether another connection
committed (``PRAGMA data_version``: no table is read); only then does it read the
signals stored since the last it saw, and the earliest wake time of the parked sagas
(an index). Idle, it costs the same whether 10 or 100,000 sagas wait.

On both: **quarantine**: a saga that cannot be decoded or driven (a damaged row) is set
aside (:meth:`Orchestrator.set_aside`): no worker takes it again until an operator
acts. **shutdown**: :meth:`Worker.stop` (SIGTERM, SIGINT under :meth:`Worker.run`)
stops taking sagas, gives the running ones ``grace`` seconds to finish, then lets go of
the rest without letting them write (a second signal: at once): PostgreSQL releases
them to the other workers; SQLite leaves them at their last checkpoint, to be recovered
at the next start. **stalled sagas**: with ``stalled_after`` (``--stalled-after``) a
worker looks for sagas with no checkpoint for that long every ``stalled_every`` seconds
and hands each to ``on_incident`` (and its log) once while it stays stalled, once
across every worker sharing the store (the first to claim the incident in the store
pages it), and again only when the saga moved on and stalled anew.
"""

from __future__ import annotations

from ..queue import aenqueue, enqueue, enqueue_many, wait, wait_async
from ._core import Lease, Worker, WorkerStats, current_lease

# The clients' functions live in sagaflow.queue; they are named here too, beside the
# workers that run what they enqueue.
__all__ = [
    "Lease",
    "Worker",
    "WorkerStats",
    "aenqueue",
    "current_lease",
    "enqueue",
    "enqueue_many",
    "wait",
    "wait_async",
]
