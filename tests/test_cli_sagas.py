"""The operator commands: ``sagaflow sagas list|show|retry|resolve|cancel`` and ``recover``.

The sagas are defined here, so the commands find their class by the path the store
recorded (``test_cli_sagas:Ops``) or by ``--import test_cli_sagas``.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import attrs
import pytest
from click.testing import CliRunner, Result

from sagaflow import (
    CompensationStatus,
    Orchestrator,
    Retry,
    SagaStatus,
    events,
    saga,
    step,
)
from sagaflow.cli import main
from sagaflow.stores import SQLiteStore

ROOT = Path(__file__).resolve().parents[1]
NO_RETRY = Retry(attempts=1)

log: list[str] = []
broken: set[str] = set()


class Crash(BaseException):
    """The process dies in the middle of a step (the record stays RUNNING)."""


@saga(name="ops")
@attrs.define
class Ops:
    order: str = "o-1"

    @step
    def a(self, ctx):
        log.append(f"a {ctx.idempotency_key}")

    @a.compensate(retry=NO_RETRY)
    def ua(self, ctx):
        log.append(f"ua {ctx.idempotency_key}")
        if "ua" in broken:
            raise ConnectionError("ua down")

    @step(retry=NO_RETRY)
    def b(self, ctx):
        log.append(f"b {ctx.idempotency_key}")
        if "crash b" in broken:
            broken.discard("crash b")
            raise Crash
        if "b" in broken:
            raise ValueError("b fails")

    @b.compensate
    def ub(self, ctx):
        log.append(f"ub {ctx.idempotency_key}")

    @step(pivot=True)
    def p(self, ctx):
        log.append("p")

    @step(retriable=True, retry=NO_RETRY)
    def r(self, ctx):
        log.append("r")
        if "r" in broken:
            raise ConnectionError("r down")


@saga(name="async_ops")
@attrs.define
class AsyncOps:
    @step
    async def a(self, ctx):
        log.append("async a")

    @a.compensate(retry=NO_RETRY)
    async def ua(self, ctx):
        log.append("async ua")
        if "async ua" in broken:
            raise ConnectionError("async ua down")

    @step(pivot=True, retry=NO_RETRY)
    async def b(self, ctx):
        raise ValueError("async b fails")


@pytest.fixture(autouse=True)
def _clean():
    log.clear()
    broken.clear()
    yield
    log.clear()
    broken.clear()


@pytest.fixture
def db(tmp_path: Path) -> str:
    """A store with one saga of each kind the operator meets; its URL."""
    path = tmp_path / "sagas.db"
    with Orchestrator(SQLiteStore(path)) as orch:
        orch.run(Ops("done"), "done")
        broken.update({"b", "ua"})
        orch.run(Ops("undo"), "undo-failed")  # b fails, ua cannot undo a: FAILED
        broken.clear()
        broken.add("r")
        orch.run(Ops("late"), "r-failed")  # after the pivot: FAILED, nothing undone
        broken.clear()
        broken.add("crash b")
        with pytest.raises(Crash):
            orch.run(Ops("crash"), "crashed")  # RUNNING, b in flight
        orch.store.close()  # type: ignore[attr-defined]
    log.clear()
    broken.clear()
    return f"sqlite:///{path}"


def sagaflow(*args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(main, list(args), catch_exceptions=False, env=env)


def one_line_error(result: Result, *fragments: str) -> str:
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), lines
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def stored(url: str, saga_id: str):
    with SQLiteStore(url.removeprefix("sqlite:///")) as store:
        store.register(Ops, AsyncOps)
        return store.load(saga_id)


# --------------------------------------------------------------------------- help

@pytest.mark.parametrize(
    "args",
    [["sagas"], ["sagas", "list"], ["sagas", "show"], ["sagas", "retry"],
     ["sagas", "resolve"], ["sagas", "cancel"], ["recover"]],
)
def test_every_operator_command_has_help(args):
    result = sagaflow(*args, "--help")
    assert result.exit_code == 0
    assert "Usage: " in result.output
    if args != ["sagas"]:
        assert "--store" in result.output and "SAGAFLOW_STORE" in result.output


def test_the_commands_are_listed_by_sagaflow_help():
    listing = sagaflow("--help").output
    assert "sagas " in listing and "recover " in listing
    assert "unavailable" not in listing


# --------------------------------------------------------------------------- list

def test_list_shows_every_saga_most_recent_first(db):
    result = sagaflow("sagas", "list", "--store", db)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split() == ["ID", "SAGA", "STATUS", "OUTCOME", "STATE", "UPDATED",
                                "(UTC)", "QUARANTINED"]
    ids = [line.split()[0] for line in lines[1:-1]]
    assert ids == ["crashed", "r-failed", "undo-failed", "done"]
    assert lines[-1] == "4 sagas"
    row = {line.split()[0]: line.split() for line in lines[1:-1]}
    assert row["crashed"][1:5] == ["ops", "RUNNING", "running", "b"]
    assert row["undo-failed"][2:5] == ["FAILED", "failed", "failed"]
    assert row["undo-failed"][-1] == "-"  # not quarantined


def test_list_filters_by_status_name_and_limit(db):
    failed = sagaflow("sagas", "list", "--store", db, "--status", "failed")
    assert [ln.split()[0] for ln in failed.output.splitlines()[1:-1]] == [
        "r-failed", "undo-failed"]
    both = sagaflow("sagas", "list", "--store", db, "--status", "COMPLETED",
                    "--status", "active")
    assert {ln.split()[0] for ln in both.output.splitlines()[1:-1]} == {"done", "crashed"}
    assert sagaflow("sagas", "list", "--store", db, "--name", "other").output == (
        "no sagas match\n")
    limited = sagaflow("sagas", "list", "--store", db, "--limit", "1")
    assert limited.output.splitlines()[-1] == "1 saga (of 4; --limit)"
    bad = sagaflow("sagas", "list", "--store", db, "--status", "sleepy")
    assert bad.exit_code == 2 and "'sleepy' is not one of" in bad.output


def test_list_reads_the_store_from_the_environment(db):
    result = sagaflow("sagas", "list", env={"SAGAFLOW_STORE": db})
    assert result.exit_code == 0 and result.output.splitlines()[-1] == "4 sagas"


def quarantine(url: str, saga_id: str, reason: str) -> None:
    with SQLiteStore(url.removeprefix("sqlite:///")) as store:
        store.quarantine(saga_id, reason)


def test_list_shows_why_a_saga_is_quarantined_and_filters_them(db):
    quarantine(db, "crashed", "CorruptRecord: column cursor holds 'x'")
    result = sagaflow("sagas", "list", "--store", db)
    assert result.exit_code == 0, result.output
    crashed = next(ln for ln in result.output.splitlines() if ln.startswith("crashed"))
    assert crashed.endswith("CorruptRecord: column cursor holds 'x'")
    assert result.output.splitlines()[-1] == "4 sagas, 1 quarantined"
    only = sagaflow("sagas", "list", "--store", db, "--quarantined")
    assert [ln.split()[0] for ln in only.output.splitlines()[1:-1]] == ["crashed"]
    assert only.output.splitlines()[-1] == "1 saga"
    none = sagaflow("sagas", "list", "--store", db, "--quarantined", "--status", "failed")
    assert none.output == "no sagas match\n"
    shown = sagaflow("sagas", "show", "crashed", "--store", db).output
    assert "  quarantined CorruptRecord: column cursor holds 'x'" in shown
    assert "next: recovery and workers leave it alone" in shown
    assert "sagaflow sagas unquarantine crashed" in shown


def test_unquarantine_lifts_it_once(db):
    quarantine(db, "crashed", "ValueError: bad data")
    result = sagaflow("sagas", "unquarantine", "crashed", "--store", db)
    assert result.exit_code == 0, result.output
    assert result.output == (
        "unquarantined: saga crashed (it was set aside because: ValueError: bad data)\n")
    assert sagaflow("sagas", "list", "--store", db, "--quarantined").output == (
        "no sagas match\n")
    one_line_error(sagaflow("sagas", "unquarantine", "crashed", "--store", db),
                   "saga 'crashed' is not quarantined")
    one_line_error(sagaflow("sagas", "unquarantine", "nope", "--store", db), "no saga 'nope'")


def test_reading_commands_never_write_to_the_store(db, tmp_path):
    # Someone else's database: listing it must not create sagaflow's tables there, and
    # it is reported as what it is.
    import sqlite3

    other = tmp_path / "someone-elses.db"
    with sqlite3.connect(other) as conn:
        conn.execute("CREATE TABLE invoices (id INTEGER PRIMARY KEY, total TEXT)")
    before = other.read_bytes()
    for args in (["sagas", "list"], ["sagas", "show", "x"]):
        one_line_error(sagaflow(*args, "--store", f"sqlite:///{other}"),
                       "has no sagaflow schema")
    assert other.read_bytes() == before
    with sqlite3.connect(other) as conn:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master")]
    assert tables == ["invoices"]
    # and sagaflow's own store is left byte for byte as it was by list and show
    path = Path(db.removeprefix("sqlite:///"))
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    stamp = path.read_bytes()
    assert sagaflow("sagas", "list", "--store", db).exit_code == 0
    assert sagaflow("sagas", "show", "undo-failed", "--store", db).exit_code == 0
    assert path.read_bytes() == stamp


# --------------------------------------------------------------------------- show

def test_show_prints_the_record_history_and_the_diagram_with_its_position(db):
    result = sagaflow("sagas", "show", "undo-failed", "--store", db)
    assert result.exit_code == 0, result.output
    text = result.output
    assert text.startswith("saga undo-failed (ops): FAILED in ")
    assert '  data        {"order": "undo"}' in text
    assert "  error       CompensationError: 1 compensation could not be done" in text
    steps = {ln.split()[1]: ln.split() for ln in text.split("steps:\n")[1].split("\n\n")[0]
             .splitlines()[1:]}
    assert steps["a"][2:6] == ["compensatable", "COMPLETED", "1", "FAILED"]
    assert steps["b"][2:4] == ["compensatable", "FAILED"]
    assert steps["p"][2:4] == ["pivot", "PENDING"]
    assert "incident: could not be undone, finish by hand:\n  a: ConnectionError: ua down" in text
    assert "history (" in text and "StepFailed 'b': ValueError: b fails" in text
    assert "CompensationFailed 'a': ConnectionError: ua down" in text
    assert "next: sagaflow sagas retry undo-failed" in text
    assert "diagram (mermaid, current state marked):\nstateDiagram-v2" in text
    assert "failed : current state" in text


def test_show_other_formats_and_files(db, tmp_path):
    dot = sagaflow("sagas", "show", "crashed", "--store", db, "--format", "dot")
    assert dot.exit_code == 0 and "digraph" in dot.output
    assert "running, or its process died: `sagaflow recover` resumes it" in dot.output
    svg = tmp_path / "d" / "crashed.svg"
    drawn = sagaflow("sagas", "show", "crashed", "--store", db, "--output", str(svg))
    assert drawn.exit_code == 0, drawn.output
    assert f"diagram (svg, current state marked): wrote {svg}" in drawn.output
    ET.fromstring(svg.read_bytes())
    one_line_error(sagaflow("sagas", "show", "crashed", "--store", db, "-f", "png"),
                   "png is drawn into a file: give --output FILE.png")


def test_show_works_without_the_saga_class(tmp_path):
    @saga(name="local")
    @attrs.define
    class Local:  # defined in a function: no other process could import it
        n: int = 7

        @step(readonly=True)
        def only(self, ctx):
            pass

    path = tmp_path / "local.db"
    with Orchestrator(SQLiteStore(path)) as orch:
        orch.run(Local(), "l1")
        orch.store.close()  # type: ignore[attr-defined]
    result = sagaflow("sagas", "show", "l1", "--store", f"sqlite:///{path}")
    assert result.exit_code == 0, result.output
    assert result.output.startswith("saga l1 (local): COMPLETED")
    assert '  data        {"n": 7}' in result.output
    assert "  1  only  ?     COMPLETED  1" in result.output
    assert "diagram: needs the saga class of 'local': pass --import MODULE" in result.output
    # and acting on it says what is missing
    one_line_error(sagaflow("sagas", "resolve", "l1", "--note", "x", "--store",
                            f"sqlite:///{path}"),
                   "cannot resolve saga 'l1'", "<locals>", "--import MODULE")


# --------------------------------------------------------------------------- actions

def test_retry_runs_the_failed_compensation_again_and_records_the_note(db):
    still = sagaflow("sagas", "retry", "undo-failed", "--store", db, "--note", "first try")
    assert still.exit_code == 0, still.output
    assert "  undo-failed: OperatorAction retry: first try" in still.output
    assert "  undo-failed: CompensationCompleted 'a'" in still.output
    assert "SagaStarted" not in still.output  # only what this command did is printed
    assert still.output.splitlines()[-1] == (
        "retry: saga undo-failed (ops) is now COMPENSATED")
    assert log == ["ua undo-failed:a:compensate"]
    record = stored(db, "undo-failed")
    assert record.status is SagaStatus.COMPENSATED
    assert record.steps[0].compensation is CompensationStatus.COMPENSATED
    actions = [e for e in record.history if isinstance(e, events.OperatorAction)]
    assert [(a.action, a.note) for a in actions] == [("retry", "first try")]


def test_retry_a_failed_retriable_step_and_a_retry_that_fails_again(db):
    result = sagaflow("sagas", "retry", "r-failed", "--store", db, "-q")
    assert result.exit_code == 0, result.output
    assert result.output == "retry: saga r-failed (ops) is now COMPLETED\n"
    assert log == ["r"]
    broken.add("ua")
    again = sagaflow("sagas", "retry", "undo-failed", "--store", db, "--import", "test_cli_sagas")
    assert again.exit_code == 1
    assert "is now FAILED" in again.output and "still FAILED" in again.output


def test_resolve_marks_a_failed_saga_handled(db):
    result = sagaflow("sagas", "resolve", "r-failed", "--store", db,
                      "--note", "shipped by hand, ticket 42")
    assert result.exit_code == 0, result.output
    assert result.output == (
        "resolve: saga r-failed (ops) is now FAILED; resolution: shipped by hand, ticket 42\n")
    shown = sagaflow("sagas", "show", "r-failed", "--store", db).output
    assert "resolution: shipped by hand, ticket 42" in shown
    assert "OperatorAction resolve: shipped by hand, ticket 42" in shown
    assert "next:" not in shown
    one_line_error(sagaflow("sagas", "resolve", "done", "--store", db, "--note", "x"),
                   "'done' is COMPLETED: only a FAILED saga can be resolved")
    one_line_error(sagaflow("sagas", "resolve", "r-failed", "--store", db, "--note", "  "),
                   "--note is empty")
    missing = sagaflow("sagas", "resolve", "r-failed", "--store", db)
    assert missing.exit_code == 2 and "Missing option '--note'" in missing.output


def test_cancel_compensates_a_saga_whose_process_died(db):
    result = sagaflow("sagas", "cancel", "crashed", "--store", db, "--note", "customer left")
    assert result.exit_code == 0, result.output
    assert "  crashed: OperatorAction cancel: customer left" in result.output
    assert result.output.splitlines()[-1] == "cancel: saga crashed (ops) is now COMPENSATED"
    # b was in flight: its outcome is unknown, so it is compensated too, then a
    assert log == ["ub crashed:b:compensate", "ua crashed:a:compensate"]
    one_line_error(sagaflow("sagas", "cancel", "done", "--store", db),
                   "'done' is COMPLETED: only a RUNNING saga can be cancelled")


def test_recover_resumes_unfinished_sagas(db):
    result = sagaflow("recover", "--store", db, "-v")
    assert result.exit_code == 0, result.output
    assert "  crashed: StepStarted 'b' (attempt 2)" in result.output
    assert result.output.splitlines()[-2:] == [
        "recovered 1 saga(s), left 0 alone", "  crashed: COMPLETED"]
    assert log == ["b crashed:b:forward", "p", "r"]  # the same key as the lost attempt
    again = sagaflow("recover", "--store", db)
    assert again.output == "recovered 0 saga(s), left 0 alone\n"


def test_recover_reports_sagas_it_cannot_resume_and_exits_1(db, tmp_path):
    import sqlite3

    with sqlite3.connect(db.removeprefix("sqlite:///")) as conn:
        conn.execute("UPDATE sagaflow_sagas SET saga_name = 'gone', data_type = 'nowhere:Gone' "
                     "WHERE saga_id = 'crashed'")
    result = sagaflow("recover", "--store", db)
    assert result.exit_code == 1
    assert "left 1 alone" in result.output
    assert "  crashed: not resumed: " in result.output and "'gone'" in result.output


def test_async_sagas_are_acted_on_too(tmp_path):
    path = tmp_path / "async.db"
    broken.add("async ua")
    with Orchestrator(SQLiteStore(path)) as orch:
        assert asyncio.run(orch.arun(AsyncOps(), "as1")).status is SagaStatus.FAILED
        orch.store.close()  # type: ignore[attr-defined]
    broken.clear()
    log.clear()
    result = sagaflow("sagas", "retry", "as1", "--store", f"sqlite:///{path}", "--note", "up")
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[-1] == "retry: saga as1 (async_ops) is now COMPENSATED"
    assert log == ["async ua"]
    record = stored(f"sqlite:///{path}", "as1")
    assert record.status is SagaStatus.COMPENSATED
    assert any(isinstance(e, events.OperatorAction) and e.note == "up" for e in record.history)


# --------------------------------------------------------------------------- errors

def test_errors_are_one_line(db, tmp_path):
    one_line_error(sagaflow("sagas", "list", env={"SAGAFLOW_STORE": ""}),
                   "no store given: pass --store URL", "SAGAFLOW_STORE")
    one_line_error(sagaflow("sagas", "list", "--store", f"sqlite:///{tmp_path}/none.db"),
                   "no SQLite store at", "none.db")
    one_line_error(sagaflow("sagas", "list", "--store", "memory://"),
                   "fresh, empty store in every process")
    one_line_error(sagaflow("sagas", "list", "--store", "sagas.db"),
                   "is not a store URL")
    one_line_error(sagaflow("sagas", "show", "nope", "--store", db),
                   "no saga 'nope' in", "sagaflow sagas list")
    one_line_error(sagaflow("sagas", "retry", "nope", "--store", db), "no saga 'nope'")
    one_line_error(sagaflow("recover", "--store", db, "--import", "no_such_module_xyz"),
                   "no module named 'no_such_module_xyz'")
    one_line_error(sagaflow("recover", "--store", db, "--import", "json"),
                   "--import json: no saga class in that module")


def test_a_corrupted_record_is_named(db):
    import sqlite3

    with sqlite3.connect(db.removeprefix("sqlite:///")) as conn:
        conn.execute("UPDATE sagaflow_sagas SET steps = '{oops' WHERE saga_id = 'done'")
    one_line_error(sagaflow("sagas", "show", "done", "--store", db),
                   "saga 'done': the stored record cannot be read")
    assert sagaflow("sagas", "show", "undo-failed", "--store", db).exit_code == 0


# --------------------------------------------------------------------------- a real process

def test_the_commands_in_a_real_process(db):
    env = {**os.environ, "SAGAFLOW_STORE": db,
           "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")])}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "sagaflow", *args], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=120)

    listed = run("sagas", "list", "--status", "active")
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.splitlines()[1].split()[:3] == ["crashed", "ops", "RUNNING"]
    recovered = run("recover", "--import", "test_cli_sagas")
    assert recovered.returncode == 0, recovered.stderr
    assert recovered.stdout.splitlines() == [
        "recovered 1 saga(s), left 0 alone", "  crashed: COMPLETED"]
    failed = run("sagas", "cancel", "crashed")
    assert failed.returncode == 2
    assert failed.stderr == (
        "Error: saga 'crashed' is COMPLETED: only a RUNNING saga can be cancelled\n")


# --------------------------------------------------------------------------- a plain script

SCRIPT = '''
import os
import sys

import attrs

from sagaflow import Orchestrator, Retry, saga, step


@attrs.frozen
class Charged:
    order: str


@saga(name="script_order")
@attrs.define
class ScriptOrder:
    order: str

    @step
    def charge(self, ctx):
        ctx.emit(Charged(self.order))

    @charge.compensate(retry=Retry(attempts=1))
    def refund(self, ctx):
        if os.environ.get("REFUND_DOWN"):
            raise ConnectionError("refund service down")
        print("refunded", self.order)

    @step(pivot=True, retry=Retry(attempts=1))
    def ship(self, ctx):
        raise ValueError("no courier")


if __name__ == "__main__":
    with Orchestrator(sys.argv[1]) as orch:
        for saga_id in sys.argv[2:]:
            print(saga_id, orch.run(ScriptOrder(saga_id), saga_id).status.value)
'''


def test_a_failed_saga_from_a_plain_script_can_be_shown_resolved_and_retried(tmp_path):
    # `python shop.py`: its classes are __main__'s there; the store must name them so that
    # another process (the operator's) finds them again.
    (tmp_path / "shop.py").write_text(SCRIPT, encoding="utf-8")
    url = f"sqlite:///{tmp_path / 'shop.db'}"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "REFUND_DOWN": "1"}
    ran = subprocess.run([sys.executable, "shop.py", url, "s-1", "s-2"], cwd=tmp_path,
                         env=env, capture_output=True, text=True, timeout=120)
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.splitlines() == ["s-1 FAILED", "s-2 FAILED"]
    del env["REFUND_DOWN"]  # the refund service is back

    def operator(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "sagaflow", "sagas", *args, "--store", url,
                               "--import", "shop.py"], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=120)

    shown = operator("show", "s-1")
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.startswith("saga s-1 (script_order): FAILED")
    assert "domain events (1):\n  Charged(order='s-1')" in shown.stdout
    assert "incident: could not be undone, finish by hand:\n  charge:" in shown.stdout
    assert "failed : current state" in shown.stdout
    retried = operator("retry", "s-1", "--note", "refunds are back", "-q")
    assert retried.returncode == 0, retried.stderr
    assert retried.stdout.splitlines()[-1] == (
        "retry: saga s-1 (script_order) is now COMPENSATED")
    resolved = operator("resolve", "s-2", "--note", "refunded by hand")
    assert resolved.returncode == 0, resolved.stderr
    assert "is now FAILED; resolution: refunded by hand" in resolved.stdout
    # and without --import, from the type names the store recorded
    listed = subprocess.run([sys.executable, "-m", "sagaflow", "sagas", "show", "s-1",
                             "--store", url], cwd=tmp_path, env=env, capture_output=True,
                            text=True, timeout=120)
    assert listed.returncode == 0, listed.stderr
    assert "saga s-1 (script_order): COMPENSATED" in listed.stdout
    assert "compensated : current state" in listed.stdout
