"""The sagaflow command: diagram, check, new; one-line errors; lazy commands; a real process."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import textwrap
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
from click.testing import CliRunner, Result

from examples.quickstart import TransferSaga
from sagaflow.cli import main
from sagaflow.diagram import render

ROOT = Path(__file__).resolve().parents[1]
_serial = itertools.count()

VALID = '''
import attrs
from sagaflow import Retry, saga, step

def wanted(s):
    return True

@saga
@attrs.define
class First:
    @step(timeout=5.0, retry=Retry(attempts=3, backoff=0.2))
    def reserve(self, ctx):
        pass

    @reserve.compensate(timeout=None)
    def release(self, ctx):
        pass

    @step(readonly=True, when=wanted)
    def look(self, ctx):
        pass

    @step(pivot=True)
    def commit(self, ctx):
        pass

    @step(retriable=True)
    def notify(self, ctx):
        pass

@saga(name="Second")
@attrs.define
class SecondSaga:
    @step(readonly=True, timeout=None)
    def only(self, ctx):
        pass

class NotASaga:
    pass
'''

INVALID = '''
import attrs
from sagaflow import saga, step

@saga
@attrs.define
class Broken:
    @step(timeout=-1)
    def charge(self, ctx):
        pass
'''


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture(autouse=True)
def isolated_imports(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Undo what a command adds to sys.path and sys.modules (the modules under tmp_path)."""
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.syspath_prepend(str(ROOT))
    before = set(sys.modules)
    yield
    for name in set(sys.modules) - before:
        if name.startswith("tmpmod_") or name.startswith("tmppkg_"):
            del sys.modules[name]


def module_file(tmp_path: Path, text: str) -> Path:
    """A uniquely named module file (names are never reused: sys.modules caches them)."""
    path = tmp_path / f"tmpmod_{os.getpid()}_{next(_serial)}.py"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def invoke(runner: CliRunner, *args: str) -> Result:
    return runner.invoke(main, list(args), catch_exceptions=False)


def assert_one_line_error(result: Result, *fragments: str) -> None:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("Error: ")
    for fragment in fragments:
        assert fragment in lines[0]


# --------------------------------------------------------------------------- help

@pytest.mark.parametrize(
    "args",
    [[], ["diagram"], ["check"], ["new"], ["new", "saga"]],
)
def test_every_command_has_help(runner, args):
    result = invoke(runner, *args, "--help")
    assert result.exit_code == 0
    assert "Usage: " in result.output
    assert len(result.output.splitlines()) > 5


def test_version(runner):
    result = invoke(runner, "--version")
    assert result.exit_code == 0
    assert result.output.startswith("sagaflow, version ")


# --------------------------------------------------------------------------- diagram

def test_diagram_prints_dot_and_mermaid(runner):
    result = invoke(runner, "diagram", "examples.quickstart:TransferSaga", "-f", "dot")
    assert result.exit_code == 0
    assert result.stdout == render(TransferSaga, "dot")
    result = invoke(runner, "diagram", "examples.quickstart:TransferSaga", "--format", "mermaid")
    assert result.stdout == render(TransferSaga, "mermaid")


