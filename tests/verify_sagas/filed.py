"""A participant that keeps its state in a JSON file (``$VERIFY_LEDGER``), so that it
outlives a process killed at a crash point: what ``--crash`` needs of participants."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def _path() -> Path:
    return Path(os.environ["VERIFY_LEDGER"])


def load() -> dict[str, Any]:
    path = _path()
    if not path.exists():
        return {"balances": {}, "applied": {}, "undone": []}
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def save(data: dict[str, Any]) -> None:
    tmp = _path().with_suffix(".tmp")
    tmp.write_text(json.dumps(data, sort_keys=True))
    tmp.replace(_path())  # whole or not at all: a kill never leaves half a file


def reset() -> None:
    save({"balances": {}, "applied": {}, "undone": []})


def apply(key: str, account: str, delta: int, *, once: bool = True) -> None:
    """Add ``delta``; with ``once``, only the first time for ``key`` (idempotent)."""
    data = load()
    if once and key in data["applied"]:
        return
    data["balances"][account] = data["balances"].get(account, 0) + delta
    data["applied"][key] = [account, delta]
    save(data)


def undo(key: str, forward: str) -> None:
    data = load()
    if key in data["undone"]:
        return
    data["undone"].append(key)
    entry = data["applied"].get(forward)
    if entry is not None:
        data["balances"][entry[0]] -= entry[1]
    save(data)


def snapshot() -> dict[str, int]:
    return {k: v for k, v in sorted(load()["balances"].items()) if v}
