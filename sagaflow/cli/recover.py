"""``sagaflow recover``: resume every unfinished saga in the store from its checkpoint."""

from __future__ import annotations

import asyncio

import click

from ..stores import Stored
from .describe import Printer
from .session import ACTIVE, Session, store_options

__all__ = ["recover"]


@click.command()
@store_options
@click.option("--concurrency", type=click.IntRange(min=1), default=64, show_default=True,
              help="Sagas resumed at once (their checkpoints are committed together).")
@click.option("-v", "--verbose", is_flag=True, help="Print every lifecycle event.")
def recover(url: str | None, modules: tuple[str, ...], concurrency: int,
            verbose: bool) -> None:
    """Resume every unfinished saga in the store, from its last checkpoint.

    Run it when no process runs those sagas any more (say, at start-up after a crash).
    A step that was in flight runs again with the same idempotency key. Sagas whose
    class is unknown, whose definition changed, or whose record cannot be read are left
    alone and listed. Exit status 0 when every saga was resumed, 1 when some were not.
    """
    with Session(url, modules, readonly=False) as session:
        names: dict[str, Stored] = {}
        for stored in session.store.scan(status=ACTIVE):
            names.setdefault(stored.saga_name, stored)
        for stored in names.values():
            session.learn(stored)  # unknown ones are reported by recover, saga by saga
        with session.orchestrator([Printer(verbose)]) as orch:
            report = asyncio.run(orch.arecover(concurrency=concurrency))
    for line in report.describe().splitlines():
        click.echo(line)
    if report.skipped:
        raise SystemExit(1)
