"""The demo (the README's ``./run.sh demo``): it runs, fast, and shows what it promises."""

from __future__ import annotations

import re
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from decimal import Decimal
from pathlib import Path

from examples.__main__ import main
from examples.registration.saga import manual_actions
from sagaflow import CompensationError, SagaResult, SagaStatus, StepTimeout
from sagaflow.stores.sqlite import SQLiteStore

ROOT = Path(__file__).resolve().parents[2]


def test_the_demo_runs_every_example_and_prints_what_happens(tmp_path: Path) -> None:
    lines: list[str] = []
    assert main(["--out", str(tmp_path)], out=lines.append) == 0
    text = "\n".join(lines)

    for section in ("quickstart", "registration (seed 001)", "subscriptions (seed 000)",
                    "onboarding (seed 002)", "orders (seed 003)", "transfer (seed 004)",
                    "checkout (seed 002, in parallel)", "payouts (a batch)",
                    "choreography (seeds 002/003)", "crash and recovery"):
        assert f"═══ {section}" in text
    assert "StockReserved → payments ran charge" in text
    assert "FlowFailed → inventory undid reserve_stock" in text
    # step n/N, retries with their delays, compensations in order, status, duration, events
    assert "step 3/3 send_confirmation ✗ SMTPError: SMTP connection timeout" in text
    assert "retrying in 2s" in text and "retrying in 4s" in text
    assert "↩ rolling back 2 step(s), newest first: process_payment → create_account" in text
    assert "compensation 1/2 refund (undoes process_payment) ✓ (attempt 3/5)" in text
    assert "⇒ COMPENSATED in 6s" in text
    assert "events: AccountCreated" in text
    assert "[CRITICAL] Manual action required" in text
    assert "timed out after 10s: outcome unknown, so refund runs too" in text
    assert "nothing oversold" in text
    assert "total 300.00" in text and "total 299" not in text
    assert (tmp_path / "subscriptions.db").exists()
    assert "process killed (SIGKILL)" in text and "card charged 1 time(s)" in text
    # waits: an approval parks, comes from the command line (another process), and one
    # is refused
    assert "step 4/6 await_approval ⏸ parked: waits up to 3d for signal 'approval'" in text
    assert "⇒ RUNNING, parked at await_approval" in text
    assert (f"$ SUBSCRIPTIONS_DB={tmp_path / 'subscriptions.db'} python -m sagaflow sagas "
            f"signal --store sqlite:///{tmp_path / 'sagas.db'} --import examples.subscriptions "
            "--key sub-12 --saga UnbundleSaga approval --data") in text
    assert "signal 'approval' stored for saga unbundle-12: it is COMPLETED" in text
    assert ("error: SagaRejected: saga rejected at 'await_approval': refused by bob: the "
            "contract keeps at least half of the bundle") in text
    assert "await_approval ⏱ no signal 'approval' within 3d: compensate" in text
    assert "← WorkspaceReply ws-1 ready, 40s later" in text  # onboarding waits for it
    assert "workspace_created ⏱ no signal 'workspace' within 15m: compensate" in text
    # a parallel group: members at once, undone concurrently, recovered after a SIGKILL
    assert "reserve 0.00→0.05, charge 0.00→0.20, book 0.00→0.30" in text
    assert "book_courier ⏱ cancelled: outcome unknown, so cancel_courier runs too" in text
    assert "participant: key checkout-crash:charge_card:forward seen before" in text
    # a fan-out: each item its own line and key
    assert "step 3/4 pay[P-5] ✗ AccountClosed: account acct-5 is closed" in text
    assert "never started: pay[P-7], pay[P-8]" in text
    assert lines[-1].startswith("═══ 58 sagas run in ")
    assert lines[-1].endswith(f"58 records in {tmp_path / 'sagas.db'} ═══")
    with SQLiteStore(tmp_path / "sagas.db") as store:  # nothing is left parked
        assert [s.saga_id for s in store.scan() if not SagaStatus(s.status).is_terminal] == []


