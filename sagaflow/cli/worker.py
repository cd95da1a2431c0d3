"""``sagaflow worker``: run queued sagas from a PostgreSQL store until told to stop.

::

    sagaflow worker --store postgresql://user@host/db --import myapp.sagas [--import ...]
                    [--concurrency 64] [--lease 30] [--poll 0.5] [--park-after 1]
                    [--grace 30] [-v]

Start as many as needed, on as many machines: they share the work through the
database (see :mod:`sagaflow.worker`). SIGTERM or SIGINT stops a worker gracefully: it
claims nothing more, lets running sagas finish for ``--grace`` seconds, then releases
the rest to the other workers; a second signal releases everything at once.

The group loads this module only when the command is used: it needs psycopg (the
``postgres`` extra), which the other commands do not.
"""

from __future__ import annotations

import logging
import os
import signal

import click

from ..errors import SagaflowError
from ..stores.url import open_store
from ..worker import Worker
from .loader import load_imports
from .problems import CliError
from .session import STORE_ENV

__all__ = ["worker"]


@click.command()
@click.option("--store", "url", envvar=STORE_ENV, metavar="URL",
              help=f"The PostgreSQL store, postgresql://user@host/db (or ${STORE_ENV}).")
@click.option("--import", "modules", multiple=True, metavar="MODULE",
              help="A module (or package) whose saga classes this worker runs; repeatable.")
@click.option("--concurrency", type=click.IntRange(min=1), default=64, show_default=True,
              help="Sagas run at once by this worker.")
@click.option("--lease", type=click.FloatRange(min=0.1), default=30.0, show_default=True,
              help="Seconds without a heartbeat after which another worker takes a saga over.")
@click.option("--poll", type=click.FloatRange(min=0.001), default=0.5, show_default=True,
              help="Seconds between looks for due sagas when idle.")
@click.option("--park-after", type=click.FloatRange(min=0.0), default=1.0,
              show_default=True,
              help="A retry waiting longer than this goes back to the queue until due.")
@click.option("--grace", type=click.FloatRange(min=0.0), default=30.0, show_default=True,
              help="On SIGTERM, seconds running sagas get to finish before being released.")
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
    verbose: int,
) -> None:
    """Run queued sagas from a PostgreSQL store, many workers side by side.

    Claims due sagas of the imported classes, runs them, keeps their leases alive, and
    takes over those of workers that died. Stops on SIGTERM or SIGINT: running sagas
    get --grace seconds to finish, the rest are released to other workers.
    """
    if not url or not url.strip():
        raise CliError(
            f"no store given: pass --store postgresql://user@host/db or set {STORE_ENV}"
        )
    if not modules:
        raise CliError(
            "no saga classes: pass --import MODULE with the module that defines your sagas"
        )
    scheme = url.strip().partition("://")[0].lower()
    if scheme not in ("postgresql", "postgres", "postgresql+psycopg"):
        raise CliError(
            f"{url!r}: workers share their sagas through PostgreSQL: give a "
            "postgresql://user@host/db store"
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

    try:
        store = open_store(url)
    except ImportError as exc:
        raise CliError(str(exc)) from None
    except (ValueError, SagaflowError) as exc:
        raise CliError(str(exc)) from None
    try:
        runner = Worker(
            store,  # type: ignore[arg-type]  # a postgresql:// URL opens a PostgresStore
            classes,
            concurrency=concurrency,
            lease=lease,
            poll=poll,
            park_after=park_after,
            grace=grace,
        )
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
