"""The demo (``./run.sh demo``, i.e. ``python -m examples``): every example saga, printed.

Each example runs its happy path and its failure scenarios, in the spirit of seed 001's
logs: step n/N and what it produced, retries with their delays, compensations in
order, the final status, the duration and the domain events. Time is virtual: a retry
"in 16s" or a payment that hangs for 30 s takes no real time, so the whole demo runs in
a few seconds. ``python -m examples orders transfer`` runs only those examples.
The runs are recorded in sagaflow's SQLite store, ``out/sagas.db`` (dated with the real
time of the run), next to the subscription example's own domain database,
``out/subscriptions.db``: both stay there to look at. The last example, ``crash``, runs
a saga in a child process that is killed (SIGKILL) in the middle of a step, then
recovers it from ``out/sagas.db``. Last, ``out/diagrams/`` gets every example saga's
diagram (DOT, SVG, PNG, Mermaid) and, in ``out/diagrams/runs/``, each FAILED run drawn
with the path it took.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from sagaflow import GraphvizNotFound, SagaResult, SagaStatus
from sagaflow.diagram import FORMATS, SUFFIXES, write, write_all
from sagaflow.stores.sqlite import SQLiteStore

from .catalog import entries
from .console import Demo

EXAMPLES = (
    "quickstart", "registration", "subscriptions", "onboarding", "orders", "transfer",
    "checkout", "payouts", "choreography", "crash",
)


def _quickstart(d: Demo, out: Path) -> None:
    from . import quickstart

    d.section("quickstart (the README's minimal saga)", "python -m examples.quickstart")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        quickstart.main()
    for line in printed.getvalue().splitlines():
        d.note(line)


def _registration(d: Demo, out: Path) -> None:
    from .registration import demo

    demo.demo(d)


def _subscriptions(d: Demo, out: Path) -> None:
    from .subscriptions import demo

    demo.demo(d, out)


def _onboarding(d: Demo, out: Path) -> None:
    from .onboarding import demo

    demo.demo(d)


def _orders(d: Demo, out: Path) -> None:
    from .orders import demo

    demo.demo(d)


def _transfer(d: Demo, out: Path) -> None:
    from .transfer import demo

    demo.demo(d)


def _checkout(d: Demo, out: Path) -> None:
    from .checkout import demo

    demo.demo(d, out)


def _payouts(d: Demo, out: Path) -> None:
    from .payouts import demo

    demo.demo(d)


def _choreography(d: Demo, out: Path) -> None:
    from .choreography import demo

    demo.demo(d)


def _crash(d: Demo, out: Path) -> None:
    from . import crash_demo

    crash_demo.demo(d, out)


RUNNERS: dict[str, Callable[[Demo, Path], None]] = {
    "quickstart": _quickstart,
    "registration": _registration,
    "subscriptions": _subscriptions,
    "onboarding": _onboarding,
    "orders": _orders,
    "transfer": _transfer,
    "checkout": _checkout,
    "payouts": _payouts,
    "choreography": _choreography,
    "crash": _crash,
}


def main(argv: list[str] | None = None, out: Callable[[str], None] = print) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m examples", description="Run the example sagas, printing what happens."
    )
    parser.add_argument("examples", nargs="*", metavar="EXAMPLE",
                        help=f"which to run (default: all): {', '.join(EXAMPLES)}")
    parser.add_argument("--out", type=Path, default=Path("out"),
                        help="where to leave the subscription database (default: out/)")
    args = parser.parse_args(argv)
    unknown = [name for name in args.examples if name not in RUNNERS]
    if unknown:
        parser.error(f"no example {', '.join(unknown)}: choose from {', '.join(EXAMPLES)}")
    chosen = args.examples or list(EXAMPLES)
    args.out.mkdir(parents=True, exist_ok=True)

    records = args.out / "sagas.db"
    for stale in (records, records.with_name("sagas.db-wal"), records.with_name("sagas.db-shm")):
        stale.unlink(missing_ok=True)  # a fresh run: the same saga ids would be found done
    # The embedded durable store; NORMAL sync (no fsync per save) suits a demo's throwaway
    # file: it still survives the process dying, only not a power cut.
    with SQLiteStore(records, synchronous="NORMAL") as store:
        d = Demo(out, store)
        out("sagaflow demo: the seeds' sagas against small in-process services with their")
        out("own state, recorded in the SQLite store " + str(records) + ". Faults are")
        out("injected on purpose; time is virtual (durations are virtual seconds, the real")
        out("time follows in brackets).")
        started = time.perf_counter()
        for name in chosen:
            RUNNERS[name](d, args.out)
        took = time.perf_counter() - started
        tally = Counter(r.status.value for r in d.results)
        stored = len(store.query())
        drawn = draw(args.out / "diagrams", store, d.results)
    out("")
    for line in drawn:
        out(line)
    out(f"═══ {len(d.results)} sagas run in {took:.1f}s real: "
        + ", ".join(f"{n} {status}" for status, n in sorted(tally.items()))
        + f"; {stored} records in {records} ═══")
    return 0


def draw(folder: Path, store: SQLiteStore, results: list[SagaResult]) -> list[str]:
    """Every example saga's diagram, and each FAILED run's from its stored record (the
    path it took, what was and was not undone), in every format; lines saying where."""
    from .crash_demo import ShipOrderSaga

    sagas = [entry.saga for entry in entries()] + [ShipOrderSaga]
    formats: tuple[str, ...] = FORMATS
    try:
        write_all(sagas, folder, formats)
    except GraphvizNotFound as exc:  # no Graphviz to lay out SVG and PNG: text only
        formats = ("dot", "mermaid")
        write_all(sagas, folder, formats)
        why = f" (no SVG or PNG: {exc})"
    else:
        why = ""
    failed = [r.saga_id for r in results if r.status is SagaStatus.FAILED]
    for saga_id in failed:
        record = store.load(saga_id)
        assert record is not None
        for fmt in formats:
            (folder / "runs").mkdir(parents=True, exist_ok=True)
            write(record, folder / "runs" / (saga_id + SUFFIXES[fmt]), fmt)
    kinds = ", ".join(SUFFIXES[f] for f in formats)
    lines = [f"diagrams ({kinds}){why}: every example saga in {folder}/"]
    if failed:
        lines.append(f"  and the failed runs with the path each took: {folder / 'runs'}/ "
                     f"({', '.join(failed)})")
    return lines


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
