"""Helpers of the PostgreSQL worker tests."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

from sagaflow.worker import Worker


@contextlib.contextmanager
def serving(worker: Worker, grace: float = 10.0) -> Iterator[Worker]:
    """Run ``worker`` in a thread for the ``with`` block; stop it (gracefully) after."""
    thread = threading.Thread(target=worker.run, kwargs={"handle_signals": False}, daemon=True)
    thread.start()
    try:
        yield worker
    finally:
        worker.stop(grace=grace)
        thread.join(timeout=60)
        assert not thread.is_alive(), "the worker did not stop"
