"""``sagaflow sagas outbox``: pending count, oldest, failing messages with their error."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner
from test_outbox import Emitter, run

from sagaflow.cli import main
from sagaflow.stores.sqlite import SQLiteStore


def test_the_outbox_command_shows_what_waits_and_what_failed(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    url = f"sqlite:///{path}"
    with SQLiteStore(path) as store:
        run(store, Emitter("o-c", events=1), "c-1")
        first = store.outbox()[0]
        store.outbox_failed([first.id], "ConnectionError: broker down\nat line 2")
    out = CliRunner().invoke(main, ["sagas", "outbox", "--store", url], catch_exceptions=False)
    assert out.exit_code == 0, out.output
    lines = out.output.splitlines()
    assert lines[0] == "pending: 2" and lines[1].startswith("oldest:  20")
    assert lines[2] == "failing: 1"
    assert lines[4].split() == ["c-1:0", "1", "ConnectionError:", "broker", "down"]
    out = CliRunner().invoke(main, ["sagas", "outbox", "--store", url, "--json"],
                             catch_exceptions=False)
    data = json.loads(out.output)
    assert data["pending"] == 2 and data["failing"][0]["attempts"] == 1
    with SQLiteStore(path) as store:
        store.relayed([m.id for m in store.outbox()])
    out = CliRunner().invoke(main, ["sagas", "outbox", "--store", url], catch_exceptions=False)
    assert out.output.splitlines() == ["pending: 0", "oldest:  -", "failing: none"]
