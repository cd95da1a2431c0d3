"""``python -m benchmarks [--quick]``: print every benchmark's figures."""

from __future__ import annotations

import argparse

from . import core

parser = argparse.ArgumentParser(prog="python -m benchmarks")
parser.add_argument("--quick", action="store_true", help="fewer rounds: a smoke run")
args = parser.parse_args()
core.report(quick=args.quick)
