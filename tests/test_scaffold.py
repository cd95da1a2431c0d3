"""`sagaflow new saga`: the scaffold passes `check`, and its generated tests pass."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from sagaflow import ScaffoldError
from sagaflow.cli import main
from sagaflow.scaffold import create, names_for, parse_steps, plan

ROOT = Path(__file__).resolve().parents[1]
_serial = itertools.count()


@pytest.fixture(autouse=True)
def isolated_imports(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(sys, "path", list(sys.path))
    before = set(sys.modules)
    yield
    for name in set(sys.modules) - before:
        if name.split(".")[0].startswith(("scaffolded", "host")):
            del sys.modules[name]


def fresh(prefix: str = "scaffolded") -> str:
    """A package name never used before in this process (sys.modules caches imports)."""
    return f"{prefix}{os.getpid()}x{next(_serial)}"


def invoke(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def run_pytest(folder: Path) -> subprocess.CompletedProcess[str]:
    """pytest as its console script runs it: -P keeps the current folder off sys.path, so
    the generated test must import the saga on its own (tests/__init__.py does it)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-P", "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"],
        cwd=folder, env=env, capture_output=True, text=True, timeout=300,
    )


def test_the_scaffold_passes_check_and_its_tests_pass(tmp_path):
    first, second = fresh(), fresh()
    result = invoke("new", "saga", first, "--steps", "reserve,charge,ship", "--path",
                    str(tmp_path))
    assert result.exit_code == 0, result.output
    package = tmp_path / first
    for path in (package / "__init__.py", package / "saga.py", package / "rules.py",
                 tmp_path / "tests" / f"test_{first}.py", tmp_path / "tests" / "__init__.py"):
        assert path.is_file(), path
        assert f"wrote {path}" in result.output
    # the rules module stays free of the framework
    rules = (package / "rules.py").read_text(encoding="utf-8")
    assert "sagaflow" not in rules.replace('"""', "").split("from __future__")[1]
    # with a pivot and a retriable step after it
    result = invoke("new", "saga", second, "--steps", "hold,pay,confirm,notify", "--pivot",
                    "confirm", "--path", str(tmp_path))
    assert result.exit_code == 0, result.output

    checked = invoke("check", str(package / "saga.py"))
    assert checked.exit_code == 0, checked.output
    assert "1 saga checked: no problems" in checked.output
    assert checked.output.count("compensatable") == 3
    drawn = invoke("diagram", str(tmp_path / second), "-f", "dot")  # the package's one saga
    assert drawn.exit_code == 0, drawn.output
    assert drawn.stdout.startswith(f"digraph {names_for(second)[0]} {{")
    checked = invoke("check", str(tmp_path / second))
    assert checked.exit_code == 0, checked.output
    lines = checked.output.splitlines()
    assert "pivot" in next(line for line in lines if " confirm " in line)
    assert "retriable" in next(line for line in lines if " notify " in line)

    done = run_pytest(tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert " passed" in done.stdout and "failed" not in done.stdout


def test_the_scaffold_lints_clean(tmp_path):
    name = fresh()
    create(name, "a,b", tmp_path, pivot="b")
    # As in a user's project: run from its root, where sagaflow is a third-party package,
    # with this project's rules.
    done = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--isolated", "--no-cache",
         "--select", "E,F,W,I,B,UP,SIM,RUF", "--line-length", "100", "--target-version",
         "py311", "."],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_inside_a_package_the_imports_are_dotted(tmp_path):
    host = tmp_path / fresh("host")
    host.mkdir()
    (host / "__init__.py").write_text("", encoding="utf-8")
    name = fresh()
    made = create(name, "a,b", host)
    assert made.module == f"{host.name}.{name}.saga"
    test_text = (host / "tests" / f"test_{name}.py").read_text(encoding="utf-8")
    assert f"from {host.name}.{name}.saga import" in test_text
    checked = invoke("check", f"{made.module}:{made.class_name}")
    assert checked.exit_code == 2  # tmp_path is not on sys.path: the module path alone fails
    sys.path.insert(0, str(tmp_path))
    checked = invoke("check", f"{made.module}:{made.class_name}")
    assert checked.exit_code == 0, checked.output


def test_it_never_overwrites(tmp_path):
    name = fresh()
    assert invoke("new", "saga", name, "--path", str(tmp_path)).exit_code == 0
    saga_file = tmp_path / name / "saga.py"
    saga_file.write_text("# mine\n", encoding="utf-8")
    result = invoke("new", "saga", name, "--steps", "x,y", "--path", str(tmp_path))
    assert result.exit_code == 2
    assert "not overwriting" in result.stderr and str(saga_file) in result.stderr
    assert saga_file.read_text(encoding="utf-8") == "# mine\n"
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["1abc"], "is not a Python name"),
        (["email"], "is taken"),
        (["EmailSaga"], "is taken"),
        (["Good", "--steps", "a,a"], "listed twice"),
        (["Good", "--steps", "a,completed"], "reserved for the state machine"),
        (["Good", "--steps", "a,compensating_a"], "reserved for the state machine"),
        (["Good", "--steps", "a,undo_a"], "would clash with the compensation"),
        (["Good", "--steps", "a,class"], "not a usable method name"),
        (["Good", "--steps", "request_id"], "is a field of the generated saga"),
        (["Good", "--steps", " , "], "names no step"),
        (["Good", "--steps", "a,b", "--pivot", "c"], "is not one of the steps"),
    ],
)
def test_bad_names_are_one_line_errors(tmp_path, args, fragment):
    result = invoke("new", "saga", *args, "--path", str(tmp_path))
    assert result.exit_code == 2, result.output
    assert fragment in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not any(tmp_path.iterdir())  # nothing written


def test_names():
    for name in ("OnboardClientSaga", "OnboardClient", "onboard_client", "onboard_client_saga"):
        assert names_for(name) == ("OnboardClientSaga", "onboard_client")
    assert names_for("HTTPSync") == ("HTTPSyncSaga", "http_sync")
    assert names_for("Saga") == ("SagaSaga", "saga")
    assert parse_steps(" a, b ,c ") == ["a", "b", "c"]
    with pytest.raises(ScaffoldError):
        names_for("bad-name")


def test_plan_writes_nothing(tmp_path):
    made = plan("Quiet", ["one"], tmp_path)
    assert made.class_name == "QuietSaga" and made.package == "quiet"
    assert not any(tmp_path.iterdir())
    assert set(made.files) == {
        tmp_path / "quiet" / "__init__.py",
        tmp_path / "quiet" / "saga.py",
        tmp_path / "quiet" / "rules.py",
        tmp_path / "tests" / "test_quiet.py",
        tmp_path / "tests" / "__init__.py",
    }
    (tmp_path / "tests").mkdir()
    # an existing tests/ folder is the project's own: no __init__.py is added to it
    assert tmp_path / "tests" / "__init__.py" not in plan("Quiet", ["one"], tmp_path).files
