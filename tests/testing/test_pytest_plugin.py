"""The pytest plugin's fixtures, and the plugin module loading as a plugin."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

from testing_sagas import Shop, reset_world, world

from sagaflow import Orchestrator, SagaStatus
from sagaflow.testing import FailurePlan, SagaCase, VirtualClock
from sagaflow.testing._hooks import hypothesis_setup


def test_saga_orchestrator_runs_on_the_virtual_clock(
    saga_orchestrator: Orchestrator, virtual_clock: VirtualClock
) -> None:
    reset_world()
    result = saga_orchestrator.run(Shop("ann", 1))
    assert result.status is SagaStatus.COMPLETED
    assert saga_orchestrator.clock is virtual_clock and virtual_clock.sleeps == []
    assert saga_orchestrator.get(result.saga_id) is not None


def test_run_saga_plan_runs_and_checks(run_saga_plan) -> None:
    run = run_saga_plan(SagaCase(Shop(), reset_world, world), FailurePlan(step="ship"),
                        driver="sync")
    assert run.status is SagaStatus.COMPENSATED and run.driver == "sync"


def test_the_hypothesis_setup_hook_registers_the_strategies() -> None:
    hypothesis_setup()  # what the ``hypothesis`` entry point calls


def test_the_strategies_module_imports_first_in_a_fresh_process() -> None:
    """Imported before hypothesis, ``sagaflow.testing.strategies`` imports it, and the
    entry point runs while the module is half made: it must neither fail nor leave
    ``FailurePlan[MySaga]`` unregistered."""
    code = textwrap.dedent("""
        from sagaflow.testing.strategies import payloads_for
        from hypothesis import strategies as st
        from sagaflow import saga, step
        from sagaflow.testing import FailurePlan

        @saga
        class One:
            @step
            def do(self, ctx): ...

            @do.compensate
            def undo(self, ctx): ...

        print(type(st.from_type(FailurePlan[One]).example()).__name__)
    """)
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "PYTHONPATH": str(root)})
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "FailurePlan"


def test_the_module_loads_as_a_pytest_plugin(tmp_path: Path) -> None:
    test = tmp_path / "test_with_plugin.py"
    test.write_text(textwrap.dedent("""
        from sagaflow import saga, step

        @saga
        class One:
            @step(readonly=True)
            def look(self, ctx): ...

        def test_fixtures(virtual_clock, saga_orchestrator, run_saga_plan):
            assert saga_orchestrator.clock is virtual_clock
            assert run_saga_plan(One()).status.value == "COMPLETED"
    """))
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run(
        # no:sagaflow: once sagaflow is installed, its pytest11 entry point registers the
        # same module under that name, and pytest refuses a second registration.
        [sys.executable, "-m", "pytest", "-q", "-p", "no:sagaflow",
         "-p", "sagaflow.testing.pytest_plugin",
         "-p", "no:cacheprovider", "--rootdir", str(tmp_path), str(test)],
        capture_output=True, text=True, cwd=tmp_path, timeout=120,
        env={**os.environ, "PYTHONPATH": str(root)},
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 passed" in done.stdout


ENTRY_POINTS = """\
[hypothesis]
sagaflow = sagaflow.testing._hooks:hypothesis_setup

[pytest11]
sagaflow = sagaflow.testing.pytest_plugin
"""


def test_the_entry_points_proposed_for_setup_cfg_work(tmp_path: Path) -> None:
    """A stand-in distribution declares the two entry points; pytest then loads the
    plugin by itself, and importing hypothesis registers ``FailurePlan[MySaga]``."""
    site = tmp_path / "site"
    info = site / "sagaflow_entry_points-0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: sagaflow-entry-points\n"
                                   "Version: 0\n")
    (info / "entry_points.txt").write_text(ENTRY_POINTS)
    test = tmp_path / "test_entry_points.py"
    test.write_text(textwrap.dedent("""
        from hypothesis import given, settings, strategies as st
        from sagaflow import saga, step
        from sagaflow.testing import FailurePlan

        @saga
        class One:
            @step
            def do(self, ctx): ...

            @do.compensate
            def undo(self, ctx): ...

        @settings(max_examples=20)
        @given(st.from_type(FailurePlan[One]))
        def test_plans(plan):
            assert plan.step in (None, "do")

        def test_fixtures(saga_orchestrator, run_saga_plan):
            assert run_saga_plan(One()).status.value == "COMPLETED"
    """))
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir",
         str(tmp_path), str(test)],
        capture_output=True, text=True, cwd=tmp_path, timeout=120,
        env={**os.environ, "PYTHONPATH": f"{site}{os.pathsep}{root}"},
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2 passed" in done.stdout
