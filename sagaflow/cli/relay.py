"""``sagaflow relay``: publish a store's outbox to a broker until told to stop.

::

    sagaflow relay --store URL --broker redis://HOST:PORT/DB [--stream sagaflow:events]
                   [--batch 100] [--poll 1.0] [-v]

Sagas run anywhere (an application, workers) write their domain events to the store's
outbox in their checkpoints; this process hands them to the broker after they commit:
at least once, in order per saga, each under its stable id. A broker that is down is
retried with backoff, and nothing leaves the outbox until it took the messages. On
PostgreSQL several relays may run side by side (each message is published by one at a
time); a commit wakes them at once (``LISTEN``/``NOTIFY``). SIGTERM or SIGINT stops it
after the batch in hand.

The group loads this module only when the command is used.
"""

from __future__ import annotations

import logging
import os
import signal
import threading

import click

from ..errors import SagaflowError
from ..outbox import Relay
from ..stores.url import open_store
from .problems import CliError
from .session import STORE_ENV

__all__ = ["relay"]


@click.command()
@click.option("--store", "url", envvar=STORE_ENV, metavar="URL",
              help=f"The store whose outbox to publish: postgresql://... or sqlite:///sagas.db; "
                   f"or ${STORE_ENV}.")
@click.option("--broker", metavar="URL", envvar="SAGAFLOW_BROKER",
              help="Where to publish: redis://HOST:PORT/DB (Redis Streams); or $SAGAFLOW_BROKER.")
@click.option("--stream", default="sagaflow:events", show_default=True,
              help="The Redis stream the messages are added to.")
@click.option("--batch", type=click.IntRange(min=1), default=100, show_default=True,
              help="Messages published per round trip.")
@click.option("--poll", type=click.FloatRange(min=0.001), default=1.0, show_default=True,
              help="Seconds an idle relay goes at most without looking at the outbox "
                   "(PostgreSQL commits wake it at once).")
@click.option("-v", "--verbose", count=True, help="Log what the relay does.")
def relay(
    url: str | None, broker: str | None, stream: str, batch: int, poll: float, verbose: int
) -> None:
    """Publish the store's outbox (the sagas' domain events) to a broker, until stopped."""
    if not url or not url.strip():
        raise CliError(
            "no store given: pass --store postgresql://user@host/db (or sqlite:///sagas.db) "
            f"or set {STORE_ENV}"
        )
    if not broker or not broker.strip():
        raise CliError("no broker given: pass --broker redis://HOST:PORT/0 (or set "
                       "SAGAFLOW_BROKER)")
    scheme = broker.strip().partition("://")[0].lower()
    if scheme not in ("redis", "rediss", "unix"):
        raise CliError(
            f"{broker!r} is not a broker sagaflow can publish to: give a Redis URL, "
            "redis://HOST:PORT/DB (rediss:// with TLS)"
        )
    try:
        from ..brokers.redis import RedisStreams
    except ImportError as exc:
        raise CliError(
            f"publishing to Redis needs the redis client ({exc}): pip install 'sagaflow[redis]'"
        ) from None
    stop = threading.Event()

    def stopping(sig: int, frame: object) -> None:
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, stopping)
    if verbose:
        logging.basicConfig(
            level=logging.INFO if verbose == 1 else logging.DEBUG,
            format=f"%(asctime)s sagaflow relay[{os.getpid()}] %(message)s",
        )
    try:
        store = open_store(url)
    except ImportError as exc:
        raise CliError(str(exc)) from None
    except (ValueError, SagaflowError) as exc:
        raise CliError(str(exc)) from None
    streams = RedisStreams(broker.strip(), stream)
    try:
        try:
            runner = Relay(store, streams, batch=batch, poll=poll)
        except TypeError as exc:  # a store without an outbox
            raise CliError(str(exc)) from None
        click.echo(f"relaying the outbox of {url} to {broker} (stream {stream!r})", err=True)
        runner.run(stop)
    finally:
        streams.close()
        close = getattr(store, "close", None)
        if close is not None:
            close()
