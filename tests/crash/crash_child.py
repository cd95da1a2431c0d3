"""The processes the crash tests kill. Run with ``sys.executable``; prints JSON.

    crash_child.py jobs STORE JOBS.json   run each job in a forked process, one after
                                          another; print how each ended
    crash_child.py recover STORE          Orchestrator.recover() in this (fresh) process

STORE is a SQLite file, or (jobs only) a ``postgresql://`` URL with its ``schema=``.
A job is ``{"saga_id", "action": "run"|"recover", "fail": bool, "point": [kind, n,
when] | null, "synchronous": "FULL"|"NORMAL"}``: the forked process arms its kill switch
at ``point`` and runs the saga (or recovers it, alone), so it dies there by SIGKILL
(or ends normally, if the point lies beyond what it does). A job with ``"saga":
"waits"`` is a waiting saga's (:func:`crash_waits.perform`); what it reports comes
back in its result's ``"report"``; so does a parallel group's (``"saga": "groups"``,
:func:`crash_groups.perform`). Forking from this process,
which has imported everything but opened nothing, makes a fresh process per kill cost
milliseconds instead of an interpreter start; each one opens its own store and ledger.
The participants' ledger is the file named by $SAGAFLOW_CRASH_LEDGER.
"""

from __future__ import annotations

import json
import signal
import sys
import time

import crash_groups
import crash_sagas
import crash_waits
from crash_sagas import CrashOrder, KillingStore, Point, SkippingClock, open_killing

from sagaflow import Orchestrator
from sagaflow.testing._crashchild import fork


def _job(store_path: str, job: dict) -> dict | None:
    point = None if job["point"] is None else Point(*job["point"])
    crash_sagas.set_kill(point)
    if job.get("saga") == "waits":
        return crash_waits.perform(store_path, job)
    if job.get("saga") == "groups":
        return crash_groups.perform(store_path, job)
    store = open_killing(store_path, synchronous=job.get("synchronous", "FULL"))
    orch = Orchestrator(store, sagas=[CrashOrder], clock=SkippingClock())
    if job["action"] == "run":
        orch.run(CrashOrder(fail=job["fail"]), job["saga_id"])
    else:
        store.only = job["saga_id"]
        report = orch.recover()
        if report.skipped:
            raise RuntimeError(f"recovery skipped {report.skipped}")
    return None


def jobs(store_path: str, jobs_file: str) -> None:
    with open(jobs_file, encoding="utf-8") as f:
        todo = json.load(f)
    crash_sagas.killing_class(store_path)  # imported here, once, not in every process
    results = []
    for job in todo:
        started = time.monotonic()
        # the fork, the report through a pipe and the alarm are the crash points' own
        report, code = fork(lambda job=job: _job(store_path, job), 60)
        results.append({
            **job,
            "killed": code == -signal.SIGKILL,
            "exit": code,
            "report": report,
            "seconds": round(time.monotonic() - started, 4),
        })
    json.dump(results, sys.stdout)


def recover(store_path: str) -> None:
    with Orchestrator(KillingStore(store_path), sagas=[CrashOrder],
                      clock=SkippingClock()) as orch:
        report = orch.recover()
        orch.store.close()  # type: ignore[attr-defined]
    json.dump({"resumed": {k: v.value for k, v in report.resumed.items()},
               "skipped": {k: str(v) for k, v in report.skipped.items()}}, sys.stdout)


if __name__ == "__main__":
    if sys.argv[1] == "jobs":
        jobs(sys.argv[2], sys.argv[3])
    elif sys.argv[1] == "recover":
        recover(sys.argv[2])
    else:
        raise SystemExit(f"unknown mode {sys.argv[1]!r}: jobs or recover")
