"""``sagaflow verify``: the quality gates per saga, one broken saga per gate, bad arguments,
and the examples passing every gate."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from sagaflow.cli import main

ROOT = Path(__file__).resolve().parents[1]
SAGAS = Path(__file__).resolve().parent / "verify_sagas"
PLANS = "30"  # enough to find each broken saga's bug; the examples' own tests run 500


def verify(*args: str) -> Result:
    return CliRunner().invoke(main, ["verify", *args])


def verdicts(*args: str) -> tuple[int, dict[str, Any]]:
    """The exit status and the JSON report, by saga name then gate name."""
    result = verify(*args, "--format", "json")
    report = json.loads(result.output)
    return result.exit_code, {
        s["name"]: {g["gate"]: g for g in s["gates"]} for s in report["sagas"]
    }


def module(name: str) -> str:
    return str(SAGAS / f"{name}.py")


def failing(gates: dict[str, Any]) -> list[str]:
    return [name for name, g in gates.items() if g["result"] == "FAIL"]


def test_a_sound_module_passes_every_gate() -> None:
    result = verify(module("good"), "--plans", PLANS)
    assert result.exit_code == 0, result.output
    out = result.output
    assert "verify_sagas.good:GoodOrder (saga 'good_order'): ok" in out
    assert "verify_sagas.good:GoodBooking (saga 'good_booking'): ok" in out
    assert "  plans            pass    30 generated failure plans run, every invariant kept" \
        in out
    assert "crash points     skip    give --crash (slower)" in out
    assert "2 sagas verified: every gate passed" in out
    status, report = verdicts(module("good"), "--plans", PLANS)
    assert status == 0
    for gates in report.values():
        assert {name: g["result"] for name, g in gates.items()} == {
            "definition": "pass", "graph": "pass", "timeouts": "pass", "plans": "pass",
            "idempotency": "pass", "nothing to undo": "pass", "crash points": "skip",
            "diagrams": "skip",
        }
    assert "30 generated failure plans run" in report["good_order"]["plans"]["detail"]


def test_one_class_of_a_module() -> None:
    status, report = verdicts(f"{module('good')}:GoodBooking", "--plans", "5")
    assert status == 0 and list(report) == ["good_booking"]


def test_a_definition_that_saga_refuses_fails_the_definition_gate() -> None:
    status, report = verdicts(module("bad_definition"), "--plans", PLANS)
    assert status == 1
    gates = report["verify_sagas.bad_definition"]
    assert failing(gates) == ["definition"]
    assert "step 'charge' has no compensation and no kind" in gates["definition"]["detail"]


def test_a_machine_that_traps_a_run_fails_the_graph_gate() -> None:
    status, report = verdicts(module("bad_graph"), "--plans", PLANS)
    assert status == 1
    gates = report["trapped"]
    assert gates["graph"]["result"] == "FAIL"
    assert gates["graph"]["detail"] == (
        "state 'compensating_charge' cannot reach a terminal state"
    )


def test_a_call_without_a_time_limit_fails_the_timeouts_gate() -> None:
    status, report = verdicts(module("bad_timeouts"), "--plans", PLANS)
    assert status == 1
    gates = report["unbounded"]
    assert failing(gates) == ["timeouts"]
    assert gates["timeouts"]["detail"].splitlines() == [
        "step 'charge' has timeout=None: give it timeout=SECONDS",
        "compensation 'refund' has timeout=None: give @charge.compensate(timeout=SECONDS)",
    ]


def test_a_step_that_is_not_idempotent_fails_the_plans_gate_with_its_smallest_plan() -> None:
    status, report = verdicts(module("bad_plans"), "--plans", PLANS)
    assert status == 1
    gates = report["double_charge"]
    assert failing(gates) == ["plans"]
    detail = gates["plans"]["detail"]
    assert detail.splitlines()[0] == (
        "broke [11] a compensated run leaves the participants as it found them under "
        "FailurePlan(step='charge', fault=Fault.TIMES_OUT, effect=True) (smallest plan found)"
    )
    assert "'ann': before '<missing>', after -20" in detail
    text = verify(module("bad_plans"), "--plans", PLANS).output  # the table, then the report
    assert "  plans            FAIL    broke [11]" in text
    assert "\n  plans:\n    broke [11]" in text


def test_a_compensation_that_is_not_idempotent_fails_the_idempotency_gate() -> None:
    status, report = verdicts(module("bad_idempotency"), "--plans", PLANS)
    assert status == 1
    gates = report["double_refund"]
    assert failing(gates) == ["idempotency"]  # never retried: no plan runs it twice
    assert "refund (undoes 'charge') is not idempotent" in gates["idempotency"]["detail"]
    assert "'ann': before '<missing>', after 10" in gates["idempotency"]["detail"]


def test_a_saga_that_cannot_be_built_says_how_to_give_instances() -> None:
    status, report = verdicts(module("unbuildable"), "--plans", PLANS)
    assert status == 1
    gates = report["needs_a_connection"]
    assert failing(gates) == ["plans"]
    detail = gates["plans"]["detail"]
    assert detail.startswith("cannot build instances of NeedsAConnection: ResolutionFailed")
    assert "define example_sagas() in verify_sagas.unbuildable" in detail
    assert "register_type_strategy" in detail


def write_diagrams(target: str, folder: Path) -> None:
    for fmt in ("dot", "mermaid"):  # the project's own command; SVG would need Graphviz
        result = CliRunner().invoke(main, ["diagram", target, "--all", "-f", fmt,
                                           "--output", str(folder)])
        assert result.exit_code == 0, result.output


def test_the_diagrams_gate_compares_the_committed_diagrams(tmp_path: Path) -> None:
    write_diagrams(module("good"), tmp_path)
    status, report = verdicts(module("good"), "--plans", "0", "--diagrams", str(tmp_path))
    assert status == 0
    assert report["good_order"]["diagrams"] == {
        "gate": "diagrams", "result": "pass", "detail": "good_order.dot, good_order.mmd fresh"
    }
    assert report["good_order"]["plans"]["result"] == "skip"

    dot = tmp_path / "good_order.dot"
    dot.write_text(dot.read_text().replace("refund", "refund_later"))
    (tmp_path / "good_booking.dot").unlink()
    (tmp_path / "good_booking.mmd").unlink()
    status, report = verdicts(module("good"), "--plans", "0", "--diagrams", str(tmp_path))
    assert status == 1
    order, booking = report["good_order"], report["good_booking"]
    assert failing(order) == ["diagrams"] and failing(booking) == ["diagrams"]
    fix = f"run `sagaflow diagram verify_sagas.good --all --output {tmp_path}`"
    assert order["diagrams"]["detail"] == (
        f"stale: {dot} differs from the saga's diagram now: {fix}"
    )
    assert booking["diagrams"]["detail"] == (
        f"no good_booking.dot or good_booking.mmd in {tmp_path}: {fix}"
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["no_such_module_here"], "no module named 'no_such_module_here'"),
        ([f"{SAGAS / 'good.py'}:Nope"],
         "module 'verify_sagas.good' has no 'Nope'; its sagas: verify_sagas.good:GoodOrder, "
         "verify_sagas.good:GoodBooking"),
        ([str(SAGAS / "ledger.py")], "no saga classes in"),
        ([str(SAGAS / "good.py"), "--diagrams", "/no/such/folder"],
         "--diagrams /no/such/folder: no such folder; give the folder your diagrams are "
         "committed in"),
    ],
)
def test_bad_arguments_are_one_line_naming_the_fix(args: list[str], message: str) -> None:
    result = verify(*args)
    assert result.exit_code == 2
    assert message in " ".join(result.output.split())
    assert "Traceback" not in result.output


def test_a_negative_plan_count_is_refused() -> None:
    result = verify(module("good"), "--plans", "-1")
    assert result.exit_code == 2 and "-1 is not in the range x>=0" in result.output


def test_every_example_saga_passes_every_gate() -> None:
    status, report = verdicts("examples", "--plans", "10", "--diagrams",
                              str(ROOT / "diagrams"))
    assert status == 0, {name: failing(g) for name, g in report.items() if failing(g)}
    assert len(report) >= 11
    for name, gates in report.items():
        assert gates["diagrams"]["result"] == "pass", name
        assert gates["plans"]["result"] == "pass", name
        # every example's example_sagas() gives its participants' setup and snapshot
        assert gates["idempotency"]["result"] == "pass", (name, gates["idempotency"])
        assert gates["nothing to undo"]["result"] == "pass", (name, gates["nothing to undo"])


def test_the_command_exits_for_ci_in_a_real_process() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    ran = subprocess.run(
        [sys.executable, "-m", "sagaflow", "verify", str(SAGAS / "bad_timeouts.py"),
         "--plans", "5"],
        capture_output=True, text=True, cwd=ROOT, env=env, check=False,
    )
    assert ran.returncode == 1, ran.stderr
    assert "timeouts         FAIL    step 'charge' has timeout=None" in ran.stdout
    assert "1 saga verified: 1 failed (unbounded)" in ran.stdout


def test_the_toolkit_s_hypothesis_names_import_before_hypothesis_is() -> None:
    # verify imports saga_cases first thing; hypothesis's entry point imported the
    # half-made sagaflow.testing.strategies and the import failed
    ran = subprocess.run(
        [sys.executable, "-c", "from sagaflow.testing import failure_plans, saga_cases"],
        capture_output=True, text=True, cwd=ROOT, check=False,
    )
    assert ran.returncode == 0, ran.stderr


def test_crash_points_run_with_crash_and_catch_a_step_a_recovery_runs_twice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the participant keeps its state in a file: it outlives the killed child
    monkeypatch.setenv("VERIFY_LEDGER", str(tmp_path / "ledger.json"))
    status, report = verdicts(module("crash_good"), "--plans", "5", "--crash")
    assert status == 0
    gate = report["durable_order"]["crash points"]
    assert gate["result"] == "pass"
    assert gate["detail"] == "25 crash points killed and recovered, every net effect once"

    status, report = verdicts(module("bad_crash"), "--plans", PLANS, "--crash")
    assert status == 1
    gates = report["crash_double_charge"]
    assert failing(gates) == ["crash points"]  # never retried: no plan runs it twice
    detail = gates["crash points"]["detail"]
    assert detail.splitlines()[0] == (
        "first failure: after charge:forward took effect, before its checkpoint"
    )
    assert "'card': -30 without a crash, -60 after this one" in detail


def test_a_waiting_saga_is_crashed_with_its_signal_sent_and_never_sent() -> None:
    status, report = verdicts("examples.onboarding", "--plans", "0", "--crash")
    assert status == 0
    gate = report["OnboardClientSaga"]["crash points"]
    assert gate["result"] == "pass"
    # both plans ran: the signal while the saga waits, and its time running out
    assert int(gate["detail"].split()[0]) > 20
    # its example_sagas() files the services' state: their effects are compared
    assert gate["detail"].endswith("every net effect once")


def test_a_choreography_s_crash_points_are_its_participants_not_one_process() -> None:
    # killing one process would kill no participant: every run only starts, waits past
    # its deadline and compensates, and the gate would pass having checked nothing
    status, report = verdicts("examples.choreography:OrderFlow", "--plans", "0", "--crash")
    assert status == 0
    gate = report["OrderFlow"]["crash points"]
    assert gate["result"] == "skip"
    assert "run_choreography(case, DeliveryPlan(crash=...))" in gate["detail"]


def test_crash_points_say_effects_kept_in_memory_were_not_compared() -> None:
    # good_order's ledger is a dict in the process: a crash forgets it, so comparing it
    # would compare the state before the run with itself
    status, report = verdicts(module("good") + ":GoodOrder", "--plans", "0", "--crash")
    assert status == 0
    detail = report["good_order"]["crash points"]["detail"]
    assert detail.endswith(
        "(effects not compared: the participants' state did not outlive the process that "
        "ran the saga (kept in memory?): keep it in a file or a database, or the crash "
        "points cannot see what a crash does to it)"), detail


def test_a_waiting_saga_is_crashed_on_each_path_its_payloads_take(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the simplest decision drawn is a refusal, which never charges: the double charge
    # after an approval is found only by crashing the approved path too
    monkeypatch.setenv("VERIFY_LEDGER", str(tmp_path / "ledger.json"))
    status, report = verdicts(module("bad_crash_branch"), "--plans", "0", "--crash")
    assert status == 1
    detail = report["crash_approved_charge"]["crash points"]["detail"]
    assert detail.splitlines()[0] == (
        "first failure: after charge:forward took effect, before its checkpoint"
    ), detail
    assert "'card': -30 without a crash, -60 after this one" in detail


def test_a_waiting_saga_s_crash_plans_send_its_signals_early_and_twice_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sagaflow.cli.verify import _cases, _crash_plans, _one_case
    from sagaflow.testing import Arrival

    monkeypatch.setenv("VERIFY_LEDGER", str(tmp_path / "ledger.json"))
    monkeypatch.syspath_prepend(str(ROOT / "tests"))
    from verify_sagas.bad_crash_branch import ApprovedCharge

    cases, _ = _cases(ApprovedCharge)
    plans = _crash_plans(ApprovedCharge, _one_case(cases))
    assert plans is not None
    sent = [(p.signals[0].payload.approved, p.signals[0].arrives, p.signals[0].twice)
            for p in plans[:-1]]
    assert sent == [(False, Arrival.AT_WAIT, False), (True, Arrival.AT_WAIT, False),
                    (False, Arrival.EARLY, True)]
    assert plans[-1].signals[0].arrives is Arrival.NEVER
