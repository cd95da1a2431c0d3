"""The test's side of the crash harness: run ``crash_child.py`` with the participants'
ledger in its environment, hand it jobs, read how each one ended.

Used by the crash tests of this folder and by the PostgreSQL ones that kill waiting
sagas (``tests/postgres/test_kill_waits.py``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from crash_sagas import LEDGER_ENV

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
CHILD = HERE / "crash_child.py"


def env(ledger: Path) -> dict[str, str]:
    """The environment of a process of the harness: the ledger, and this folder and the
    project on its path."""
    return {
        **os.environ,
        LEDGER_ENV: str(ledger),
        "PYTHONPATH": os.pathsep.join([str(HERE), str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }


def run(args: list[str], ledger: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Run ``args`` to its end; it must succeed."""
    done = subprocess.run(args, env=env(ledger), cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def jobs(store: str | Path, ledger: Path, todo: list[dict[str, Any]],
         where: Path | None = None) -> list[dict[str, Any]]:
    """Run the jobs ``todo`` (each in its own process, one after another) on ``store``
    (a SQLite file, or a ``postgresql://`` URL); how each ended. A job that was not
    killed must have ended well. ``where`` holds the jobs' file (default: the store's
    folder)."""
    folder = Path(store).parent if where is None else where
    spec = folder / f"jobs-{len(todo)}-{os.urandom(4).hex()}.json"
    spec.write_text(json.dumps(todo), encoding="utf-8")
    done = run([sys.executable, str(CHILD), "jobs", str(store), str(spec)], ledger)
    results: list[dict[str, Any]] = json.loads(done.stdout)
    failed = [r for r in results if not r["killed"] and r["exit"] != 0]
    assert not failed, (failed, done.stderr[-3000:])
    return results
