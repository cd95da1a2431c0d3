"""The command line and waiting sagas: ``sagaflow sagas signal`` and the outcome column
and filter of ``sagaflow sagas list`` (rejected, waiting, timed-out), on an SQLite file.

The saga is defined here: the commands find it with ``--import test_cli_waits``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import attrs
import pytest
from click.testing import CliRunner, Result

from sagaflow import Orchestrator, SagaRejected, SagaStatus, saga, step, wait
from sagaflow.cli import main
from sagaflow.stores import SQLiteStore
from sagaflow.testing import VirtualClock

ROOT = Path(__file__).resolve().parents[1]


@attrs.frozen
class Verdict:
    approved: bool
    by: str
    reason: str = ""


@saga(key="ticket")
class Review:
    ticket: str
    approved_by: str | None = None

    @step
    def open_ticket(self, ctx):
        pass

    @open_ticket.compensate
    def close_ticket(self, ctx):
        pass

    @wait("verdict", payload=Verdict, timeout=timedelta(days=2))
    def verdict(self, v: Verdict, ctx):
        if not v.approved:
            raise SagaRejected(f"refused by {v.by}: {v.reason}")
        self.approved_by = v.by


@pytest.fixture
def db(tmp_path: Path) -> str:
    """Sagas that wait, were rejected, timed out and completed; the store's URL."""
    clock = VirtualClock(time.time() - timedelta(days=2).total_seconds())  # the CLI: now
    path = tmp_path / "waits.db"
    with SQLiteStore(path) as store, Orchestrator(store, clock=clock) as orch:
        for sid in ("rejected", "late", "done"):
            orch.run(Review(f"T-{sid}"), saga_id=sid)
        orch.signal("rejected", "verdict", Verdict(False, "bob", "no budget"))
        orch.signal("done", "verdict", Verdict(True, "ann"))
        clock.advance(timedelta(days=1).total_seconds())
        for sid in ("waits", "waits-2"):  # a day later: not due when 'late' is
            orch.run(Review(f"T-{sid}"), saga_id=sid)
        clock.advance(timedelta(days=1).total_seconds())
        assert orch.resume_due() == {"late": SagaStatus.COMPENSATED}
    return f"sqlite:///{path}"


def sagaflow(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def listed(result: Result) -> dict[str, list[str]]:
    assert result.exit_code == 0, result.output
    return {line.split()[0]: line.split() for line in result.output.splitlines()[1:-1]}


def test_list_shows_each_sagas_outcome(db):
    rows = listed(sagaflow("sagas", "list", "--store", db))
    outcome = {sid: row[3] for sid, row in rows.items()}
    assert outcome == {"waits": "waiting", "waits-2": "waiting", "rejected": "rejected",
                       "late": "timed-out", "done": "completed"}
    assert rows["rejected"][2] == "COMPENSATED"  # the status stays one of the six


def test_list_filters_by_outcome(db):
    assert set(listed(sagaflow("sagas", "list", "--store", db, "--outcome", "rejected"))) == {
        "rejected"}
    both = sagaflow("sagas", "list", "--store", db, "--outcome", "WAITING",
                    "--outcome", "timed-out")
    assert set(listed(both)) == {"waits", "waits-2", "late"}
    none = sagaflow("sagas", "list", "--store", db, "--outcome", "cancelled")
    assert none.output == "no sagas match\n"
    bad = sagaflow("sagas", "list", "--store", db, "--outcome", "sleepy")
    assert bad.exit_code == 2 and "'sleepy' is not one of" in bad.output


def test_signal_resumes_the_saga_and_says_how_it_ended(db):
    result = sagaflow("sagas", "signal", "--store", db, "--import", "test_cli_waits",
                      "waits", "verdict", "--data", '{"approved": true, "by": "cy"}')
    assert result.exit_code == 0, result.output
    assert "signal 'verdict' stored for saga waits: it is COMPLETED" in result.output
    assert "waits: SignalDelivered 'verdict'" in result.output
    with SQLiteStore(db.removeprefix("sqlite:///")) as store:
        store.register(Review)
        record = store.load("waits")
        assert record.status is SagaStatus.COMPLETED
        assert record.data.approved_by == "cy"
        assert [s.name for s in store.signals("waits")] == ["verdict"]


def test_signal_by_business_key_from_a_real_process(db):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")])}
    ran = subprocess.run(
        [sys.executable, "-m", "sagaflow", "sagas", "signal", "--store", db,
         "--import", "test_cli_waits", "--key", "T-waits-2", "--saga", "Review", "verdict",
         "--data", json.dumps({"approved": False, "by": "dee", "reason": "too late"}), "-q"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )
    assert ran.returncode == 0, ran.stderr
    assert "it is COMPENSATED" in ran.stdout
    rows = listed(sagaflow("sagas", "list", "--store", db, "--outcome", "rejected"))
    assert set(rows) == {"rejected", "waits-2"}


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["waits", "verdict", "--data", "{not json"], "--data is not JSON"),
        (["waits", "verdict", "--data", '{"approved": true}'], "by"),
        (["waits", "verdict", "--data", '{"approved": true, "by": "x", "extra": 1}'],
         "extra"),
        (["waits", "nudge"], "declares no wait for signal 'nudge'"),
        (["done", "verdict", "--data", '{"approved": true, "by": "x"}'], "COMPLETED"),
        (["nobody", "verdict"], "nobody"),
        (["--key", "T-none", "verdict"], "T-none"),
    ],
)
def test_a_refused_signal_is_one_clear_line_and_stores_nothing(db, args, fragment):
    result = sagaflow("sagas", "signal", "--store", db, "--import", "test_cli_waits", *args)
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), lines
    assert fragment in lines[0], lines[0]
    with SQLiteStore(db.removeprefix("sqlite:///")) as store:
        assert store.signals("waits") == []
        assert [s.name for s in store.signals("done")] == ["verdict"]


def test_show_says_what_a_saga_waits_for_and_its_signals(db):
    shown = sagaflow("sagas", "show", "--store", db, "waits").output
    assert "  outcome     waiting" in shown
    assert "  waiting     for signal 'verdict' until " in shown
    assert "  key         T-waits" in shown
    assert "signals (" not in shown  # none stored yet
    rejected = sagaflow("sagas", "show", "--store", db, "rejected").output
    assert "  outcome     rejected" in rejected
    assert "SagaRejected: " in rejected and "refused by bob: no budget" in rejected
    signal_lines = rejected.split("signals (1):", 1)[1].splitlines()
    assert signal_lines[2].split()[:2] == ["1", "verdict"]
    assert signal_lines[2].split()[-1] == "delivered"
