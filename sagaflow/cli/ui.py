"""``sagaflow ui``: the operator's dashboard over a store, served by uvicorn.

::

    sagaflow ui --store URL [--import MODULE] [--host 127.0.0.1] [--port 8765] [--token T]
                [--operator NAME] [--stalled-after SECONDS]

Loopback by default; another address only with ``--token`` (every request must carry
it). Needs the ``ui`` extra: ``pip install 'sagaflow[ui]'``.
"""

from __future__ import annotations

import getpass
import ipaddress

import click

from .problems import CliError
from .session import Session, store_options

__all__ = ["check_bind", "ui"]


def check_bind(host: str, token: str | None) -> None:
    """Refuse, with the fix, to serve on an address other than loopback without a token."""
    if token:
        return
    if host == "localhost":
        return
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise CliError(
            f"--host {host} serves the dashboard beyond this machine, where anyone who reaches "
            "it could act on sagas: pass --token SECRET too (then open it with ?token=SECRET), "
            "or keep the default --host 127.0.0.1"
        )


@click.command()
@store_options
@click.option("--host", default="127.0.0.1", show_default=True,
              help="The address to serve on; other than loopback needs --token.")
@click.option("--port", type=click.IntRange(0, 65535), default=8765, show_default=True)
@click.option("--token", default=None, envvar="SAGAFLOW_UI_TOKEN",
              help="A secret every request must carry (?token=... once, then a cookie); "
              "required to serve beyond loopback (default: $SAGAFLOW_UI_TOKEN).")
@click.option("--operator", default=None,
              help="Who acts: put in the note of every action (default: $USER).")
@click.option("--stalled-after", type=click.FloatRange(min=0.0), default=None,
              metavar="SECONDS",
              help="Show a RUNNING or COMPENSATING saga that is not waiting and has had no "
              "checkpoint for this long as a stalled incident (default: never).")
def ui(url: str | None, modules: tuple[str, ...], host: str, port: int, token: str | None,
       operator: str | None, stalled_after: float | None) -> None:
    """Serve the operator's dashboard over the store: the sagas, with filters and counts
    per status; a saga's page with its data, steps, history, domain events and diagram;
    its incident; a saga class's page; retry, resolve, cancel, signal and unquarantine
    behind a confirmation.

    \b
    Example:
      sagaflow ui --store sqlite:///sagas.db --import myapp.sagas
    """
    check_bind(host, token)
    try:
        import uvicorn

        from ..ui import create_app
    except ImportError as exc:
        raise CliError(
            f"the dashboard needs the ui extra ({exc.name} is missing): "
            "pip install 'sagaflow[ui]'"
        ) from None
    with Session(url, modules, readonly=True):  # a store that cannot be opened: say so now
        pass
    assert url is not None
    who = operator or _user()
    app = create_app(url, modules, operator=who, token=token, stalled_after=stalled_after)
    click.echo(f"sagaflow ui: http://{host}:{port}/sagas (store {url}, operator {who}); "
               "Ctrl-C stops it")
    uvicorn.run(app, host=host, port=port, log_level="warning")


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:
        return "operator"
