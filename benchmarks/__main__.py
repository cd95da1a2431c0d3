"""``python -m benchmarks [core|sqlite ...] [--quick] [--dir DIR]``: print the figures."""

from __future__ import annotations

import argparse

from . import core, sqlite

parser = argparse.ArgumentParser(prog="python -m benchmarks")
parser.add_argument("which", nargs="*", choices=["core", "sqlite"], default=[],
                    help="which benchmarks (default: all)")
parser.add_argument("--quick", action="store_true", help="fewer rounds: a smoke run")
parser.add_argument("--dir", default=None,
                    help="where the SQLite benchmark's databases go (default: a temp folder)")
args = parser.parse_args()
which = args.which or ["core", "sqlite"]
if "core" in which:
    core.report(quick=args.quick)
if "sqlite" in which:
    if "core" in which:
        print()
    sqlite.report(quick=args.quick, directory=args.dir)
