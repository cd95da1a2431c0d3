"""``python -m benchmarks [core|codec|sqlite|postgres|waits|groups|outbox|ui ...] [--quick]
[--dir DIR]``: print the figures (no argument: all of them), each as a ratio against its baseline
measured in the same run, then the store figures once more as one table with their
targets."""

from __future__ import annotations

import argparse
import importlib
import os

KINDS = ["core", "codec", "sqlite", "postgres", "waits", "groups", "outbox", "ui"]
parser = argparse.ArgumentParser(prog="python -m benchmarks")
# No choices=: with nargs="*", Python 3.11's argparse rejects the empty default.
parser.add_argument("which", nargs="*",
                    metavar="{core,codec,sqlite,postgres,waits,groups,outbox,ui}",
                    help="which benchmarks (default: all)")
parser.add_argument("--quick", action="store_true", help="fewer rounds: a smoke run")
parser.add_argument("--dir", default=None,
                    help="where the SQLite databases of sqlite, waits and groups go (default: a "
                         "temp folder)")
args = parser.parse_args()
unknown = [w for w in args.which if w not in KINDS]
if unknown:
    parser.error(f"unknown benchmark {unknown[0]!r}: choose from {', '.join(KINDS)}")
which = args.which or KINDS
print(f"machine: {os.cpu_count()} cpus, load average {os.getloadavg()[0]:.1f} at the start"
      + (" (quick: a smoke run, fewer rounds)" if args.quick else ""))
figures: dict[str, object] = {}
for k, kind in enumerate(which):
    if k:
        print()
    module = importlib.import_module(f"benchmarks.{kind}")
    if kind in ("sqlite", "waits", "groups", "outbox", "ui"):
        found = module.report(quick=args.quick, directory=args.dir)
    else:
        found = module.report(quick=args.quick)
    if isinstance(found, dict):
        figures.update(found)
rows = [(group, row) for group, found in figures.items() if isinstance(found, list)
        for row in found if getattr(row, "ratio", None) is not None]
if rows:
    print(f"\nthe store figures, each against its baseline of the same run (load average "
          f"{os.getloadavg()[0]:.1f} at the end)")
    for group, row in rows:
        print(f"  {group:18} {row.what:52} {row.ratio:6.2f}x {row.against:20} {row.verdict}")
