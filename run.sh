#!/usr/bin/env bash
# The project's commands. Each sets itself up: it makes .venv (no root needed) and
# installs sagaflow with what the command needs, then runs it.
#   ./run.sh demo    the demo: every example saga, printed as it happens; writes out/
#   ./run.sh test    the test suite (the command CI runs)
#   ./run.sh lint    ruff and mypy
#   ./run.sh bench   the benchmarks (slow; never part of the tests)
#   ./run.sh deep    the deep test profiles (slow)
set -euo pipefail
cd "$(dirname "$0")"
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}

setup() {
    local extras=$1 stamp="$VENV/.installed-$1"
    if [ ! -x "$VENV/bin/python" ]; then
        "$PYTHON" -m venv "$VENV"
    fi
    if [ ! -f "$stamp" ] || [ setup.cfg -nt "$stamp" ]; then
        "$VENV/bin/python" -m pip install --quiet --upgrade pip
        "$VENV/bin/python" -m pip install --quiet -e ".[$extras]"
        touch "$stamp"
    fi
}

cmd=${1:-}
[ $# -gt 0 ] && shift
case "$cmd" in
    demo)  setup render; exec "$VENV/bin/python" -m examples "$@" ;;
    test)  setup test,render,postgres; exec "$VENV/bin/python" -m pytest "$@" ;;
    lint)  setup test,render,postgres
           "$VENV/bin/python" -m ruff check sagaflow tests examples benchmarks
           exec "$VENV/bin/python" -m mypy ;;
    bench) setup test,render,postgres; exec "$VENV/bin/python" -m benchmarks "$@" ;;
    deep)  setup test,render,postgres
           SAGAFLOW_PROFILE=deep exec "$VENV/bin/python" -m pytest --hypothesis-profile=deep -m "slow or not slow" "$@" ;;
    *) echo "usage: ./run.sh demo|test|lint|bench|deep [args...]" >&2; exit 2 ;;
esac
