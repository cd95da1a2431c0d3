"""Fixtures for the example sagas' tests.

The examples live in the repository's ``examples`` package, which is not installed:
put the repository root on ``sys.path`` so that ``import examples`` works however
pytest is started (``python -m pytest`` adds the working directory, ``pytest`` does not).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from example_fixtures import Captured  # noqa: E402


@pytest.fixture
def demo() -> Captured:
    """A demo that records what it prints."""
    return Captured()


@pytest.fixture(params=["memory", "sqlite"])
def stored(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Captured]:
    """A demo whose orchestrators keep their sagas in a MemoryStore (a fresh one each) or
    in one SQLite file: the waiting sagas' tests run on both."""
    from sagaflow.stores.sqlite import SQLiteStore

    if request.param == "memory":
        yield Captured()
        return
    with SQLiteStore(tmp_path / "sagas.db") as store:
        yield Captured(store)
