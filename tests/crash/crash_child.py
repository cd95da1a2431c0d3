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
import os
import signal
import sys
import time
import traceback

import crash_groups
import crash_sagas
import crash_waits
from crash_sagas import CrashOrder, KillingStore, Point, SkippingClock, open_killing

from sagaflow import Orchestrator


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
        sys.stdout.flush()
        sys.stderr.flush()
        read, write = os.pipe()  # what the job reports
        started = time.monotonic()
        pid = os.fork()
        if pid == 0:  # the process to kill
            os.close(read)
            code = 0
            try:
                signal.alarm(60)  # a hang ends the process by SIGALRM, never the suite
                report = _job(store_path, job)
                with os.fdopen(write, "w", encoding="utf-8") as out:
                    json.dump(report, out)
            except BaseException:
                traceback.print_exc()
                code = 3
            finally:
                sys.stderr.flush()
                os._exit(code)
        os.close(write)
        with os.fdopen(read, encoding="utf-8") as reported:
            text = reported.read()  # to its end: the job's exit (or death) closes it
        _, status = os.waitpid(pid, 0)
        killed = os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
        results.append({
            **job,
            "killed": killed,
            "exit": os.WEXITSTATUS(status) if os.WIFEXITED(status) else -os.WTERMSIG(status),
            "report": json.loads(text) if text else None,
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
