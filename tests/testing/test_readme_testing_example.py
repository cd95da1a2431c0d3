"""The README's "Testing your sagas" example runs and passes as written."""

from __future__ import annotations

import types
import unittest
from pathlib import Path

from hypothesis import settings

README = Path(__file__).resolve().parents[2] / "README.md"


def example_code() -> str:
    text = README.read_text(encoding="utf-8")
    section = text.split("\n## Testing your sagas\n", 1)[1].split("\n## ", 1)[0]
    return section.split("```python\n", 1)[1].split("```", 1)[0]


def test_the_readme_example_passes() -> None:
    module = types.ModuleType("readme_testing_example")
    exec(compile(example_code(), str(README), "exec"), module.__dict__)
    tests = [value for name, value in vars(module).items()
             if name.startswith("test_") and callable(value)]
    assert len(tests) == 3
    for test in tests:
        test()
    machine = module.TestTransferStateMachine
    assert issubclass(machine, unittest.TestCase)
    machine.settings = settings(max_examples=20, stateful_step_count=20, deadline=None)
    machine("runTest").runTest()
