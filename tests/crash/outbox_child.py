"""The process the outbox crash tests kill. Run with ``sys.executable``.

    outbox_child.py run STORE LEDGER N KILL K   run N sagas with a relay next to them,
                                                publishing to LEDGER; SIGKILL itself at K
    outbox_child.py recover STORE LEDGER        recover the sagas, relay everything, exit

STORE is a SQLite file or a ``postgresql://`` URL (with ``schema=``). The "broker" is
LEDGER: a file the publisher appends one JSON line per message to, synced before
``publish`` returns. KILL says where the process dies, at the K-th time it gets there:

- ``commit``: right after a checkpoint that wrote outbox rows commits, before any relay
  could publish them (the store's on_outbox hook, on the writing thread);
- ``publishing``: in the middle of a publish, half its batch in the ledger;
- ``published``: a publish whole in the ledger, before the relay marks it relayed;
- ``none``: nowhere.
"""

from __future__ import annotations

import json
import os
import signal
import sys

import attrs

from sagaflow import Orchestrator, Retry, saga, step
from sagaflow.outbox import Relay
from sagaflow.stores import open_store


@attrs.frozen
class Packed:
    order: str
    box: int


@saga(name="outbox-crash")
class Shipment:
    order: str = ""
    boxes: int = 3

    @step
    def reserve(self, ctx):
        ctx.emit(("reserved", self.order))

    @reserve.compensate
    def release(self, ctx):
        ctx.emit(("released", self.order))

    @step(retry=Retry(attempts=3, backoff=0.0, jitter=0.0))
    def pack(self, ctx):
        for box in range(self.boxes):
            ctx.emit(Packed(self.order, box))

    @pack.compensate
    def unpack(self, ctx):
        pass

    @step(pivot=True)
    def ship(self, ctx):
        ctx.emit(("shipped", self.order))


class Counter:
    def __init__(self, at: int) -> None:
        self.at, self.n = at, 0

    def hit(self) -> None:
        self.n += 1
        if self.n == self.at:
            os.kill(os.getpid(), signal.SIGKILL)


class Ledger:
    """The "broker": appends each message as a JSON line, synced; may die on the way."""

    def __init__(self, path: str, kill: str = "none", at: int = 0) -> None:
        self.path, self.kill, self.counter = path, kill, Counter(at)

    def publish(self, messages) -> None:
        with open(self.path, "a", encoding="utf-8") as f:
            for k, m in enumerate(messages):
                if self.kill == "publishing" and k == len(messages) // 2:
                    f.flush()
                    os.fsync(f.fileno())
                    self.counter.hit()
                f.write(json.dumps(attrs.asdict(m)) + "\n")
            f.flush()
            os.fsync(f.fileno())
        if self.kill == "published":
            self.counter.hit()


def run(store_url: str, ledger: str, n: int, kill: str, at: int) -> None:
    store = open_store(store_url)
    if kill == "commit":
        store.on_outbox(Counter(at).hit)
    relay = Relay(store, Ledger(ledger, kill, at), batch=4, poll=0.05).start()
    orch = Orchestrator(store=store)
    for k in range(n):
        orch.run(Shipment(f"o-{k}", boxes=k % 3 + 1), saga_id=f"s-{k}")
    relay.stop()
    relay.drain()
    store.close()


def recover(store_url: str, ledger: str) -> None:
    store = open_store(store_url)
    orch = Orchestrator(store=store, sagas=[Shipment])
    orch.recover()
    Relay(store, Ledger(ledger)).drain()
    print(json.dumps({"pending": store.outbox_stats().pending}))
    store.close()


if __name__ == "__main__":
    cmd, *args = sys.argv[1:]
    if cmd == "run":
        run(args[0], args[1], int(args[2]), args[3], int(args[4]))
    else:
        recover(args[0], args[1])
