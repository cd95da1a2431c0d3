"""The dashboard's Starlette app: pages over a store, and the operator's actions.

Reads share one read-only store session kept open across requests (:class:`.serve.Kept`):
a request that fails with it drops it, so a store that cannot be reached is an error
page for the requests that meet it, and the next one opens it again.
An action is a POST from a confirmation page carrying the CSRF token of the browser's
session (a cookie it must echo; missing or wrong: 403, nothing changes) and the
record's version when the page was drawn (the saga changed since: refused, nothing
changes); it runs the orchestrator's verb (the same as the CLI's, through
:class:`~sagaflow.cli.session.Session`), which records it in the saga's history: an
``OperatorAction`` with the note ``"by <operator>: <note>"``, or for a signal the
signal's id ``"by <operator> <hex>"`` in its ``SignalDelivered``.

A saga's page that is not terminal reloads itself every ``refresh`` seconds (a meta
refresh: no JavaScript), so an operator watching a running saga sees it move on; the
reloaded page of a finished saga has no refresh, so it stops there.
"""

from __future__ import annotations

import hmac
import json
import secrets
import urllib.parse
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import click
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route
from starlette.templating import Jinja2Templates

from ..cli.check import _groups, _retry, _seconds, _undo
from ..cli.session import Session
from ..cli.steptable import step_lines
from ..cli.text import utc
from ..codec import default_codec
from ..diagram.model import _fan_out_line, _wait_lines
from ..errors import GraphvizNotFound
from ..incidents import Incident, incident_of
from ..records import SagaRecord, SagaStatus
from ..spec import SagaSpec
from .query import BadFilter, Filters, business_key, counts, incident_kind, page
from .serve import Kept

__all__ = ["CSRF_COOKIE", "TOKEN_COOKIE", "VERBS", "create_app"]

CSRF_COOKIE = "sagaflow_csrf"
TOKEN_COOKIE = "sagaflow_token"
#: The actions, and what each does, as the confirmation page says it.
VERBS = {
    "retry": "run what failed again (its failed compensations, or its failed retriable step)",
    "resolve": "mark it handled by hand, with a note saying what was done",
    "cancel": "compensate what it did, here and now (do not cancel a saga a live process runs)",
    "signal": "send it a signal it waits for, with the payload given below (JSON): a saga "
    "parked at that wait goes on here, now",
    "unquarantine": "lift its quarantine so that recovery and workers take it again (fix "
    "what made it fail first)",
}

_TEMPLATES = Jinja2Templates(directory=str(Path(__file__).parent / "templates"))
_TEMPLATES.env.filters["utc"] = utc


