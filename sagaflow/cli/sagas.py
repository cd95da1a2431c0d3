"""``sagaflow sagas ...``: look at stored sagas and act on them.

::

    sagaflow sagas list [--status S]... [--outcome O]... [--name N] [--quarantined] [--limit N]
    sagaflow sagas show ID [--format mermaid|dot|svg|png] [--output PATH]
    sagaflow sagas retry ID [--note TEXT]
    sagaflow sagas resolve ID --note TEXT
    sagaflow sagas cancel ID [--note TEXT]
    sagaflow sagas unquarantine ID
    sagaflow sagas signal ID NAME [--data JSON] [--id SIGNAL_ID]
    sagaflow sagas signal --key KEY [--saga NAME] NAME [--data JSON]

``list`` and ``show`` only read, from a store opened read-only: they need no saga
class (``show`` then prints the data as stored, without the diagram). Acting on a
saga needs its class (see :mod:`sagaflow.cli.session`). Every action is recorded in
the saga's history with its note.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from ..diagram import FORMATS, format_for, render
from ..incidents import open_incidents
from ..records import OUTCOMES, SagaStatus, StepStatus
from .deadletters import dead_letters
from .describe import Printer, describe_record, print_outcome
from .outbox import outbox
from .problems import CliError
from .session import ACTIVE, Session, store_options
from .text import columns, utc

__all__ = ["sagas"]

_STATUSES = [s.value for s in SagaStatus]


@click.group()
def sagas() -> None:
    """Look at stored sagas and act on them: list, show, retry, resolve, cancel,
    unquarantine; what waits in the outbox.

    Every command takes --store URL (default: $SAGAFLOW_STORE). Actions are recorded in
    the saga's history, with the --note given.
    """


sagas.add_command(outbox)
sagas.add_command(dead_letters)


@sagas.command("list")
@store_options
@click.option(
    "--status", "statuses", multiple=True, metavar="STATUS",
    type=click.Choice([*_STATUSES, "active"], case_sensitive=False),
    help="Only sagas with this status (repeatable): " + ", ".join(_STATUSES)
    + "; 'active' means not finished.",
)
@click.option(
    "--outcome", "outcomes", multiple=True, metavar="OUTCOME",
    type=click.Choice(OUTCOMES, case_sensitive=False),
    help="Only sagas with this outcome (repeatable): " + ", ".join(OUTCOMES)
    + ". 'rejected': a step or a wait said no (a business rejection, not a failure); "
    "'waiting': parked at a wait for a signal or a timer.",
)
@click.option("--name", default=None, help="Only sagas of this saga name.")
@click.option("--quarantined", is_flag=True,
              help="Only quarantined sagas: set aside because they could not be read or "
              "driven (see `sagaflow sagas unquarantine`).")
@click.option("--limit", type=click.IntRange(min=1), default=None,
              help="At most this many (the most recently updated).")
@click.option("--incidents", is_flag=True,
              help="The sagas that need an operator instead: FAILED and not resolved, "
              "quarantined, and (with --stalled-after) stalled; with what could not be "
              "undone.")
@click.option("--stalled-after", type=click.FloatRange(min=0.0), default=None,
              metavar="SECONDS",
              help="With --incidents: a RUNNING or COMPENSATING saga, not waiting, with no "
              "checkpoint for this long is stalled.")
def list_(url: str | None, modules: tuple[str, ...], statuses: tuple[str, ...],
          outcomes: tuple[str, ...], name: str | None, quarantined: bool,
          limit: int | None, incidents: bool, stalled_after: float | None) -> None:
    """List stored sagas, most recently updated first, with their outcome (rejected,
    waiting, timed-out, ...) and why any is quarantined.

    Needs no saga class: it reads what the store keeps beside each record. Only reads:
    the store is opened read-only.

    \b
    Examples:
      sagaflow sagas list --store sqlite:///sagas.db --status failed
      sagaflow sagas list --store sqlite:///sagas.db --quarantined
      sagaflow sagas list --store sqlite:///sagas.db --outcome rejected --outcome waiting
      SAGAFLOW_STORE=sqlite:///sagas.db sagaflow sagas list --status active --name orders
    """
    if incidents:
        _incidents(url, modules, stalled_after, name, limit)
        return
    if stalled_after is not None:
        raise CliError("--stalled-after goes with --incidents")
    wanted: set[SagaStatus] = set()
    for choice in statuses:
        wanted.update(ACTIVE if choice.lower() == "active" else [SagaStatus(choice.upper())])
    with Session(url, modules, readonly=True) as session:
        found = list(session.store.scan(status=wanted or None, name=name, newest_first=True))
    if quarantined:
        found = [s for s in found if s.quarantined is not None]
    if outcomes:
        kept = {o.lower() for o in outcomes}
        found = [s for s in found if s.outcome in kept]
    shown = found if limit is None else found[:limit]
    if not shown:
        filtered = wanted or name or quarantined or outcomes
        click.echo("no sagas" + (" match" if filtered else " in the store"))
        return
    rows = [["ID", "SAGA", "STATUS", "OUTCOME", "STATE", "UPDATED (UTC)", "QUARANTINED"]]
    for s in shown:
        rows.append([s.saga_id, s.saga_name, s.status, s.outcome,
                     str(getattr(s, "state", "")), utc(s.updated_at), s.quarantined or "-"])
    for line in columns(rows):
        click.echo(line)
    more = f" (of {len(found)}; --limit)" if len(shown) < len(found) else ""
    aside = sum(1 for s in found if s.quarantined is not None)
    note = f", {aside} quarantined" if aside and not quarantined else ""
    click.echo(f"{len(shown)} saga{'s' if len(shown) != 1 else ''}{more}{note}")


@sagas.command()
@store_options
@click.argument("saga_id", metavar="ID")
@click.option(
    "-f", "--format", "fmt", type=click.Choice(FORMATS), default=None,
    help="The diagram's format: mermaid (default) or dot are printed; svg and png need "
    "--output.",
)
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the diagram to this file (format from its suffix unless given).")
def show(url: str | None, modules: tuple[str, ...], saga_id: str, fmt: str | None,
         output: Path | None) -> None:
    """Show the saga ID: its record, history, and the diagram with its position.

    The record: status and outcome, machine state, what it waits for, data, each step's
    outcome and attempts, the compensations, the incident (what could not be undone),
    the resolution, why it is quarantined if it is, the signals stored for it (delivered
    or pending), and every lifecycle event including operators' actions. The
    diagram is the saga's state machine with the path taken and the current state
    marked. Only reads: the store is opened read-only.
    """
    if fmt is None:
        fmt = format_for(output) if output is not None and output.suffix else "mermaid"
    if fmt in ("svg", "png") and output is None:
        raise CliError(f"{fmt} is drawn into a file: give --output FILE.{fmt}")
    with Session(url, modules, readonly=True) as session:
        record, spec = session.record(saga_id)
        aside = session.raw(saga_id).quarantined
        stored_signals = session.store.signals(saga_id)
    for line in describe_record(record, spec, quarantined=aside, signals=stored_signals):
        click.echo(line)
    click.echo("")
    if spec is None:
        click.echo(
            f"diagram: needs the saga class of {record.saga_name!r}: pass --import MODULE "
            "(the data above is shown as stored)"
        )
        return
    if spec.fingerprint != record.fingerprint:
        click.echo("diagram: not drawn: the record was made by another definition of the saga")
        return
    drawing = render(record, fmt)
    if output is not None:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_bytes(drawing.encode("utf-8") if isinstance(drawing, str) else drawing)
        click.echo(f"diagram ({fmt}, current state marked): wrote {output}")
        return
    click.echo(f"diagram ({fmt}, current state marked):")
    assert isinstance(drawing, str)
    click.echo(drawing.rstrip("\n"))


@sagas.command()
@store_options
@click.argument("saga_id", metavar="ID")
@click.option("--note", default=None, help="Why: recorded in the saga's history.")
@click.option("-q", "--quiet", is_flag=True, help="Do not print each event.")
def retry(url: str | None, modules: tuple[str, ...], saga_id: str, note: str | None,
          quiet: bool) -> None:
    """Run a FAILED saga's failed compensations again (or its failed retriable step).

    Each gets a fresh retry budget. Exit status 0 when the saga ends COMPLETED or
    COMPENSATED, 1 when it is FAILED again.
    """
    with Session(url, modules, readonly=False) as session:
        result = session.act("retry", saga_id, note, [Printer(not quiet)])
    print_outcome("retry", result)
    if result.status is SagaStatus.FAILED:
        click.echo(f"still FAILED: see `sagaflow sagas show {saga_id}`")
        raise SystemExit(1)


@sagas.command()
@store_options
@click.argument("saga_id", metavar="ID")
@click.option("--note", required=True, help="What was done by hand (required; kept in "
              "the record and its history).")
def resolve(url: str | None, modules: tuple[str, ...], saga_id: str, note: str) -> None:
    """Mark the FAILED saga ID as handled by hand; --note says what was done."""
    if not note.strip():
        raise CliError("--note is empty: say what was done by hand")
    with Session(url, modules, readonly=False) as session:
        result = session.act("resolve", saga_id, note)
    print_outcome("resolve", result)


@sagas.command()
@store_options
@click.argument("saga_id", metavar="ID")
@click.option("--note", default=None, help="Why: recorded in the saga's history.")
@click.option("-q", "--quiet", is_flag=True, help="Do not print each event.")
def cancel(url: str | None, modules: tuple[str, ...], saga_id: str, note: str | None,
           quiet: bool) -> None:
    """Cancel the RUNNING saga ID: it compensates what it did, here and now.

    For a saga whose process died (or that is stuck): the step it was in has an unknown
    outcome and is compensated too. Do not cancel a saga that a live process is
    running: both would act on it (the second save is refused).
    """
    with Session(url, modules, readonly=False) as session:
        result = session.act("cancel", saga_id, note, [Printer(not quiet)])
    print_outcome("cancel", result)


@sagas.command()
@store_options
@click.argument("saga_id", metavar="ID")
def unquarantine(url: str | None, modules: tuple[str, ...], saga_id: str) -> None:
    """Lift the quarantine of the saga ID, so that recovery and workers take it again.

    A saga is quarantined when its record could not be read or driven (a damaged row,
    a class that cannot load it): fix the cause first (`sagaflow sagas show ID` says
    why), then lift it. Retrying, resolving or cancelling a saga also lifts it.
    """
    with Session(url, modules, readonly=False) as session:
        why = session.unquarantine(saga_id)
    click.echo(f"unquarantined: saga {saga_id} (it was set aside because: {why})")


@sagas.command()
@store_options
@click.argument("target", metavar="ID")
@click.argument("name", metavar="NAME")
@click.option("--data", default=None, metavar="JSON",
              help="The payload: a JSON object of the fields of the class the wait declares.")
@click.option("--id", "signal_id", default=None,
              help="The signal's id: a second signal with it is ignored (default: a new one).")
@click.option("--key", "by_key", is_flag=True,
              help="ID is the saga's business key (@saga(key=...)), not its id.")
@click.option("--saga", "saga_name", default=None,
              help="With --key: the saga name, when sagas of several kinds share the key.")
@click.option("-q", "--quiet", is_flag=True, help="Do not print each event.")
def signal(url: str | None, modules: tuple[str, ...], target: str, name: str,
           data: str | None, signal_id: str | None, by_key: bool, saga_name: str | None,
           quiet: bool) -> None:
    """Send signal NAME to the saga ID (or, with --key, to the saga whose business key
    is ID); a saga waiting for it goes on here, now.

    The signal is durable once this returns; one that comes before the saga reaches
    its wait is kept for it. Refused, storing nothing, for a finished saga, a name it
    has no wait for, or a payload that does not fit the declared class.

    \b
    Examples:
      sagaflow sagas signal 3f2a... approval --data '{"approved": true, "by": "ann"}'
      sagaflow sagas signal --key sub-42 --saga UnbundleSaga approval --data '{...}'
    """
    payload = None
    if data is not None:
        try:
            payload = json.loads(data)
        except ValueError as exc:
            raise CliError(f"--data is not JSON: {exc}") from exc
    with Session(url, modules, readonly=False) as session:
        saga_id, result = session.signal(target, name, payload, signal_id=signal_id,
                                         by_key=by_key, saga_name=saga_name,
                                         listeners=[Printer(not quiet)])
    waiting = _waiting_for(result)
    click.echo(f"signal {name!r} stored for saga {saga_id}: it is {result.status.value}"
               + (f", waiting for {waiting}" if waiting else ""))


def _incidents(url: str | None, modules: tuple[str, ...], stalled_after: float | None,
               name: str | None, limit: int | None) -> None:
    """``sagas list --incidents``: what needs an operator, oldest first."""
    with Session(url, modules, readonly=True) as session:
        found = open_incidents(session.store, stalled_after=stalled_after)
    if name is not None:
        found = [i for i in found if i.saga_name == name]
    shown = found if limit is None else found[:limit]
    if not shown:
        click.echo("no incidents")
        return
    rows = [["INCIDENT", "SAGA", "KIND", "SINCE (UTC)", "NOT UNDONE", "REASON"]]
    for i in shown:
        rows.append([i.id, i.saga_name, i.kind, utc(i.since), ", ".join(i.not_undone) or "-",
                     i.reason])
    for line in columns(rows):
        click.echo(line)
    more = f" (of {len(found)}; --limit)" if len(shown) < len(found) else ""
    click.echo(f"{len(shown)} incident(s){more}: resolve with `sagaflow sagas resolve ID "
               "--note ...`, retry with `sagaflow sagas retry ID`")


def _waiting_for(result: object) -> str:
    """What a saga's snapshot waits for, in words ('' when not parked)."""
    for step in getattr(result, "steps", ()):
        if step.status is StepStatus.WAITING:
            return f"its wait {step.name!r}"
    return ""
