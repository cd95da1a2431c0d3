"""``python -m benchmarks [core|sqlite|postgres ...] [--quick] [--dir DIR]``: print the figures."""

from __future__ import annotations

import argparse

from . import codec, core, postgres, sqlite

KINDS = ["core", "sqlite", "postgres", "codec"]
parser = argparse.ArgumentParser(prog="python -m benchmarks")
# No choices=: with nargs="*", Python 3.11's argparse rejects the empty default.
parser.add_argument("which", nargs="*", metavar="{core,sqlite,postgres,codec}",
                    help="which benchmarks (default: all)")
parser.add_argument("--quick", action="store_true", help="fewer rounds: a smoke run")
parser.add_argument("--dir", default=None,
                    help="where the SQLite benchmark's databases go (default: a temp folder)")
args = parser.parse_args()
unknown = [w for w in args.which if w not in KINDS]
if unknown:
    parser.error(f"unknown benchmark {unknown[0]!r}: choose from {', '.join(KINDS)}")
which = args.which or KINDS
if "core" in which:
    core.report(quick=args.quick)
if "sqlite" in which:
    if "core" in which:
        print()
    sqlite.report(quick=args.quick, directory=args.dir)
if "postgres" in which:
    if "core" in which or "sqlite" in which:
        print()
    postgres.report(quick=args.quick)
if "codec" in which:
    if len(which) > 1:
        print()
    codec.report(quick=args.quick)