class Refused(Exception):
    """A request answered with a page saying why (``status``: its HTTP status)."""

    def __init__(self, status: int, title: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.title = title
        self.message = message


def create_app(
    url: str,
    modules: Sequence[str] = (),
    *,
    operator: str = "operator",
    token: str | None = None,
    stalled_after: float | None = None,
    refresh: int = 2,
) -> Starlette:
    """The dashboard over the store ``url``; ``modules``: what ``--import`` names (the
    saga classes); ``operator``: who acts, put in each action's note; ``token``: when
    given, every request must carry it (``?token=`` once, then a cookie);
    ``stalled_after``: seconds without a checkpoint after which a RUNNING or
    COMPENSATING saga that is not waiting is shown as a stalled incident (``None``:
    never); ``refresh``: whole seconds between two reloads of a saga's page while it is not
    terminal (0: never)."""

    kept = Kept(lambda: Session(url, modules, readonly=True), Session.close, keep=(Refused,))

    def read() -> AbstractContextManager[Session]:
        return kept.use()

    def page_of(request: Request, template: str, context: dict[str, Any],
                status: int = 200) -> Response:
        csrf = request.cookies.get(CSRF_COOKIE) or secrets.token_urlsafe(32)
        context = {"operator": operator, "store": url, "csrf": csrf, **context}
        response = _TEMPLATES.TemplateResponse(request, template, context, status_code=status)
        if request.cookies.get(CSRF_COOKIE) != csrf:
            response.set_cookie(CSRF_COOKIE, csrf, httponly=True, samesite="strict")
        return response

    def guarded(handler: Callable[[Request], Response]) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            from starlette.concurrency import run_in_threadpool

            given = request.query_params.get("token")
            if token is not None:
                held = request.cookies.get(TOKEN_COOKIE) or ""
                if not hmac.compare_digest((given or held).encode(), token.encode()):
                    return _problem(request, 401, "Token needed",
                                    "this dashboard needs its token: open it with ?token=...")
            form: dict[str, str] = {}
            if request.method == "POST":
                form = {k: str(v) for k, v in (await request.form()).items()}
            request.state.form = form
            try:
                response: Response = await run_in_threadpool(handler, request)
            except Refused as exc:
                response = _problem(request, exc.status, exc.title, exc.message)
            except click.ClickException as exc:  # the store could not be opened, ...
                response = _problem(request, 503, "The store cannot be read", exc.message)
            except Exception as exc:  # a store that went away mid-request, ...
                response = _problem(request, 503, "The store cannot be read",
                                    f"{type(exc).__name__}: {exc}")
            if token is not None and given is not None:
                response.set_cookie(TOKEN_COOKIE, token, httponly=True, samesite="strict")
            return response

        return endpoint

    def _problem(request: Request, status: int, title: str, message: str) -> Response:
        return page_of(request, "error.html", {"title": title, "message": message}, status)

    def sagas(request: Request) -> Response:
        try:
            filters = Filters.parse(request.query_params)
        except BadFilter as exc:
            raise Refused(400, f"Bad filter: {exc.parameter}",
                          f"the parameter {exc.parameter!r} cannot be read: {exc.problem}"
                          ) from None
        back = request.query_params.getlist("back")
        only = filters.incidents is not None
        with read() as session:
            listed = page(session.store, filters, stalled_after=stalled_after)
            found, ahead = listed.sagas, listed.next
            totals = counts(session.store)
        rows = [{
            "id": s.saga_id, "name": s.saga_name, "status": s.status, "outcome": s.outcome,
            "state": getattr(s, "state", ""), "updated": utc(s.updated_at),
            "key": business_key(s), "quarantined": s.quarantined,
            "incident": incident_kind(s) if only else "",
        } for s in found]
        more = previous = None
        if ahead is not None:  # the next page keeps where this one started, to come back
            here = request.query_params.get("after") or ""
            more = _query(filters.query(ahead) + [("back", b) for b in [*back, here]])
        if filters.after is not None and back:
            before = filters.query(None)
            if back[-1]:
                before.append(("after", back[-1]))
            previous = _query(before + [("back", b) for b in back[:-1]])
        return page_of(request, "list.html", {
            "rows": rows, "counts": totals, "total": sum(totals.values()),
            "filters": filters, "statuses": [s.value for s in SagaStatus],
            "outcomes": _outcomes(), "next": more, "previous": previous,
            "first": _query(filters.query(None)),
            "paged": filters.after is not None, "incidents": only,
        })

    def saga(request: Request) -> Response:
        saga_id = request.path_params["saga_id"]
        with read() as session:
            stored = session.store.load_raw(saga_id)
            if stored is None:
                raise Refused(404, "No such saga", f"there is no saga {saga_id!r} in {url}")
            record, spec = session.record(saga_id)
            signals = session.store.signals(saga_id)
            incident = incident_of(session.store, stored, stalled_after=stalled_after)
        view = _view(record, spec, stored)
        return page_of(request, "saga.html", {
            **view,
            "signals": signals,
            "done": request.query_params.get("done"),
            "incident": None if incident is None else _incident(incident, record),
            "refresh": refresh if refresh > 0 and not record.status.is_terminal else None,
        })

    def saga_class(request: Request) -> Response:
        name = request.path_params["name"]
        with read() as session:
            spec = session.specs.get(name)
            first = next(session.store.scan(name=name, limit=1), None)
            if spec is None and first is not None:
                spec = session.learn(first)
            if spec is None and first is None:
                known = ", ".join(sorted(session.specs)) or "none imported"
                raise Refused(404, "No such saga class",
                              f"there is no saga class {name!r} here (imported: {known}) "
                              f"and no saga of it in {url}")
            per_status = counts(session.store, name)
        return page_of(request, "class.html", {
            "name": name, "spec": spec, "counts": per_status,
            "total": sum(per_status.values()),
            "steps": [] if spec is None else _definition(spec),
            "blocks": [] if spec is None else [line.strip() for line in _groups(spec)],
            "diagram": _class_diagram(name, spec),
            "seconds": _seconds,
        })

    def confirm(request: Request) -> Response:
        saga_id, verb = request.path_params["saga_id"], request.path_params["verb"]
        if verb not in VERBS:
            raise Refused(404, "No such action", f"{verb!r} is not an action: "
                          + ", ".join(VERBS))
        with read() as session:
            stored = session.store.load_raw(saga_id)
            if stored is None:
                raise Refused(404, "No such saga", f"there is no saga {saga_id!r} in {url}")
            offered: list[dict[str, str]] = []
            if verb == "signal":
                record, spec = session.record(saga_id)
                offered = _signals_offered(record, spec)
        return page_of(request, "confirm.html", {
            "saga_id": saga_id, "verb": verb, "what": VERBS[verb], "name": stored.saga_name,
            "status": stored.status, "version": _version(stored), "offered": offered,
            "quarantined": stored.quarantined,
        })

    def act(request: Request) -> Response:
        saga_id, verb = request.path_params["saga_id"], request.path_params["verb"]
        form: dict[str, str] = request.state.form
        sent, held = form.get("csrf", ""), request.cookies.get(CSRF_COOKIE, "")
        if not sent or not held or not hmac.compare_digest(sent.encode(), held.encode()):
            raise Refused(403, "Refused: no valid CSRF token",
                          "this action did not come from the dashboard's own page "
                          "(its CSRF token is missing or wrong): nothing was done")
        if verb not in VERBS:
            raise Refused(404, "No such action", f"{verb!r} is not an action: "
                          + ", ".join(VERBS))
        note = form.get("note", "").strip()
        if verb == "resolve" and not note:
            raise Refused(400, "A note is needed",
                          "resolve needs a note saying what was done by hand: nothing was done")
        try:
            seen = int(form.get("version", ""))
        except ValueError:
            raise Refused(400, "Bad request: version",
                          "the parameter 'version' is missing or not a number") from None
        with Session(url, modules, readonly=False) as session:
            stored = session.store.load_raw(saga_id)
            if stored is None:
                raise Refused(404, "No such saga", f"there is no saga {saga_id!r} in {url}")
            now = _version(stored)
            if now != seen:
                raise Refused(409, "Refused: the saga changed",
                              f"saga {saga_id} changed since the page was drawn (version "
                              f"{seen} then, {now} now, {stored.status}): nothing was done; "
                              "look at it again before acting")
            said = f"by {operator}" + (f": {note}" if note else "")
            try:
                done = perform(session, verb, saga_id, said, form)
            except click.ClickException as exc:
                raise Refused(409, f"Refused: {verb}", exc.message) from None
        where = f"/sagas/{urllib.parse.quote(saga_id, safe='')}"
        return RedirectResponse(f"{where}?{urllib.parse.urlencode({'done': done})}", 303)

    def perform(session: Session, verb: str, saga_id: str, said: str,
                form: dict[str, str]) -> str:
        """Run ``verb`` on ``saga_id`` as the CLI does; what the page says was done."""
        if verb == "signal":
            name, payload = _signal_form(form)
            # the signal's id says who sent it: its SignalDelivered shows it in the history
            sent_by = f"by {operator} {uuid.uuid4().hex[:12]}"
            _, result = session.signal(saga_id, name, payload, signal_id=sent_by)
            return f"signal {name}: now {result.status.value}"
        if verb == "unquarantine":
            why = session.unquarantine(saga_id, said)
            return f"unquarantine: lifted (it was set aside because: {why})"
        result = session.act(verb, saga_id, said)
        return f"{verb}: now {result.status.value}"

    async def home(request: Request) -> Response:
        return RedirectResponse("/sagas", 307)

    async def missing(request: Request, exc: Exception) -> Response:
        return _problem(request, 404, "Not found", f"nothing here: {request.url.path}")

    routes = [
        Route("/", home),
        Route("/sagas", guarded(sagas)),
        Route("/sagas/{saga_id}", guarded(saga)),
        Route("/classes/{name}", guarded(saga_class)),
        Route("/sagas/{saga_id}/confirm/{verb}", guarded(confirm)),
        Route("/sagas/{saga_id}/{verb}", guarded(act), methods=["POST"]),
    ]
    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        kept.close()

    app = Starlette(routes=routes, exception_handlers={404: missing}, lifespan=lifespan)
    app.state.kept = kept
    return app


def _outcomes() -> list[str]:
    from ..records import OUTCOMES

    return list(OUTCOMES)


def _version(stored: Any) -> int:
    record = getattr(stored, "record", None)
    return int(record.version if record is not None else stored.version)


def _view(record: SagaRecord, spec: SagaSpec | None, stored: Any) -> dict[str, Any]:
    """What the saga's page shows of ``record``."""
    if spec is None:
        data: Any = record.data
    else:
        data = json.loads(default_codec.dump_data(record))
    status = record.status
    actions = []
    if status is SagaStatus.FAILED:
        actions = ["retry", "resolve"]
    elif status is SagaStatus.RUNNING:
        actions = ["signal", "cancel"] if record.waiting else ["cancel"]
    if stored.quarantined is not None:
        actions.append("unquarantine")
    return {
        "record": record,
        "data": json.dumps(data, default=str, ensure_ascii=False, indent=2),
        "outcome": stored.outcome,
        "quarantined": stored.quarantined,
        "version": _version(stored),
        "steps": "\n".join(step_lines(record, spec)),
        "history": [(utc(e.at), f"+{e.at - record.created_at:.3f}s", e.describe())
                    for e in record.history],
        "events": [repr(e) for e in record.events],
        "diagram": _diagram(record, spec),
        "actions": actions,
        "error": None if record.error is None
        else f"{type(record.error).__name__}: {record.error}",
    }


def _diagram(record: SagaRecord, spec: SagaSpec | None) -> dict[str, str]:
    """The run's diagram as inline SVG (``svg``), or why there is none (``why``)."""
    if spec is None:
        return {"why": f"needs the saga class of {record.saga_name!r}: start the dashboard "
                "with --import MODULE"}
    if spec.fingerprint != record.fingerprint:
        return {"why": "not drawn: the record was made by another definition of the saga"}
    return _svg(record)


def _class_diagram(name: str, spec: SagaSpec | None) -> dict[str, str]:
    """The class's diagram as inline SVG (``svg``), or why there is none (``why``)."""
    if spec is None:
        return {"why": f"needs the saga class of {name!r}: start the dashboard with "
                "--import MODULE"}
    return _svg(spec)


def _svg(drawn: Any) -> dict[str, str]:
    """``drawn`` (a run or a saga's spec) as inline SVG, or why it cannot be drawn."""
    from ..diagram import render

    try:
        svg = render(drawn, "svg")
    except GraphvizNotFound as exc:
        return {"why": str(exc)}
    assert isinstance(svg, str)
    start = svg.find("<svg")
    return {"svg": svg[start:] if start >= 0 else svg}


def _query(pairs: list[tuple[str, str]]) -> str:
    return "?" + urllib.parse.urlencode(pairs)


def _incident(incident: Incident, record: SagaRecord) -> dict[str, Any]:
    """What the saga's page shows of its open incident: what could not be undone with
    the error each compensation met, when the record has them."""
    failures = record.failures
    return {
        "id": incident.id, "kind": incident.kind, "reason": incident.reason,
        "since": utc(incident.since),
        # Without failed compensations, what it names is a step after the pivot that
        # failed for good: nothing to undo, it is to be finished.
        "left": "could not be undone" if failures else "could not be finished",
        "not_undone": [f"{name}: {failures[name]}" if name in failures else name
                       for name in incident.not_undone],
    }


def _definition(spec: SagaSpec) -> list[dict[str, str]]:
    """The rows of a saga class's definition: one per step (member, fan-out, wait)."""
    rows = []
    for s in spec.steps:
        block = "" if s.group is None else f"group {spec.groups[s.group].name}"
        fan = _fan_out_line(s)
        rows.append({
            "n": str(s.index + 1), "name": s.name + (" [async]" if s.is_async else ""),
            "kind": "wait" if s.wait is not None else s.kind.value,
            "block": ", ".join(x for x in (block, f"fan-out {fan}" if fan else "") if x),
            "wait": "; ".join(_wait_lines(s.wait)) if s.wait is not None else "",
            "when": s.guard_name or "", "timeout": _seconds(s.timeout),
            "retry": _retry(s.retry), "compensation": _undo(s),
        })
    return rows


def _signals_offered(record: SagaRecord, spec: SagaSpec | None) -> list[dict[str, str]]:
    """The signals a saga's page offers to send: the one it waits for first, then the
    others its class declares (one sent early is kept for its wait), each with the
    fields of its payload class."""
    names = [record.waiting] if record.waiting else []
    if spec is not None:
        names += [n for n in spec.signals if n not in names]
    offered = []
    for name in names:
        if spec is None:
            offered.append({"name": name, "payload": "its payload class is not known here"})
            continue
        wait = spec.steps[spec.signals[name][0]].wait if spec.signals.get(name) else None
        offered.append({"name": name, "payload": _fields(None if wait is None else wait.payload)})
    return offered


def _fields(cls: type | None) -> str:
    """A payload class and its fields, as the signal form shows them."""
    if cls is None:
        return "no payload"
    fields = attrs.fields(cls) if attrs.has(cls) else ()
    shown = ", ".join(f"{f.name}: {getattr(f.type, '__name__', f.type)}" for f in fields)
    return f"{cls.__qualname__}({shown})" if shown else cls.__qualname__


def _signal_form(form: dict[str, str]) -> tuple[str, Any]:
    """The signal's name and payload (decoded JSON, ``None`` when empty) from the form;
    :class:`Refused` (400) naming what cannot be read."""
    name = form.get("signal", "").strip()
    if not name:
        raise Refused(400, "Bad request: signal", "choose the signal to send: nothing was sent")
    text = form.get("payload", "").strip()
    if not text:
        return name, None
    try:
        return name, json.loads(text)
    except ValueError as exc:
        raise Refused(400, "Bad payload", f"the payload is not JSON ({exc}): write the "
                      "fields of its class as a JSON object; nothing was sent") from None