def test_diagram_writes_svg_and_png(runner, tmp_path):
    svg = tmp_path / "out" / "transfer.svg"
    result = invoke(runner, "diagram", "examples.quickstart:TransferSaga", "--output", str(svg))
    assert result.exit_code == 0, result.output
    assert f"wrote {svg}" in result.output
    root = ET.fromstring(svg.read_bytes())
    titles = {el.text for el in root.iter("{http://www.w3.org/2000/svg}title")}
    assert {"not_started", "debit", "credit", "compensating_debit", "completed"} <= titles
    result = invoke(runner, "diagram", "examples.quickstart:TransferSaga", "-f", "png",
                    "-o", str(tmp_path) + os.sep)
    assert result.exit_code == 0, result.output
    assert (tmp_path / "TransferSaga.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_diagram_of_a_file_path_and_a_single_saga_module(runner, tmp_path):
    path = module_file(tmp_path, VALID)
    result = invoke(runner, "diagram", f"{path}:SecondSaga", "-f", "mermaid")
    assert result.exit_code == 0, result.output
    assert "only --> completed : advance" in result.stdout
    single = module_file(tmp_path, VALID.split("@saga(name=")[0])
    result = invoke(runner, "diagram", str(single), "-f", "dot")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("digraph First {")


def test_a_package_and_a_class_name_find_the_saga_in_its_modules(runner):
    # The bug: `diagram` looked only at the package's own attributes ("its sagas: none")
    # while `check` walked the package and found the class. One loader for both.
    from examples.registration.saga import RegistrationSaga

    result = invoke(runner, "diagram", "examples.registration:RegistrationSaga", "-f", "dot")
    assert result.exit_code == 0, result.output
    assert result.stdout == render(RegistrationSaga, "dot")
    result = invoke(runner, "check", "examples.registration:RegistrationSaga")
    assert result.exit_code == 0, result.output
    assert "examples.registration.saga:RegistrationSaga: 3 steps" in result.output
    assert "1 saga checked: no problems" in result.output
    # a name the package does not have: the error lists the sagas it has
    assert_one_line_error(
        invoke(runner, "diagram", "examples.registration:Nope"),
        "has no 'Nope'", "examples.registration.saga:RegistrationSaga",
    )


def test_a_class_name_two_modules_of_a_package_define_is_ambiguous(runner, tmp_path):
    package = make_package(tmp_path, {"a": VALID, "b": VALID.replace('"Second"', '"Other"')})
    assert_one_line_error(
        invoke(runner, "diagram", f"{package}:First"), "2 sagas", "are called 'First'"
    )
    result = invoke(runner, "diagram", f"{package}:Other", "-f", "dot")  # by saga name
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("digraph Other {")


@pytest.mark.parametrize(
    ("target", "fragments"),
    [
        ("no_such_module_anywhere:X", ["no module named 'no_such_module_anywhere'"]),
        ("examples.quickstart:Nope", ["has no 'Nope'", "examples.quickstart:TransferSaga"]),
        ("examples.quickstart:Bank", ["is not a saga class", "@sagaflow.saga"]),
        ("examples.quickstart:main", ["is not a saga class"]),
        ("not a module", ["is not a module path"]),
        ("missing/file.py", ["no such Python file or package"]),
    ],
)
def test_diagram_errors_are_one_line_exit_2(runner, target, fragments):
    assert_one_line_error(invoke(runner, "diagram", target, "-f", "dot"), *fragments)


def test_more_one_line_errors(runner, tmp_path):
    two = module_file(tmp_path, VALID)
    assert_one_line_error(invoke(runner, "diagram", str(two)), "defines 2 sagas", "MODULE:CLASS")
    boom = module_file(tmp_path, "x = 1 / 0\n")
    assert_one_line_error(invoke(runner, "diagram", f"{boom}:X"), "ZeroDivisionError")
    needs = module_file(tmp_path, "import no_such_dependency_here\n")
    assert_one_line_error(
        invoke(runner, "diagram", f"{needs}:X"), "failed", "no_such_dependency_here"
    )
    empty = module_file(tmp_path, "x = 1\n")
    assert_one_line_error(invoke(runner, "diagram", str(empty)), "no saga classes")
    assert_one_line_error(invoke(runner, "check", str(empty)), "no saga classes")
    assert_one_line_error(
        invoke(runner, "diagram", "examples.quickstart:TransferSaga", "--prune"), "--all"
    )
    assert_one_line_error(invoke(runner, "diagram", "examples", "--all"), "--output DIR")
    assert_one_line_error(
        invoke(runner, "diagram", "examples.quickstart:TransferSaga", "--all", "-o", "x"),
        "not MODULE:CLASS",
    )
    result = invoke(runner, "diagram", "examples.quickstart:TransferSaga", "-f", "jpeg")
    assert result.exit_code == 2 and "Traceback" not in result.output  # click's own usage error


def make_package(tmp_path: Path, modules: dict[str, str]) -> Path:
    package = tmp_path / f"tmppkg_{os.getpid()}_{next(_serial)}"
    package.mkdir()
    (package / "__init__.py").write_text("", encoding="utf-8")
    (package / "__main__.py").write_text("raise SystemExit('must not be imported')\n")
    for name, text in modules.items():
        path = package / f"{name}.py"
        path.parent.mkdir(parents=True, exist_ok=True)
        if not (path.parent / "__init__.py").exists():
            (path.parent / "__init__.py").write_text("", encoding="utf-8")
        path.write_text(textwrap.dedent(text), encoding="utf-8")
    return package


def test_diagram_all_writes_every_saga_of_a_package_and_prunes(runner, tmp_path):
    package = make_package(
        tmp_path,
        {
            "a": VALID,
            "b": "from .a import First  # imported, not defined here: drawn once\n",
            "sub/c": VALID.replace("class First", "class Third").replace(
                '@saga(name="Second")', '@saga(name="Fourth")'
            ),
        },
    )
    out = tmp_path / "diagrams"
    out.mkdir()
    (out / "Gone.svg").write_text("old")
    (out / "notes.txt").write_text("kept")
    result = invoke(runner, "diagram", str(package), "--all", "--prune", "--output", str(out))
    assert result.exit_code == 0, result.output
    names = sorted(p.name for p in out.iterdir())
    expected = [f"{n}{s}" for n in ("First", "Fourth", "Second", "Third")
                for s in (".dot", ".mmd", ".svg")]
    assert names == sorted([*expected, "notes.txt"])
    assert f"removed {out / 'Gone.svg'}" in result.output
    first = (out / "First.dot").read_text(encoding="utf-8")
    assert first.startswith("digraph First {")
    # one format only
    result = invoke(runner, "diagram", str(package), "--all", "-f", "mermaid", "-o",
                    str(tmp_path / "m"))
    assert result.exit_code == 0
    assert sorted(p.suffix for p in (tmp_path / "m").iterdir()) == [".mmd"] * 4


def test_diagram_all_refuses_two_sagas_with_one_name(runner, tmp_path):
    package = make_package(tmp_path, {"a": VALID, "b": VALID})
    result = invoke(runner, "diagram", str(package), "--all", "-o", str(tmp_path / "d"))
    assert_one_line_error(result, "both draw to First.*", "@saga(name=...)")
    assert not (tmp_path / "d").exists()  # nothing written


# --------------------------------------------------------------------------- check

def test_check_lists_each_sagas_steps(runner, tmp_path):
    path = module_file(tmp_path, VALID)
    result = invoke(runner, "check", str(path))
    assert result.exit_code == 0, result.output
    out = result.output
    assert f"{path.stem}:First: 4 steps" in out
    assert f"{path.stem}:SecondSaga (saga 'Second'): 1 step," in out
    lines = out.splitlines()
    reserve = next(line for line in lines if " reserve " in line)
    assert "compensatable" in reserve and "5s" in reserve
    assert "3 attempts, 0.2s x2" in reserve and "release (timeout none, 5 attempts" in reserve
    look = next(line for line in lines if " look " in line)
    assert "readonly" in look and "wanted" in look and "nothing to undo" in look
    assert "pivot" in next(line for line in lines if " commit " in line)
    notify = next(line for line in lines if " notify " in line)
    assert "retriable" in notify and "10 attempts" in notify
    assert lines[-1] == "2 sagas checked: no problems"


def test_check_one_class_and_a_package(runner, tmp_path):
    path = module_file(tmp_path, VALID)
    result = invoke(runner, "check", f"{path}:First")
    assert result.exit_code == 0
    assert "1 saga checked: no problems" in result.output
    result = invoke(runner, "check", "examples.quickstart")
    assert result.exit_code == 0, result.output
    assert "examples.quickstart:TransferSaga: 2 steps" in result.output


def test_check_an_invalid_definition_exits_1_with_the_problems(runner, tmp_path):
    path = module_file(tmp_path, INVALID)
    result = invoke(runner, "check", str(path))
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    assert "saga 'Broken' has 2 definition problems" in result.output
    assert "timeout must be a number of seconds > 0" in result.output
    assert "has no compensation and no kind" in result.output
    assert result.output.splitlines()[-1] == "1 saga checked: 2 problems"
    # in a package, the valid sagas are still listed next to the invalid one
    package = make_package(tmp_path, {"good": VALID, "bad": INVALID})
    result = invoke(runner, "check", str(package))
    assert result.exit_code == 1
    assert ":First: 4 steps" in result.output and "saga 'Broken'" in result.output
    # diagram of an invalid definition: the same problems, exit 1
    result = invoke(runner, "diagram", f"{path}:Broken", "-f", "dot")
    assert result.exit_code == 1
    assert "has no compensation and no kind" in result.output
    result = invoke(runner, "diagram", str(package), "--all", "-o", str(tmp_path / "d"))
    assert result.exit_code == 1 and "saga 'Broken'" in result.output


# --------------------------------------------------------------------------- extension

def test_commands_from_other_modules_load_lazily_and_fail_in_one_line(runner, tmp_path):
    module = module_file(
        tmp_path,
        '''
        import click

        @click.command()
        def hello():
            """Say hello."""
            click.echo("hello from elsewhere")

        @click.command()
        def explode():
            """Fail unexpectedly."""
            raise RuntimeError("boom")

        not_a_command = 3
        ''',
    )
    sys.path.insert(0, str(tmp_path))
    name = module.stem
    main.add_lazy_command("hello", f"{name}:hello")
    main.add_lazy_command("explode", f"{name}:explode")
    main.add_lazy_command("broken", "no_such_module_for_cli:cmd")
    main.add_lazy_command("odd", f"{name}:not_a_command")
    try:
        listing = invoke(runner, "--help")
        assert listing.exit_code == 0
        assert "hello" in listing.output and "Say hello." in listing.output
        # a command whose module cannot load is listed, never breaks --help
        assert "(unavailable: the 'broken' command could not be loaded" in listing.output
        assert invoke(runner, "hello").output == "hello from elsewhere\n"
        assert_one_line_error(invoke(runner, "explode"), "RuntimeError: boom", "SAGAFLOW_DEBUG")
        assert_one_line_error(invoke(runner, "broken"), "could not be loaded")
        assert_one_line_error(invoke(runner, "odd"), "not a click command")
        # added the eager way, too
        main.add_command(click.Command("eager", callback=lambda: click.echo("eager")))
        assert invoke(runner, "eager").output == "eager\n"
    finally:
        for cmd in ("hello", "explode", "broken", "odd"):
            main.lazy.pop(cmd, None)
        main.commands.pop("eager", None)


# --------------------------------------------------------------------------- a real process

def test_python_m_sagaflow_in_a_real_process(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-m", "sagaflow", "diagram", "examples.quickstart:TransferSaga",
         "-f", "mermaid"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == render(TransferSaga, "mermaid")
    done = subprocess.run(
        [sys.executable, "-m", "sagaflow", "check", "examples.quickstart:Bank"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 2
    assert done.stderr.startswith("Error: examples.quickstart:Bank is not a saga class")
    assert "Traceback" not in done.stderr and done.stderr.count("\n") == 1
    svg = tmp_path / "t.svg"
    done = subprocess.run(
        [sys.executable, "-m", "sagaflow", "diagram", "examples/quickstart.py:TransferSaga",
         "-o", str(svg)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr
    ET.fromstring(svg.read_bytes())
