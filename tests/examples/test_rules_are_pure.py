"""Every example's ``rules.py`` is pure business logic: it imports nothing from sagaflow.

Checked two ways: statically (its imports, parsed with ``ast``, are all from a short list
of pure standard-library modules: no sagaflow, no relative imports that could reach it,
nothing that does I/O or reads a clock), and at run time (importing it in a fresh
interpreter does not load sagaflow).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
RULES = sorted(EXAMPLES.glob("*/rules.py"))
PURE = {
    "__future__", "collections", "collections.abc", "dataclasses", "decimal", "enum",
    "fractions", "functools", "itertools", "math", "operator", "typing",
}


def test_there_are_rules_modules_to_check() -> None:
    assert EXAMPLES / "subscriptions" / "rules.py" in RULES


def imports_of(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            found.append("." * node.level + (node.module or ""))
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id == "__import__"
        ):
            found.append("__import__()")
    return found


@pytest.mark.parametrize("path", RULES, ids=lambda p: p.parent.name)
def test_rules_import_only_pure_standard_modules(path: Path) -> None:
    imports = imports_of(path)
    assert not [m for m in imports if m.split(".")[0] == "sagaflow"], imports
    assert not [m for m in imports if m.startswith(".")], "no relative imports in rules"
    assert set(imports) <= PURE, f"impure imports: {sorted(set(imports) - PURE)}"


@pytest.mark.parametrize("path", RULES, ids=lambda p: p.parent.name)
def test_importing_rules_does_not_load_sagaflow(path: Path) -> None:
    module = f"examples.{path.parent.name}.rules"
    code = f"import sys, {module}; sys.exit('sagaflow' in sys.modules)"
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=EXAMPLES.parent, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr or f"importing {module} loaded sagaflow"
