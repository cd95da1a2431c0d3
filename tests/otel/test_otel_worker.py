"""A worker's runs traced: ``Worker(telemetry=...)`` and ``sagaflow worker --telemetry``
(a real process whose imported module sets up the SDK). Real SQLite files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner
from conftest import Otel
from wait_sagas import Nap, park_here, serving, start_worker, stop, until, wait_for_line

from sagaflow import SagaStatus
from sagaflow.cli import main
from sagaflow.stores.sqlite import SQLiteStore
from sagaflow.worker import Worker

HERE = Path(__file__).resolve().parent


def status_of(db: Path, saga_id: str) -> SagaStatus:
    with SQLiteStore(db, readonly=True) as store:
        stored = store.load_raw(saga_id)
        assert stored is not None
        return SagaStatus(stored.status)


def test_a_worker_given_telemetry_traces_the_runs_it_makes(tmp_path: Path, otel: Otel) -> None:
    db = tmp_path / "sagas.db"
    park_here(db, Nap(seconds=0.05), "n1")
    worker = Worker(SQLiteStore(db), [Nap], telemetry=otel.telemetry)
    try:
        assert worker.orchestrator.runtime.telemetry is otel.telemetry
        with serving(worker):
            until(lambda: status_of(db, "n1") is SagaStatus.COMPLETED, what="the saga's end")
    finally:
        worker.store.close()
    run = otel.one("saga w-nap")  # the worker's run: the timer's firing and the pivot
    assert run.attributes is not None and run.attributes["sagaflow.saga.id"] == "n1"
    assert run.attributes["sagaflow.resumed"] is True
    step = otel.one("step last")
    assert step.parent is not None and step.parent.span_id == run.context.span_id
    assert otel.counted("sagaflow.sagas.completed") == {"w-nap": 1}


def worker_command_run(tmp_path: Path, *options: str) -> list[str]:
    """A saga parked here, then finished by a ``sagaflow worker`` process importing
    :mod:`worker_tracing` (with ``options``): the names of the spans it exported."""
    db = tmp_path / "sagas.db"
    spans = tmp_path / "spans.jsonl"
    park_here(db, Nap(seconds=0.05), "n2")
    child = start_worker(f"sqlite:///{db}", tmp_path / "calls.log", *options,
                         "--import", str(HERE / "worker_tracing.py"),
                         env={"SAGAFLOW_SPANS": str(spans)})
    try:
        wait_for_line(child, "running")
        until(lambda: status_of(db, "n2") is SagaStatus.COMPLETED, what="the saga's end")
        if options:
            until(lambda: spans.exists() and "saga w-nap" in spans.read_text(),
                  what="the run's span")
    finally:
        stop(child)
    if not spans.exists():
        return []
    return [json.loads(line)["name"] for line in spans.read_text().splitlines()]


def test_the_worker_command_traces_with_the_providers_its_imports_set_up(
    tmp_path: Path,
) -> None:
    names = worker_command_run(tmp_path, "--telemetry")
    assert "step last" in names and "saga w-nap" in names, names


def test_without_the_flag_the_worker_command_traces_nothing(tmp_path: Path) -> None:
    assert worker_command_run(tmp_path) == []


def test_telemetry_without_the_extra_names_what_to_install(tmp_path: Path) -> None:
    # the otel extra hidden: a module named opentelemetry that is None cannot be imported
    code = (
        "import sys; sys.modules['opentelemetry'] = None\n"
        "from sagaflow.cli import main\n"
        "main(['worker', '--store', 'sqlite:///" + str(tmp_path / "s.db") + "',"
        " '--import', 'wait_sagas', '--telemetry'])\n"
    )

    ran = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=HERE.parent.parent, check=False, timeout=60,
                         env={**os.environ, "PYTHONPATH": str(HERE.parent)})
    assert ran.returncode == 2, ran.stderr
    assert "--telemetry: sagaflow.otel needs the OpenTelemetry API: pip install " \
           "'sagaflow[otel]'" in ran.stderr


def test_the_flag_is_in_the_command_s_help() -> None:
    result = CliRunner().invoke(main, ["worker", "--help"])
    assert "--telemetry" in result.output and "OpenTelemetry" in result.output
