"""The in-process participant the test sagas book against: the verify sagas here and the
testing toolkit's sagas (``tests/testing/testing_sagas.py`` imports it as
``verify_sagas.ledger``: ``tests/`` is on the path wherever either runs, pytest's
conftest folder and ``sagaflow verify``'s package parent). It does what a real one
should: a forward call applies once per idempotency key, an undo by the forward call's
key only if it took effect. Sagas that break a rule do so in their own code, not here."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sagaflow import StepContext


class Ledger:
    """Balances per account; each key applies once; undo by forward key."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.balances: dict[str, int] = {}
        self.applied: dict[str, tuple[str, int]] = {}
        self.undone: set[str] = set()

    def apply(self, key: str, account: str, delta: int) -> None:
        if key in self.applied:
            return
        self.balances[account] = self.balances.get(account, 0) + delta
        self.applied[key] = (account, delta)

    def undo(self, key: str, forward: str) -> None:
        if key in self.undone:
            return
        self.undone.add(key)
        entry = self.applied.get(forward)
        if entry is None:
            return  # the forward call never took effect: nothing to undo
        account, delta = entry
        self.balances[account] -= delta

    def snapshot(self) -> dict[str, int]:
        """The non-zero balances, by account."""
        return {k: v for k, v in sorted(self.balances.items()) if v}


LEDGER = Ledger()


def forward_key(ctx: StepContext) -> str:
    """The idempotency key of the forward call a compensation undoes."""
    return f"{ctx.saga_id}:{ctx.step}:forward"


def cases(
    *sagas: Any,
    setup: Callable[[], None] = LEDGER.reset,
    snapshot: Callable[[], Any] = LEDGER.snapshot,
) -> Any:
    """What a verify module's ``example_sagas()`` returns: a hypothesis strategy of
    ``SagaCase``, each of one saga of ``sagas`` (a saga class, built without arguments,
    or a strategy of instances), run on ``LEDGER`` reset first (or the participant
    ``setup`` and ``snapshot`` name: ``filed``'s)."""
    from hypothesis import strategies as st

    from sagaflow.testing import SagaCase

    drawn = [s if isinstance(s, st.SearchStrategy) else st.builds(s) for s in sagas]
    return st.one_of(*drawn).map(lambda saga: SagaCase(saga, setup, snapshot))
