"""Operator commands: ``sagaflow sagas list|show|retry|resolve|cancel`` and ``sagaflow recover``.

::

    sagaflow sagas list [--status S]... [--name N] [--limit N]
    sagaflow sagas show ID [--format mermaid|dot|svg|png] [--output PATH]
    sagaflow sagas retry ID [--note TEXT]
    sagaflow sagas resolve ID --note TEXT
    sagaflow sagas cancel ID [--note TEXT]
    sagaflow recover [--concurrency N] [--verbose]

Every command reads a durable store: ``--store URL`` (``sqlite:///sagas.db``), or the
``SAGAFLOW_STORE`` environment variable. Acting on a saga (retry, cancel, recover) and
drawing it need its saga class: ``--import MODULE`` imports a module (or every module
of a package) and registers the saga classes in it. Without it, the class is imported
from the path the store recorded with the saga (``module:QualName``), which works when
that module is importable from the current directory; ``list`` and ``show`` work with
no class at all (``show`` then prints the data as stored, without the diagram).

Every action (retry, resolve, cancel) is recorded in the saga's history with its note.
Errors print one line and exit with status 2 (see :mod:`sagaflow.cli`).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import urllib.parse
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import click

from . import engine
from .cli import CliError, DefinitionProblems, find_sagas, import_target
from .codec import default_codec, import_path
from .definition import SagaSpec, is_saga, spec_of
from .diagram import FORMATS, format_for, render
from .errors import (
    ConcurrentModification,
    SagaflowError,
    SagaNotFound,
    UnknownSaga,
)
from .events import LifecycleEvent
from .orchestrator import Orchestrator
from .records import CompensationStatus, SagaRecord, SagaResult, SagaStatus
from .stores import Store, Stored, open_store

__all__ = ["recover", "sagas"]

STORE_ENV = "SAGAFLOW_STORE"
_STATUSES = [s.value for s in SagaStatus]
_ACTIVE = (SagaStatus.NOT_STARTED, SagaStatus.RUNNING, SagaStatus.COMPENSATING)


# --------------------------------------------------------------------------- opening

def _open(url: str | None) -> Store:
    """The store ``url`` names; one-line errors for a missing URL, an empty memory
    store, or a SQLite file that is not there (opening would create an empty one)."""
    if url is None or not url.strip():
        raise CliError(
            f"no store given: pass --store URL (e.g. --store sqlite:///sagas.db) or set "
            f"{STORE_ENV}"
        )
    scheme, sep, rest = url.strip().partition("://")
    if sep and scheme.lower() == "memory":
        raise CliError(
            f"{url!r} is a fresh, empty store in every process: give the durable store the "
            "application uses, e.g. --store sqlite:///sagas.db"
        )
    if sep and scheme.lower() == "sqlite":
        location = rest.partition("?")[0]
        path = urllib.parse.unquote(location[1:]) if location.startswith("/") else ""
        if path not in ("", ":memory:") and not Path(path).expanduser().exists():
            raise CliError(
                f"no SQLite store at {path!r} (from {url!r}): check the path "
                "(sqlite:///relative/path.db, sqlite:////absolute/path.db)"
            )
    try:
        return open_store(url)
    except (ValueError, TypeError, SagaflowError) as exc:
        raise CliError(str(exc)) from None


def _imported(modules: Sequence[str]) -> list[type]:
    """The saga classes of each ``--import`` module: those it defines (in every module
    of a package) and those it imports."""
    found: list[type] = []
    for name in modules:
        sagas, errors = find_sagas(name)
        if errors:
            raise DefinitionProblems(errors)
        module = import_target(name)  # imported by find_sagas: this only looks it up
        sagas += [v for v in vars(module).values() if isinstance(v, type) and is_saga(v)]
        if not sagas:
            raise CliError(
                f"--import {name}: no saga class in that module; give the module that "
                "defines (or imports) your @saga classes"
            )
        found += [cls for cls in dict.fromkeys(sagas) if cls not in found]
    return found


class _Session:
    """A store, an orchestrator on it, and the saga classes it knows, for one command."""

    def __init__(self, url: str | None, modules: Sequence[str], listeners: Iterable[Any] = ()):
        self.url = url
        classes = _imported(modules)
        self.store = _open(url)
        self.orch = Orchestrator(self.store, listeners, sagas=classes)
        self.known: dict[str, SagaSpec] = {spec_of(c).name: spec_of(c) for c in classes}

    def close(self) -> None:
        self.orch.close()
        close = getattr(self.store, "close", None)
        if close is not None:
            close()

    def raw(self, saga_id: str) -> Stored:
        stored = self.store.load_raw(saga_id)
        if stored is None:
            raise CliError(
                f"no saga {saga_id!r} in {self.url}: `sagaflow sagas list` shows the ids"
            )
        return stored

    def learn(self, stored: Stored) -> SagaSpec | None:
        """The spec for ``stored``'s saga name: registered by ``--import``, else imported
        from the class path the store recorded; ``None`` if it cannot be found."""
        spec = self.known.get(stored.saga_name)
        if spec is not None:
            return spec
        data_type = getattr(stored, "data_type", None)
        if not isinstance(data_type, str) or ":" not in data_type:
            return None
        try:
            import_target(data_type.partition(":")[0])
            cls = import_path(data_type)
        except (click.ClickException, SagaflowError):
            return None
        if not is_saga(cls) or spec_of(cls).name != stored.saga_name:
            return None
        self.orch.register(cls)
        spec = self.known[stored.saga_name] = spec_of(cls)
        return spec

    def record(self, saga_id: str) -> tuple[SagaRecord, SagaSpec | None]:
        """The decoded record of ``saga_id`` and its spec, or (the data left as stored
        JSON) ``None`` when the class is not at hand."""
        stored = self.raw(saga_id)
        spec = self.learn(stored)
        if spec is not None:
            try:
                return self.store.decode(stored, spec.cls), spec
            except UnknownSaga:
                pass
            except SagaflowError as exc:  # a corrupted record: say which, and why
                raise CliError(str(exc)) from None
        try:
            decode: Callable[..., SagaRecord] = self.store.decode
            return decode(stored, raw_data=True), None
        except TypeError:  # a store that cannot decode without the class
            raise CliError(
                f"saga {saga_id!r} is a {stored.saga_name!r} saga whose class is unknown: "
                "pass --import MODULE with the module that defines it"
            ) from None
        except SagaflowError as exc:
            raise CliError(str(exc)) from None

    def spec_to_act(self, saga_id: str, verb: str) -> SagaSpec:
        stored = self.raw(saga_id)
        spec = self.learn(stored)
        if spec is None:
            where = getattr(stored, "data_type", None)
            hint = f" (recorded as {where}, not importable from here)" if where else ""
            raise CliError(
                f"cannot {verb} saga {saga_id!r}: its class, saga {stored.saga_name!r}, is "
                f"unknown{hint}: pass --import MODULE with the module that defines it"
            )
        return spec


def _act(
    session: _Session, verb: str, saga_id: str, note: str | None
) -> SagaResult:
    """Run the operator verb ``verb`` on ``saga_id`` (its action recorded in the history)."""
    spec = session.spec_to_act(saga_id, verb)
    orch = session.orch
    try:
        if not spec.is_async:
            method: Callable[[str, Any], SagaResult] = getattr(orch, verb)
            return method(saga_id, note)
        # The orchestrator's verbs drive a saga on this thread, which async steps cannot
        # run on: the same action through the engine's public verbs and the async driver.
        record = orch.store.load(saga_id)
        if record is None:
            raise SagaNotFound(saga_id)
        spec = orch.spec_for(record)
        action: Callable[..., None] = getattr(engine, verb)
        action(spec, record, orch.clock.now(), note)
        asyncio.run(orch.adrive(spec, record))
        return SagaResult.of(record)
    except engine.OperatorError as exc:
        raise CliError(str(exc)) from None
    except ConcurrentModification as exc:
        raise CliError(
            f"{exc}: another process saved this saga meanwhile (is it still running "
            "there?); look again with `sagaflow sagas show`"
        ) from None
    except SagaflowError as exc:
        raise CliError(str(exc)) from None


# --------------------------------------------------------------------------- printing

def _when(at: float | None) -> str:
    if at is None:
        return "-"
    stamp = dt.datetime.fromtimestamp(at, dt.UTC).isoformat(timespec="milliseconds")
    return stamp.replace("+00:00", "Z")


def _columns(rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip()
            for r in rows]


def _event_line(event: LifecycleEvent, start: float) -> str:
    offset = event.at - start
    return f"{_when(event.at)}  +{offset:.3f}s  {event.describe()}"


def _data_json(record: SagaRecord, spec: SagaSpec | None) -> str:
    data = record.data
    if spec is not None:
        data = default_codec.converter.unstructure(data, type(data))
    return json.dumps(data, default=str, ensure_ascii=False)


def _describe_record(record: SagaRecord, spec: SagaSpec | None) -> list[str]:
    duration = ""
    if record.finished_at is not None:
        duration = f" in {record.finished_at - record.created_at:.3f}s"
    lines = [
        f"saga {record.saga_id} ({record.saga_name}): {record.status.value}{duration}",
        f"  state       {record.state}",
        f"  created     {_when(record.created_at)}",
        f"  updated     {_when(record.updated_at)}",
        f"  finished    {_when(record.finished_at)}",
        f"  fingerprint {record.fingerprint}"
        + ("" if spec is None or spec.fingerprint == record.fingerprint
           else f" (the class now has {spec.fingerprint}: its definition changed)"),
    ]
    if record.deadline_at is not None:
        lines.append(f"  deadline    {_when(record.deadline_at)}")
    if record.wake_at is not None:
        lines.append(f"  retry at    {_when(record.wake_at)} (waiting to retry)")
    lines.append(f"  data        {_data_json(record, spec)}")
    if record.error is not None:
        lines.append(f"  error       {type(record.error).__name__}: {record.error}")

    lines += ["", "steps:"]
    rows = [["#", "step", "kind", "status", "attempts", "compensation", "attempts", "error"]]
    for i, s in enumerate(record.steps):
        kind = spec.steps[i].kind.value if spec is not None and i < len(spec.steps) else "?"
        comp = s.compensation.value if s.compensation is not CompensationStatus.NOT_NEEDED else "-"
        errors = [e for e in (s.error, s.compensation_error) if e]
        rows.append([
            str(i + 1), s.name, kind, s.status.value + (" (timed out)" if s.timed_out else ""),
            str(s.attempts), comp, str(s.compensation_attempts) if comp != "-" else "",
            " / ".join(errors) or "",
        ])
    lines += ["  " + line for line in _columns(rows)]

    if record.failures:
        lines += ["", "incident: could not be undone, finish by hand:"]
        lines += [f"  {step}: {error}" for step, error in record.failures.items()]
    if record.resolution is not None:
        lines += ["", f"resolution: {record.resolution}"]

    lines += ["", f"history ({len(record.history)} events):"]
    lines += ["  " + _event_line(e, record.created_at) for e in record.history]
    if record.events:
        lines += ["", f"domain events ({len(record.events)}):"]
        lines += [f"  {e!r}" for e in record.events]

    hint = _next_steps(record)
    if hint:
        lines += ["", f"next: {hint}"]
    return lines


def _next_steps(record: SagaRecord) -> str:
    sid = record.saga_id
    if record.status is SagaStatus.FAILED and record.resolution is None:
        return (
            f"sagaflow sagas retry {sid}  (run what failed again), or "
            f"sagaflow sagas resolve {sid} --note \"what was done by hand\""
        )
    if not record.status.is_terminal:
        cancel = f", or sagaflow sagas cancel {sid} (compensate)" if (
            record.status is SagaStatus.RUNNING) else ""
        return (
            "running, or its process died: `sagaflow recover` resumes it when no process "
            f"runs it{cancel}"
        )
    return ""


def _print_outcome(verb: str, result: SagaResult) -> None:
    click.echo(
        f"{verb}: saga {result.saga_id} ({result.saga_name}) is now {result.status.value}"
        + (f"; resolution: {result.resolution}" if result.resolution else "")
    )


class _Printer:
    """A lifecycle listener that prints each event of the sagas acted on (a resumed
    saga's listeners hear only what happens from now on)."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled

    def __call__(self, event: LifecycleEvent) -> None:
        if self.enabled:
            click.echo(f"  {event.saga_id}: {event.describe()}")


# --------------------------------------------------------------------------- options

def _common(fn: Callable[..., Any]) -> Callable[..., Any]:
    fn = click.option(
        "--import", "modules", multiple=True, metavar="MODULE",
        help="Import MODULE (dotted path; a package: all its modules) and register the "
        "saga classes in it. Repeatable. Default: import each saga's class from the path "
        "the store recorded.",
    )(fn)
    return click.option(
        "--store", "url", envvar=STORE_ENV, metavar="URL",
        help=f"The store, e.g. sqlite:///sagas.db (default: ${STORE_ENV}).",
    )(fn)


# --------------------------------------------------------------------------- sagas

@click.group()
def sagas() -> None:
    """Look at stored sagas and act on them: list, show, retry, resolve, cancel.

    Every command takes --store URL (default: $SAGAFLOW_STORE). Actions are recorded in
    the saga's history, with the --note given.
    """


@sagas.command("list")
@_common
@click.option(
    "--status", "statuses", multiple=True, metavar="STATUS",
    type=click.Choice([*_STATUSES, "active"], case_sensitive=False),
    help="Only sagas with this status (repeatable): " + ", ".join(_STATUSES)
    + "; 'active' means not finished.",
)
@click.option("--name", default=None, help="Only sagas of this saga name.")
@click.option("--limit", type=click.IntRange(min=1), default=None,
              help="At most this many (the most recently updated).")
def list_(url: str | None, modules: tuple[str, ...], statuses: tuple[str, ...],
          name: str | None, limit: int | None) -> None:
    """List stored sagas, most recently updated first.

    Needs no saga class: it reads what the store keeps beside each record.

    \b
    Examples:
      sagaflow sagas list --store sqlite:///sagas.db --status failed
      SAGAFLOW_STORE=sqlite:///sagas.db sagaflow sagas list --status active --name orders
    """
    wanted: set[SagaStatus] = set()
    for choice in statuses:
        wanted.update(_ACTIVE if choice.lower() == "active" else [SagaStatus(choice.upper())])
    session = _Session(url, modules)
    try:
        found = list(session.store.scan(status=wanted or None, name=name))
    finally:
        session.close()
    found.sort(key=lambda s: (-s.updated_at, s.saga_id))
    shown = found if limit is None else found[:limit]
    if not shown:
        click.echo("no sagas" + (" match" if wanted or name else " in the store"))
        return
    rows = [["ID", "SAGA", "STATUS", "STATE", "UPDATED (UTC)"]]
    for s in shown:
        rows.append([s.saga_id, s.saga_name, s.status, str(getattr(s, "state", "")),
                     _when(s.updated_at)])
    for line in _columns(rows):
        click.echo(line)
    more = f" (of {len(found)}; --limit)" if len(shown) < len(found) else ""
    click.echo(f"{len(shown)} saga{'s' if len(shown) != 1 else ''}{more}")


@sagas.command()
@_common
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

    The record: status, machine state, data, each step's outcome and attempts, the
    compensations, the incident (what could not be undone), the resolution, and every
    lifecycle event including operators' actions. The diagram is the saga's state
    machine with the path taken and the current state marked.
    """
    if fmt is None:
        fmt = format_for(output) if output is not None and output.suffix else "mermaid"
    if fmt in ("svg", "png") and output is None:
        raise CliError(f"{fmt} is drawn into a file: give --output FILE.{fmt}")
    session = _Session(url, modules)
    try:
        record, spec = session.record(saga_id)
    finally:
        session.close()
    for line in _describe_record(record, spec):
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
@_common
@click.argument("saga_id", metavar="ID")
@click.option("--note", default=None, help="Why: recorded in the saga's history.")
@click.option("-q", "--quiet", is_flag=True, help="Do not print each event.")
def retry(url: str | None, modules: tuple[str, ...], saga_id: str, note: str | None,
          quiet: bool) -> None:
    """Run a FAILED saga's failed compensations again (or its failed retriable step).

    Each gets a fresh retry budget. Exit status 0 when the saga ends COMPLETED or
    COMPENSATED, 1 when it is FAILED again.
    """
    session = _Session(url, modules, [_Printer(not quiet)])
    try:
        result = _act(session, "retry", saga_id, note)
    finally:
        session.close()
    _print_outcome("retry", result)
    if result.status is SagaStatus.FAILED:
        click.echo(f"still FAILED: see `sagaflow sagas show {saga_id}`")
        raise SystemExit(1)


@sagas.command()
@_common
@click.argument("saga_id", metavar="ID")
@click.option("--note", required=True, help="What was done by hand (required; kept in "
              "the record and its history).")
def resolve(url: str | None, modules: tuple[str, ...], saga_id: str, note: str) -> None:
    """Mark the FAILED saga ID as handled by hand; --note says what was done."""
    if not note.strip():
        raise CliError("--note is empty: say what was done by hand")
    session = _Session(url, modules)
    try:
        result = _act(session, "resolve", saga_id, note)
    finally:
        session.close()
    _print_outcome("resolve", result)


@sagas.command()
@_common
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
    session = _Session(url, modules, [_Printer(not quiet)])
    try:
        result = _act(session, "cancel", saga_id, note)
    finally:
        session.close()
    _print_outcome("cancel", result)


# --------------------------------------------------------------------------- recover

@click.command()
@_common
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
    session = _Session(url, modules, [_Printer(verbose)])
    try:
        names: dict[str, Stored] = {}
        for stored in session.store.scan(status=_ACTIVE):
            names.setdefault(stored.saga_name, stored)
        for stored in names.values():
            session.learn(stored)  # unknown ones are reported by recover, saga by saga
        report = asyncio.run(session.orch.arecover(concurrency=concurrency))
    finally:
        session.close()
    for line in report.describe().splitlines():
        click.echo(line)
    if report.skipped:
        raise SystemExit(1)
