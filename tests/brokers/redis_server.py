"""A throwaway ``redis-server`` for the broker tests, on a free local port.

Like tests/postgres_cluster.py: the session's server starts on first use and stops when
the session ends; each test then uses streams of its own names, so tests never see each
other's messages. A test that stops and restarts the server makes its own
(:class:`RedisServer` with ``persist=True``: it saves on shutdown, loads on start).

Without ``redis-server`` (or the ``redis`` client) the tests are skipped, saying why,
except in CI (``CI=true``), where that fails them (``.ci/run`` installs it).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

MISSING = (
    "redis-server not found: install it (Debian: apt-get install redis-server) "
    "or set SAGAFLOW_REDIS_SERVER to its path"
)
_names = itertools.count()


def find_server() -> str | None:
    """The ``redis-server`` executable: ``$SAGAFLOW_REDIS_SERVER`` or on ``PATH``."""
    explicit = os.environ.get("SAGAFLOW_REDIS_SERVER")
    if explicit:
        return explicit if os.access(explicit, os.X_OK) else None
    return shutil.which("redis-server")


def unavailable(reason: str) -> None:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason} (CI=true: the Redis tests must run, not be skipped)")
    pytest.skip(reason)


def require() -> str:
    """The server's path, after checking the client is there (else skip / fail)."""
    try:
        import redis  # noqa: F401
    except ImportError as exc:
        unavailable(f"the redis client is not installed ({exc}): pip install 'sagaflow[redis]'")
    server = find_server()
    if server is None:
        unavailable(MISSING)
    assert server is not None
    return server


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisServer:
    """``redis-server`` in a temporary directory on 127.0.0.1:``port`` (a free one).

    ``persist``: save the data set on shutdown and load it on start (for tests that
    restart the server); otherwise nothing is written to disk.
    """

    def __init__(self, binary: str, *, persist: bool = False) -> None:
        self.binary = binary
        self.persist = persist
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="sagaflow-redis-"))
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        args = [
            self.binary, "--port", str(self.port), "--bind", "127.0.0.1",
            "--dir", str(self.dir), "--daemonize", "no", "--protected-mode", "no",
            "--appendonly", "no", "--logfile", str(self.dir / "server.log"),
            "--save", "3600 1" if self.persist else "",
        ]
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self._wait_ready()
        return self

    def _wait_ready(self) -> None:
        import redis

        assert self.process is not None
        client = redis.Redis(host="127.0.0.1", port=self.port, socket_connect_timeout=1)
        deadline = time.monotonic() + 30
        try:
            while True:
                if self.process.poll() is not None:
                    raise RuntimeError(f"redis-server exited ({self.process.returncode}): "
                                       f"{self.log()[-2000:]}")
                try:
                    # LOADING (the data set is being read) is an error reply: keep waiting.
                    if client.ping():
                        return
                except (redis.ConnectionError, redis.ResponseError):
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"redis-server did not answer: {self.log()[-2000:]}")
                time.sleep(0.02)
        finally:
            client.close()

    def stop(self) -> None:
        """Stop the server (SIGTERM: it saves first when ``persist``), keep its files."""
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            if self.process.stderr is not None:
                self.process.stderr.close()
            self.process = None

    def remove(self) -> None:
        """Stop it and remove its files."""
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def log(self) -> str:
        with contextlib.suppress(OSError):
            return (self.dir / "server.log").read_text(errors="replace")
        return ""


def fresh_stream(prefix: str = "t") -> str:
    """A stream name no other test of this session uses."""
    return f"{prefix}:{os.getpid()}:{next(_names)}"
