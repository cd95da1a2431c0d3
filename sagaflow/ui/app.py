"""The dashboard's Starlette app: pages over a store, and the operator's actions.

Reads share one read-only store session kept open across requests (:class:`.serve.Kept`):
a request that fails with it drops it, so a store that cannot be reached is an error
page for the requests that meet it, and the next one opens it again.
An action is a POST from a confirmation page carrying the CSRF token of the browser's
session (a cookie it must echo; missing or wrong: 403, nothing changes) and the
record's version when the page was drawn (the saga changed since: refused, nothing
changes); it runs the orchestrator's verb, which records an ``OperatorAction`` with the
note ``"by <operator>: <note>"`` in the saga's history.
"""

from __future__ import annotations

import hmac
import json
import secrets
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import click
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route
from starlette.templating import Jinja2Templates

from ..cli.session import Session
from ..cli.steptable import step_lines
from ..cli.text import utc
from ..codec import default_codec
from ..errors import GraphvizNotFound
from ..records import SagaRecord, SagaStatus
from ..spec import SagaSpec
from .query import BadFilter, Filters, business_key, counts, page
from .serve import Kept

__all__ = ["CSRF_COOKIE", "TOKEN_COOKIE", "VERBS", "create_app"]

CSRF_COOKIE = "sagaflow_csrf"
TOKEN_COOKIE = "sagaflow_token"
#: The actions, and what each does, as the confirmation page says it.
VERBS = {
    "retry": "run what failed again (its failed compensations, or its failed retriable step)",
    "resolve": "mark it handled by hand, with a note saying what was done",
    "cancel": "compensate what it did, here and now (do not cancel a saga a live process runs)",
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
) -> Starlette:
    """The dashboard over the store ``url``; ``modules``: what ``--import`` names (the
    saga classes); ``operator``: who acts, put in each action's note; ``token``: when
    given, every request must carry it (``?token=`` once, then a cookie)."""

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
        with read() as session:
            found = page(session.store, filters)
            totals = counts(session.store)
        rows = [{
            "id": s.saga_id, "name": s.saga_name, "status": s.status, "outcome": s.outcome,
            "state": getattr(s, "state", ""), "updated": utc(s.updated_at),
            "key": business_key(s), "quarantined": s.quarantined,
        } for s in found.sagas]
        more = None
        if found.next is not None:
            more = "?" + urllib.parse.urlencode(filters.query(found.next))
        first = "?" + urllib.parse.urlencode(filters.query(None))
        return page_of(request, "list.html", {
            "rows": rows, "counts": totals, "total": sum(totals.values()),
            "filters": filters, "statuses": [s.value for s in SagaStatus],
            "outcomes": _outcomes(), "next": more, "first": first,
            "paged": filters.after is not None,
        })

    def saga(request: Request) -> Response:
        saga_id = request.path_params["saga_id"]
        with read() as session:
            stored = session.store.load_raw(saga_id)
            if stored is None:
                raise Refused(404, "No such saga", f"there is no saga {saga_id!r} in {url}")
            record, spec = session.record(saga_id)
            signals = session.store.signals(saga_id)
        return page_of(request, "saga.html", {
            **_view(record, spec, stored),
            "signals": signals,
            "done": request.query_params.get("done"),
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
        return page_of(request, "confirm.html", {
            "saga_id": saga_id, "verb": verb, "what": VERBS[verb], "name": stored.saga_name,
            "status": stored.status, "version": _version(stored),
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
                result = session.act(verb, saga_id, said)
            except click.ClickException as exc:
                raise Refused(409, f"Refused: {verb}", exc.message) from None
        where = f"/sagas/{urllib.parse.quote(saga_id, safe='')}"
        done = f"{verb}: now {result.status.value}"
        return RedirectResponse(f"{where}?{urllib.parse.urlencode({'done': done})}", 303)

    async def home(request: Request) -> Response:
        return RedirectResponse("/sagas", 307)

    async def missing(request: Request, exc: Exception) -> Response:
        return _problem(request, 404, "Not found", f"nothing here: {request.url.path}")

    routes = [
        Route("/", home),
        Route("/sagas", guarded(sagas)),
        Route("/sagas/{saga_id}", guarded(saga)),
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
        actions = ["cancel"]
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
    from ..diagram import render

    try:
        svg = render(record, "svg")
    except GraphvizNotFound as exc:
        return {"why": str(exc)}
    assert isinstance(svg, str)
    start = svg.find("<svg")
    return {"svg": svg[start:] if start >= 0 else svg}
