"""examples/README.md's tables are the code's: steps, kinds, policies, line counts."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from examples.catalog import class_lines, entries, kinds_table, lines_table

README = Path(__file__).resolve().parents[2] / "examples" / "README.md"


def block(name: str) -> str:
    match = re.search(rf"<!-- {name}:start -->\n(.*?)\n<!-- {name}:end -->", README.read_text(),
                      re.S)
    assert match, f"examples/README.md lacks its <!-- {name}:start/end --> block"
    return match.group(1)


def test_the_readme_lists_every_saga_with_its_steps_and_kinds() -> None:
    assert block("kinds") == kinds_table(), "rerun: python -m examples.catalog"


def test_the_readme_gives_each_saga_class_its_true_line_count() -> None:
    assert block("lines") == lines_table(), "rerun: python -m examples.catalog"


def test_every_example_package_is_in_the_catalogue() -> None:
    packages = {p.parent.name for p in README.parent.glob("*/saga.py")}
    assert packages == {e.example for e in entries() if not e.example.endswith(".py")}


def test_line_counting_skips_blanks_comments_and_docstrings() -> None:
    class Tiny:
        """A docstring
        over two lines."""

        # a comment
        x = 1

        def f(self) -> None:
            """Doc."""
            return None

    assert class_lines(Tiny) == (4, 10)


@pytest.mark.parametrize("entry", entries(), ids=lambda e: e.example)
def test_saga_classes_stay_small(entry) -> None:  # type: ignore[no-untyped-def]
    code, total = class_lines(entry.saga)
    assert 0 < code <= total
    assert code <= 80  # the hand-written transfer of seed 004 took 60-80 lines for 2 steps
