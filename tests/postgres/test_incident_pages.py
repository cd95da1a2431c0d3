"""Two ``sagaflow worker --stalled-after`` processes on one PostgreSQL store page a
stalled saga once between them (the first to claim the incident in the store pages
it), and once more when the saga moved on and stalled anew; neither writes the saga's
record, so the driver still alive saves its next checkpoint."""

from __future__ import annotations

import subprocess
import threading
import time
from pathlib import Path

import pytest
from test_worker_stalled import Died, Hang, crash
from wait_sagas import start_worker, until

from sagaflow import Orchestrator, SagaStatus
from sagaflow.stores.postgres import PostgresStore

LOOK = "looked for stalled sagas: 1 stalled"


class Heard:
    """What a worker process writes to stderr, read as it comes (a thread each)."""

    def __init__(self, child: subprocess.Popen[str]) -> None:
        self.child = child
        self.lines: list[str] = []
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        assert self.child.stderr is not None
        for line in self.child.stderr:
            self.lines.append(line)

    def count(self, text: str) -> int:
        return sum(text in line for line in list(self.lines))

    def stop(self) -> str:
        self.child.terminate()
        self.child.wait(timeout=60)
        self.thread.join(timeout=60)
        return "".join(self.lines)


def test_two_worker_processes_page_a_stalled_saga_once(
    pg_store: PostgresStore, store_url: str, tmp_path: Path,
) -> None:
    crash.append(True)  # h dies in its step: RUNNING, not queued, and no worker runs it
    with Orchestrator(pg_store, sagas=[Hang]) as orch, pytest.raises(Died):
        orch.run(Hang(), "h")
    alive = pg_store.load("h")  # what its driver (say, still alive) holds
    assert alive is not None and alive.status is SagaStatus.RUNNING
    first_id = f"h/stalled/{round(alive.updated_at * 1000)}"
    workers = [Heard(start_worker(store_url, tmp_path / f"w{k}.log", "-v",
                                  "--stalled-after", "0.05")) for k in range(2)]
    try:
        # each worker finds it stalled, look after look
        until(lambda: all(w.count(LOOK) >= 5 for w in workers), what="five looks each")
        assert sum(w.count(f"incident {first_id}") for w in workers) == 1
        # the driver saves its next checkpoint (no one wrote its row), then stalls anew
        alive.updated_at = time.time()
        pg_store.save(alive)
        again_id = f"h/stalled/{round(alive.updated_at * 1000)}"
        until(lambda: sum(w.count(f"incident {again_id}") for w in workers) >= 1,
              what="the new incident paged")
        looked = [w.count(LOOK) for w in workers]
        until(lambda: all(w.count(LOOK) >= n + 5 for w, n in zip(workers, looked, strict=True)),
              what="five more looks each")
    finally:
        said = [w.stop() for w in workers]
    everything = "".join(said)
    assert everything.count(f"incident {first_id}") == 1, everything
    assert everything.count(f"incident {again_id}") == 1, everything
    assert everything.count("incident h/stalled/") == 2, everything
    assert f"another worker claimed {first_id}" in everything  # both found it stalled
    stored = pg_store.load_raw("h")
    assert stored is not None and stored.version == alive.version  # only the driver wrote

