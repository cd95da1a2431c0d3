"""The crash demo's cases: its participants' database is a file, so ``sagaflow verify
--crash`` compares what a killed process and its recovery left (in memory it compared
nothing, and said so)."""

from __future__ import annotations

from example_fixtures import crash_verified


def test_verify_runs_every_gate_on_the_crash_demo_effects_compared() -> None:
    gates = crash_verified("examples.crash_demo")
    assert gates["idempotency"][1] == "2 compensations run twice: no change"
