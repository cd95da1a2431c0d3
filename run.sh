#!/usr/bin/env bash
# The project's commands. Each sets itself up: it makes .venv (no root needed) and
# installs sagaflow with what the command needs, then runs it.
#   ./run.sh ui ...  the operator's dashboard (sagaflow ui ...)
#   ./run.sh demo    the demo: every example saga, printed as it happens; writes out/
#   ./run.sh test    the test suite (the command CI runs)
#   ./run.sh lint    ruff and mypy
#   ./run.sh bench   the benchmarks (slow; never part of the tests)
#   ./run.sh deep    the deep test profiles (slow)
set -euo pipefail
cd "$(dirname "$0")"
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}

# What setting up is doing goes to stderr, so that a command's own output stays clean.
say() { echo "run.sh: $*" >&2; }

setup() {
    # The stamp holds a digest of what decides the install, not a time: a work tree laid
    # anew (fresh mtimes) or a changed dependency list both reinstall when they must.
    local extras=$1 stamp="$VENV/.installed-$1" digest
    digest=$(cat setup.cfg pyproject.toml | sha256sum | cut -d' ' -f1)
    if [ ! -x "$VENV/bin/python" ]; then
        if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
            say "sagaflow needs Python 3.11 or later; '$PYTHON' is not: set PYTHON=python3.11 (or later)"
            exit 2
        fi
        say "making the virtual environment $VENV (once)"
        "$PYTHON" -m venv "$VENV"
    fi
    if [ "$(cat "$stamp" 2>/dev/null)" != "$digest" ]; then
        say "installing sagaflow and what '$cmd' needs ($extras) into $VENV:" \
            "about a minute the first time, quiet while it works..."
        local started=$SECONDS
        "$VENV/bin/python" -m pip install --quiet --upgrade pip
        # setuptools warns that the folder sagaflow/ may shadow the editable install: that
        # folder is the package itself, so the warning is only noise on a first run.
        PYTHONWARNINGS="ignore:Editable installation" \
            "$VENV/bin/python" -m pip install --quiet -e ".[$extras]"
        echo "$digest" > "$stamp"
        say "installed in $((SECONDS - started))s; running '$cmd'"
    fi
}

cmd=${1:-}
[ $# -gt 0 ] && shift
case "$cmd" in
    demo)  setup render; exec "$VENV/bin/python" -m examples "$@" ;;
    test)  setup test,render,postgres,redis,ui,otel; exec "$VENV/bin/python" -m pytest "$@" ;;
    lint)  setup test,render,postgres,redis,ui,otel
           "$VENV/bin/python" -m ruff check sagaflow tests examples benchmarks
           exec "$VENV/bin/python" -m mypy ;;
    bench) setup test,render,postgres,redis,ui,otel; exec "$VENV/bin/python" -m benchmarks "$@" ;;
    deep)  setup test,render,postgres,redis,ui,otel
           SAGAFLOW_PROFILE=deep exec "$VENV/bin/python" -m pytest --hypothesis-profile=deep -m "slow or not slow" "$@" ;;
    ui)    setup render,postgres,ui; exec "$VENV/bin/python" -m sagaflow ui "$@" ;;
    *) echo "usage: ./run.sh demo|test|lint|bench|deep|ui [args...]" >&2; exit 2 ;;
esac
