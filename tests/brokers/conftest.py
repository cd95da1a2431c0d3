"""Fixtures of the broker tests: the session's redis-server (tests/brokers/redis_server.py)
and a stream name of each test's own."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from redis_server import RedisServer, fresh_stream, require


@pytest.fixture(scope="session")
def redis_url(request: pytest.FixtureRequest) -> str:
    """The session's redis-server (skipped, or failed in CI, without one)."""
    server = RedisServer(require()).start()
    request.config.add_cleanup(server.remove)
    return server.url


@pytest.fixture
def stream() -> str:
    return fresh_stream()


@pytest.fixture
def own_server() -> Iterator[RedisServer]:
    """A redis-server of this test's own, which it may stop and start (data kept)."""
    server = RedisServer(require(), persist=True).start()
    yield server
    server.remove()
