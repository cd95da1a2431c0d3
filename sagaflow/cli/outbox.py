"""``sagaflow sagas outbox``: what waits in a store's outbox to be relayed."""

from __future__ import annotations

import json

import click

from .problems import CliError
from .session import Session, store_options
from .text import columns, utc

__all__ = ["outbox"]


@click.command()
@store_options
@click.option("--json", "as_json", is_flag=True, help="Print it as one JSON object.")
def outbox(url: str | None, modules: tuple[str, ...], as_json: bool) -> None:
    """What waits in the outbox: the domain events not relayed yet, since when, and those
    a publisher refused (how many times, the last error). Read-only."""
    with Session(url, modules, readonly=True) as session:
        stats_of = getattr(session.store, "outbox_stats", None)
        if stats_of is None:
            raise CliError("this store has no outbox")
        stats = stats_of()
    if as_json:
        click.echo(json.dumps({
            "pending": stats.pending, "oldest": stats.oldest,
            "failing": [{"id": i, "attempts": a, "last_error": e} for i, a, e in stats.failing],
        }))  # fmt: skip
        return
    click.echo(f"pending: {stats.pending}")
    click.echo(f"oldest:  {utc(stats.oldest)}")
    if not stats.failing:
        click.echo("failing: none")
        return
    click.echo(f"failing: {len(stats.failing)}")
    rows = [("ID", "ATTEMPTS", "LAST ERROR")]
    rows += [(i, str(a), (e or "").splitlines()[0] if e else "-") for i, a, e in stats.failing]
    for line in columns(rows, "  "):
        click.echo(line)
