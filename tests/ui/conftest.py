"""A SQLite store with sagas of each kind an operator meets, and the dashboard over it."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("starlette")

import ui_sagas
from ui_sagas import Approve, Crash, Shop

from sagaflow import Orchestrator
from sagaflow.stores import SQLiteStore

MODULE = "ui_sagas"
XSS = "<script>alert(1)</script>"


def fill(path: Path, extra: int = 0, *, acting: bool = False) -> None:
    """done, failed (release could not undo reserve), running (crashed in charge), xss;
    with ``acting`` also waiting (for its approval) and aside (crashed in charge, then
    quarantined), for the signal and unquarantine actions; and ``extra`` completed sagas
    p-000... ."""
    with Orchestrator(SQLiteStore(path)) as orch:
        orch.run(Shop("fine"), "done")
        ui_sagas.broken.update({"charge", "release"})
        orch.run(Shop("bad"), "failed")
        ui_sagas.broken.clear()
        ui_sagas.broken.add("crash")
        with pytest.raises(Crash):
            orch.run(Shop("stuck"), "running")
        ui_sagas.broken.clear()
        orch.run(Shop(XSS), "xss")
        if acting:
            orch.run(Approve(), "waiting")
            ui_sagas.broken.add("crash")
            with pytest.raises(Crash):
                orch.run(Shop("aside"), "aside")
            ui_sagas.broken.clear()
            orch.store.quarantine("aside", "cannot be decoded or driven: the disk lied")
        for i in range(extra):
            orch.run(Shop(f"p{i}"), f"p-{i:03d}")


@pytest.fixture
def store(tmp_path: Path) -> str:
    path = tmp_path / "sagas.db"
    fill(path, acting=True)
    return f"sqlite:///{path}"


@pytest.fixture
def app(store: str):
    from sagaflow.ui import create_app

    return create_app(store, [MODULE], operator="ann")