def test_the_demo_draws_every_example_and_each_failed_run_with_its_path(tmp_path: Path) -> None:
    lines: list[str] = []
    before = time.time()
    assert main(["registration", "onboarding", "--out", str(tmp_path)], out=lines.append) == 0
    folder = tmp_path / "diagrams"
    assert f"diagrams (.dot, .mmd, .svg, .png): every example saga in {folder}/" in lines
    assert (f"  and the failed runs with the path each took: {folder / 'runs'}/ "
            "(reg-4, onboard-umbrella)") in lines
    for saga in ("TransferSaga", "RegistrationSaga", "UnbundleSaga", "OnboardClientSaga",
                 "OrderSaga", "TransferMoneySaga", "CheckoutSaga", "PayoutBatchSaga",
                 "ShipOrderSaga"):
        for suffix in (".dot", ".mmd", ".svg", ".png"):
            assert (folder / f"{saga}{suffix}").stat().st_size > 100, saga + suffix
    assert (folder / "RegistrationSaga.png").read_bytes()[:4] == b"\x89PNG"
    run = folder / "runs" / "reg-4"
    assert run.with_suffix(".png").read_bytes()[:4] == b"\x89PNG"
    ET.fromstring(run.with_suffix(".svg").read_bytes())
    mermaid = run.with_suffix(".mmd").read_text(encoding="utf-8")
    assert "compensating_process_payment --> compensating_create_account : undo_failed ✔" in (
        mermaid)
    # the records carry real dates: the time the demo ran, not a virtual clock's epoch
    with SQLiteStore(tmp_path / "sagas.db") as store:
        created = [s.updated_at for s in store.scan()]
    assert created and all(before - 1 <= at <= time.time() + 3600 for at in created)


def test_the_crash_demo_kills_a_process_and_recovers_its_saga_from_the_file(
    tmp_path: Path,
) -> None:
    lines: list[str] = []
    assert main(["crash", "--out", str(tmp_path)], out=lines.append) == 0
    text = "\n".join(lines)
    # the child ran step 1, took the charge, and died before step 2 returned
    assert "   step 1/4 reserve_stock ✓   reservation=res-A-1001" in text
    assert "charge_card took effect; the process is killed (SIGKILL)" in text
    assert "   process killed (SIGKILL): exit status -9" in text
    assert "ship-1: RUNNING, at step 2/4 charge_card (attempt 1 started" in text
    # recovered here: the step re-run with the same key, which the participant knew
    assert "   step 2/4 charge_card ✓ (attempt 2/3)   charge=charge-A-1001" in text
    assert "key ship-1:charge_card:forward seen before: returns charge-A-1001" in text
    assert "recovered: step 2/4 charge_card re-run with the same idempotency key" in text
    # its duration spans the crash: from the child's start to this process's recovery
    assert re.search(r"   ⇒ COMPLETED in [0-9.]+s \(real", text)
    assert "card charged 1 time(s): 49.90 (exactly once)" in text
    assert "step 1/4 reserve_stock ✓" not in text.split("── recovery:")[1]  # not replayed

    with SQLiteStore(tmp_path / "sagas.db") as store:  # what the file holds
        record = store.load("ship-1")
    assert record is not None and record.status is SagaStatus.COMPLETED
    started = [(e.step, e.attempt) for e in record.history if type(e).__name__ == "StepStarted"]
    assert started == [("reserve_stock", 1), ("charge_card", 1), ("charge_card", 2),
                       ("book_courier", 1), ("send_receipt", 1)]
    assert record.data.charge == "charge-A-1001"


def test_the_demo_records_survive_in_the_sqlite_store(tmp_path: Path) -> None:
    main(["registration", "orders", "--out", str(tmp_path)], out=lambda line: None)

    with SQLiteStore(tmp_path / "sagas.db") as store:  # a fresh store: read from disk
        failed = store.load("reg-4")
        timed_out = store.load("order-4")
    assert failed is not None and timed_out is not None
    # what the operator needs is all in the stored record
    assert failed.status is SagaStatus.FAILED
    assert isinstance(failed.error, CompensationError)
    assert list(failed.error.failures) == ["process_payment"]
    assert manual_actions(SagaResult.of(failed))[1] == "Please refund $99.99 to user 126 manually"
    assert [type(e).__name__ for e in failed.events] == [
        "AccountCreated", "PaymentCharged", "AccountDeleted",
    ]
    assert timed_out.status is SagaStatus.COMPENSATED
    assert isinstance(timed_out.error, StepTimeout)
    assert timed_out.data.amount == Decimal("49.90")


def test_the_demo_command_runs_from_the_repository_root(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "examples", "registration", "--out", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "scenario 4: the refund fails for good" in done.stdout


def test_an_unknown_example_is_refused_with_the_choices() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "examples", "nope"], cwd=ROOT, capture_output=True, text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "no example nope: choose from quickstart, registration" in done.stderr


def test_the_quickstart_still_runs() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "examples.quickstart"], cwd=ROOT, capture_output=True, text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "-> COMPLETED" in done.stdout and "-> COMPENSATED" in done.stdout
