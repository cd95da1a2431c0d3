"""``sagaflow sagas dead-letters``: the messages a broker's consumers gave up on, and why;
``--replay ID`` puts one back on its stream."""

from __future__ import annotations

import json
from typing import Any

import click

from .problems import CliError, one_line
from .text import columns, utc

__all__ = ["dead_letters"]

#: The fields of a message (what goes back on the stream on a replay).
_MESSAGE = ("id", "type", "saga_id", "saga_name", "seq", "body", "at")


def _client(url: str) -> Any:
    try:
        import redis
    except ImportError as exc:
        raise CliError(f"--broker {url}: needs the redis client: "
                       f"pip install 'sagaflow[redis]' ({exc})") from exc
    if not url.startswith(("redis://", "rediss://", "unix://")):
        raise CliError(f"--broker {url!r}: give a redis:// URL (redis://HOST:PORT/DB)")
    return redis.Redis.from_url(url, socket_connect_timeout=10)


def _text(fields: dict[bytes, bytes]) -> dict[str, str]:
    return {k.decode(errors="replace"): v.decode(errors="replace") for k, v in fields.items()}


@click.command("dead-letters")
@click.option("--broker", "url", required=True, envvar="SAGAFLOW_BROKER", metavar="URL",
              help="The broker: redis://HOST:PORT/DB (or $SAGAFLOW_BROKER).")
@click.option("--stream", default="sagaflow:events", show_default=True,
              help="The stream whose dead letters (<stream>:dead) to read.")
@click.option("--replay", "replay", default=None, metavar="ID",
              help="Put this dead letter (its dead entry id, or its message id) back on its "
                   "stream, and remove it from the dead letters.")
@click.option("--json", "as_json", is_flag=True, help="Print them as JSON lines.")
def dead_letters(url: str, stream: str, replay: str | None, as_json: bool) -> None:
    """The messages the consumers of a stream gave up on (they did not decode, no handler
    could route them, they failed too many times), each with its reason; with --replay,
    one of them back on its stream (every consumer group reads it again: handlers
    deduplicate by the message id)."""
    client = _client(url)
    dead = f"{stream}:dead"
    try:
        import redis

        try:
            entries = [(e.decode(), _text(f)) for e, f in client.xrange(dead)]
        except redis.RedisError as exc:
            raise CliError(f"--broker {url}: {one_line(exc)}") from exc
        if replay is not None:
            _replay(client, dead, stream, entries, replay, as_json)
            return
        _list(entries, as_json)
    finally:
        client.close()


def _list(entries: list[tuple[str, dict[str, str]]], as_json: bool) -> None:
    if as_json:
        for entry, fields in entries:
            click.echo(json.dumps({"dead_entry": entry, **fields}))
        return
    if not entries:
        click.echo("no dead letters")
        return
    rows = [("DEAD ENTRY", "MESSAGE ID", "TYPE", "GROUP", "DELIVERIES", "DEAD AT", "REASON")]
    for entry, f in entries:
        try:
            dead_at = utc(float(f["dead_at"]))
        except (KeyError, ValueError):
            dead_at = "-"
        rows.append((entry, f.get("id", "-"), f.get("type", "-"), f.get("group", "-"),
                     f.get("deliveries", "-"), dead_at,
                     " ".join(f.get("reason", "-").split())))
    for line in columns(rows, "  "):
        click.echo(line)


def _replay(
    client: Any, dead: str, stream: str, entries: list[tuple[str, dict[str, str]]],
    wanted: str, as_json: bool,
) -> None:
    found = [(e, f) for e, f in entries if e == wanted] or [
        (e, f) for e, f in entries if f.get("id") == wanted
    ]
    if not found:
        raise CliError(f"no dead letter {wanted!r} in {dead}")
    entry, fields = found[0]
    raw = dict(client.xrange(dead, min=entry, max=entry)[0][1])
    message = {k: v for k, v in raw.items() if k.decode(errors="replace") in _MESSAGE}
    if not message:
        raise CliError(f"dead letter {entry} holds no message fields: nothing to replay")
    target = fields.get("stream") or stream
    with client.pipeline(transaction=True) as pipe:
        pipe.xadd(target, message)
        pipe.xdel(dead, entry)
        new_id = pipe.execute()[0].decode()
    if as_json:
        click.echo(json.dumps({"replayed": entry, "id": fields.get("id"), "stream": target,
                               "entry": new_id}))
    else:
        click.echo(f"replayed {entry} (message {fields.get('id', '-')}) onto {target} "
                   f"as {new_id}")
