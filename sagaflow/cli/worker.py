"""``sagaflow worker``: run sagas in the background from a store until told to stop.

::

    sagaflow worker --store URL --import myapp.sagas [--import ...]
                    [--concurrency 64] [--poll 0.5] [--grace 30]
                    [--lease 30] [--park-after 1] [-v]          (the last two: PostgreSQL)
                    [--stalled-after SECONDS] [--telemetry]

On PostgreSQL (``postgresql://user@host/db``) start as many as needed, on as many
machines: they share the queue through the database. On a SQLite file
(``sqlite:///sagas.db``) one worker serves the file (a second one refuses to start):
it recovers interrupted sagas when it starts, then resumes waiting sagas when their
signal comes (from any process) or their time does (see :mod:`sagaflow.worker`).
SIGTERM or SIGINT stops a worker gracefully: it takes nothing more, lets running sagas
finish for ``--grace`` seconds, then lets go of the rest; a second signal: at once.

The group loads this module only when the command is used.
"""

from __future__ import annotations

import logging
import os
import signal

import click

from ..errors import SagaflowError
from ..runtime import Instrument
from ..stores.url import open_store
from ..worker import Worker
from .loader import load_imports
from .problems import CliError
from .session import STORE_ENV

__all__ = ["worker"]


@click.command()
@click.option("--store", "url", envvar=STORE_ENV, metavar="URL",
              help="The store: postgresql://user@host/db (many workers) or "
                   f"sqlite:///sagas.db (one worker per file); or ${STORE_ENV}.")
@click.option("--import", "modules", multiple=True, metavar="MODULE",
              help="A module (or package) whose saga classes this worker runs; repeatable.")
@click.option("--concurrency", type=click.IntRange(min=1), default=64, show_default=True,
              help="Sagas run at once by this worker.")
@click.option("--lease", type=click.FloatRange(min=0.1), default=30.0, show_default=True,
              help="PostgreSQL: seconds without a heartbeat after which another worker "
                   "takes a saga over.")
@click.option("--poll", type=click.FloatRange(min=0.001), default=0.5, show_default=True,
              help="Seconds an idle worker goes at most without looking for sagas whose "
                   "time came (signals and new sagas wake it at once).")
@click.option("--park-after", type=click.FloatRange(min=0.0), default=1.0,
              show_default=True,
              help="PostgreSQL: a retry waiting longer than this goes back to the queue "
                   "until due.")
@click.option("--grace", type=click.FloatRange(min=0.0), default=30.0, show_default=True,
              help="On SIGTERM, seconds running sagas get to finish before being let go of.")
@click.option("--stalled-after", type=click.FloatRange(min=0.0, min_open=True), default=None,
              metavar="SECONDS",
              help="Look for sagas RUNNING or COMPENSATING with no checkpoint for this long "
                   "(stalled) now and then, and log each one once as an incident.")
@click.option("--telemetry", is_flag=True,
              help="Trace and measure the sagas run with OpenTelemetry (sagaflow[otel]), "
                   "through the global providers the process sets up (an imported module, "
                   "or opentelemetry-instrument).")
@click.option("-v", "--verbose", count=True,
              help="Log the worker's activity (-vv: every lifecycle event too).")
def worker(
    url: str | None,
    modules: tuple[str, ...],
    concurrency: int,
    lease: float,
    poll: float,
    park_after: float,
    grace: float,
    stalled_after: float | None,
    telemetry: bool,
    verbose: int,
) -> None:
    """Run sagas in the background, and resume waiting sagas when their signal or
    their time comes.

    \b
    PostgreSQL: many workers side by side. Each claims due sagas of the imported
    classes, runs them, keeps their leases alive, takes over those of workers that
    died, and puts a saga that waits back in the queue until its signal or its time
    (LISTEN/NOTIFY wakes the workers at once).
    SQLite: one worker per file (no queue: sagas start in the application). It
    recovers the sagas interrupted in the file when it starts, then resumes a waiting
    saga when a signal for it is stored (by any process: sagaflow sagas signal) or its
    time comes.

    With --stalled-after, each stalled saga is logged (a warning) once as an incident.
    With --telemetry, each run, step and compensation is a span and the sagas are
    counted (OpenTelemetry; the SDK and its exporters are set up by the process: by a
    module given with --import, say, or by running under opentelemetry-instrument).

    Stops on SIGTERM or SIGINT: running sagas get --grace seconds to finish; the rest
    are released to other workers (PostgreSQL) or left at their last checkpoint
    (SQLite).
    """
    if not url or not url.strip():
        raise CliError(
            "no store given: pass --store postgresql://user@host/db (or sqlite:///sagas.db) "
            f"or set {STORE_ENV}"
        )
    if not modules:
        raise CliError(
            "no saga classes: pass --import MODULE with the module that defines your sagas"
        )
    scheme = url.strip().partition("://")[0].lower()
    if scheme not in ("postgresql", "postgres", "postgresql+psycopg", "sqlite"):
        raise CliError(
            f"{url!r}: a worker serves a PostgreSQL database (postgresql://user@host/db) "
            "or a SQLite file (sqlite:///sagas.db)"
        )
    # A stop asked for while the worker starts up (imports, connecting) is honoured
    # once it runs, rather than killing it half-way.
    stops: list[int] = []
    made: list[Worker] = []

    def early(sig: int, frame: object) -> None:
        stops.append(sig)
        if made:
            made[0].stop()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, early)
    if verbose:
        logging.basicConfig(
            level=logging.INFO if verbose == 1 else logging.DEBUG,
            format=f"%(asctime)s sagaflow worker[{os.getpid()}] %(message)s",
        )
    classes = load_imports(modules)
    instrument = _telemetry() if telemetry else None

    try:
        store = open_store(url)
    except ImportError as exc:
        raise CliError(str(exc)) from None
    except (ValueError, SagaflowError) as exc:
        raise CliError(str(exc)) from None
    try:
        try:
            runner = Worker(
                store,
                classes,
                concurrency=concurrency,
                lease=lease,
                poll=poll,
                park_after=park_after,
                grace=grace,
                stalled_after=stalled_after,
                telemetry=instrument,
            )
        except (TypeError, SagaflowError) as exc:  # a store it cannot serve; a second one
            raise CliError(str(exc)) from None
        made.append(runner)
        if stops:
            runner.stop()
        names = ", ".join(sorted(c.__qualname__ for c in classes))
        click.echo(f"sagaflow worker {runner.id}: running {names} from {store!r}", err=True)
        stats = runner.run()
    finally:
        close = getattr(store, "close", None)
        if close is not None:
            close()
    click.echo(f"sagaflow worker {runner.id}: stopped; {stats.describe()}", err=True)


def _telemetry() -> Instrument:
    """OpenTelemetry through the global providers (after the imports, which may set
    them up), or a CliError saying what to install."""
    try:
        from ..otel import Telemetry
    except ImportError as exc:
        raise CliError(f"--telemetry: {exc}") from None
    return Telemetry()
