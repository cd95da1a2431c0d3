"""The README's "Testing your sagas" example runs and passes as written."""

from __future__ import annotations

import types
import unittest
from pathlib import Path

from hypothesis import settings

README = Path(__file__).resolve().parents[2] / "README.md"


def example_code(n: int = 1) -> str:
    """The section's ``n``-th Python block."""
    text = README.read_text(encoding="utf-8")
    section = text.split("\n## Testing your sagas\n", 1)[1].split("\n## ", 1)[0]
    return section.split("```python\n")[n].split("```", 1)[0]


def run_example(n: int, name: str) -> types.ModuleType:
    module = types.ModuleType(name)
    exec(compile(example_code(n), str(README), "exec"), module.__dict__)
    return module


def test_the_readme_example_passes() -> None:
    module = run_example(1, "readme_testing_example")
    tests = [value for name, value in vars(module).items()
             if name.startswith("test_") and callable(value)]
    assert len(tests) == 3
    for test in tests:
        test()
    machine = module.TestTransferStateMachine
    assert issubclass(machine, unittest.TestCase)
    machine.settings = settings(max_examples=20, stateful_step_count=20, deadline=None)
    machine("runTest").runTest()


def test_the_readme_waiting_example_passes() -> None:
    module = run_example(2, "readme_waiting_example")
    tests = [value for name, value in vars(module).items()
             if name.startswith("test_") and callable(value)]
    assert len(tests) == 2
    for test in tests:
        test()
