"""``./run.sh``: on a fresh machine it says what it is doing while it sets itself up.

A stand-in Python plays the interpreter and the virtual environment's pip, so the test
runs in a moment (a real first install takes about a minute).
"""

from __future__ import annotations

import os
import subprocess
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# Answers what run.sh asks of a Python: its version, `-m venv DIR` (a venv whose python
# is this same script), `-m pip install ...` (logged), `-m examples` (the demo).
FAKE_PYTHON = textwrap.dedent('''\
    #!/usr/bin/env bash
    case "$1" in
        -c) exit "${FAKE_TOO_OLD:-0}" ;;
        -m) case "$2" in
                venv) mkdir -p "$3/bin" && cp "$0" "$3/bin/python" ;;
                pip) echo "pip $*" >> "$FAKE_LOG" ;;
                examples) echo "the demo ran" ;;
            esac ;;
    esac
''')


def run_sh(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    python = tmp_path / "python3"
    python.write_text(FAKE_PYTHON, encoding="utf-8")
    python.chmod(0o755)
    return subprocess.run(
        [str(ROOT / "run.sh"), *args], capture_output=True, text=True, timeout=60,
        env={**os.environ, "PYTHON": str(python), "VENV": str(tmp_path / "venv"),
             "FAKE_LOG": str(tmp_path / "pip.log"), **env},
    )


def test_the_first_demo_says_it_is_installing_then_runs(tmp_path: Path) -> None:
    first = run_sh(tmp_path, "demo")
    assert first.returncode == 0, first.stderr
    assert first.stdout == "the demo ran\n"  # what setting up says goes to stderr
    said = first.stderr.splitlines()
    assert said[0] == f"run.sh: making the virtual environment {tmp_path / 'venv'} (once)"
    assert said[1].startswith("run.sh: installing sagaflow and what 'demo' needs (render)")
    assert "about a minute the first time" in said[1]
    assert said[2].startswith("run.sh: installed in ") and said[2].endswith("running 'demo'")
    assert "-e .[render]" in (tmp_path / "pip.log").read_text(encoding="utf-8")
    again = run_sh(tmp_path, "demo")  # set up already: nothing to say
    assert again.returncode == 0 and again.stderr == "" and again.stdout == "the demo ran\n"


def test_an_old_python_is_refused_with_the_fix(tmp_path: Path) -> None:
    done = run_sh(tmp_path, "demo", FAKE_TOO_OLD="1")
    assert done.returncode == 2
    assert "sagaflow needs Python 3.11 or later" in done.stderr
    assert "set PYTHON=python3.11" in done.stderr
    assert not (tmp_path / "venv").exists()
