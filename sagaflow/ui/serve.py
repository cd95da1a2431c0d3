"""Serving the dashboard: the store it keeps open across requests (:class:`Kept`), and
serving it from a thread on a free loopback port (tests, screenshots)."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Generic, TypeVar

__all__ = ["Kept", "chromium", "free_port", "served"]

T = TypeVar("T")


class _Opened(Generic[T]):
    """One opening of what :class:`Kept` keeps, and the requests using it now."""

    def __init__(self, value: T) -> None:
        self.value = value
        self.users = 0
        self.dropped = False


class Kept(Generic[T]):
    """Something opened once and used by every request (the dashboard's read-only
    store session: a SQLite file's connections, a PostgreSQL pool), opened again after
    a request failed with it.

    ``open()`` makes it, on the first request and on the first after a failure; a
    request that raises anything but ``keep`` (the app's own answers: not found,
    refused...) drops it, so a store that went away (a stopped PostgreSQL, a moved
    file) is an error for the requests that meet it and the next one opens it anew.
    What is dropped is closed (``close(value)``) once the last request using it ends.
    """

    def __init__(self, open: Callable[[], T], close: Callable[[T], Any],
                 keep: tuple[type[BaseException], ...] = ()) -> None:
        self._open = open
        self._close = close
        self._keep = keep
        self._lock = threading.Lock()
        self._current: _Opened[T] | None = None
        self.opened = 0  #: how many times it was opened (the first, and each reopening)

    @contextmanager
    def use(self) -> Iterator[T]:
        """The kept value for one request (opened now if there is none)."""
        with self._lock:
            held = self._current
            if held is None:
                held = self._current = _Opened(self._open())
                self.opened += 1
            held.users += 1
        try:
            yield held.value
        except BaseException as exc:
            if not isinstance(exc, self._keep):
                self._drop(held)
            raise
        finally:
            self._release(held)

    def close(self) -> None:
        """Close what is kept now (the server stops); a later request opens it again."""
        with self._lock:
            held = self._current
        if held is not None:
            self._drop(held)
            self._release(held, using=False)

    def _drop(self, held: _Opened[T]) -> None:
        with self._lock:
            held.dropped = True
            if self._current is held:
                self._current = None

    def _release(self, held: _Opened[T], using: bool = True) -> None:
        with self._lock:
            if using:
                held.users -= 1
            last = held.dropped and held.users == 0
            if last:
                held.users = -1  # closed once
        if last:
            # Closing what may already have failed: nothing more to do if that fails.
            with contextlib.suppress(Exception):
                self._close(held.value)


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextmanager
def served(app: Any) -> Iterator[str]:
    """Serve ``app`` with uvicorn in a thread; its base URL while inside."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the dashboard's server did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


def chromium(width: int = 1280, height: int = 1000) -> Any:
    """Debian's headless Chromium through Selenium (``/usr/bin/chromium`` and its
    ``/usr/bin/chromedriver``; ``apt-get install chromium chromium-driver``)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                f"--window-size={width},{height}"):
        options.add_argument(arg)
    return webdriver.Chrome(options=options, service=Service("/usr/bin/chromedriver"))
