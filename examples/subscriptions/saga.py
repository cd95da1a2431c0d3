"""``UnbundleSaga`` (seed 000): a customer removes components from their bundle.

The five steps of the seed and the wait for the approver, their kinds, and why:

1. ``validate``, readonly: reads the subscription and checks the request against the
   rules (:mod:`.rules`). A refused request ends the saga before anything changed.
2. ``calculate_pricing``, readonly: prices the request against the subscription as it is
   now and keeps what the next steps need: the new price, the version the modification
   must still find, and ``original_price`` for the compensation.
3. ``create_approval``, compensatable, conditional: only when more than half of the
   components go. Writes a PENDING approval record; ``withdraw_approval`` marks it
   WITHDRAWN (an approval trail forgets nothing), found by ``approval_id``.
4. ``await_approval``, a wait, with the same condition: the saga parks (a row in the
   store, nothing in memory) until the approver's :class:`Decision` comes as the signal
   ``approval``, for up to the rules' approval window (3 days). Signals find the saga by
   its subscription id (``@saga(key="subscription_id")``): the approver's tool need not
   know saga ids. Approved goes on; refused raises :class:`~sagaflow.SagaRejected`, a
   business "no": ``withdraw_approval`` runs and the saga ends COMPENSATED with the
   rejection, and its reason, as its outcome. No answer in time compensates the same way
   (``WaitTimedOut``).
5. ``apply_modification``, compensatable: one transaction removes the components, sets
   the new price, bumps the version and marks the approval APPROVED, if the version is
   still the one priced (else ``Conflict``: someone changed the subscription meanwhile).
   ``revert_modification`` puts the components and ``original_price`` back.
6. ``emit_audit_events``, the pivot: writes the change to the audit trail, the outbox
   that billing and entitlements read. Once they have it, the change is final: there is
   no step after it to fail. If it cannot be written, the change must not stand without
   its record, so the steps before are undone. If it times out, it may have been
   written: sagaflow then stops the saga FAILED, nothing undone, and an operator's
   retry appends it again under the same key (the append is idempotent).

Writes retry only on "database is locked" (SQLite's busy answer): every write is
idempotent by its key, so a retry is safe. Compensations keep sagaflow's patient default.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from datetime import timedelta
from decimal import Decimal
from typing import Any

import attrs

from sagaflow import Retry, SagaRejected, StepContext, saga, step, wait

from .._support import case_folder, forward_key
from . import db as dbmod
from . import rules
from .db import database

__all__ = [
    "APPROVAL_WINDOW",
    "ApprovalGranted",
    "ApprovalRequested",
    "ApprovalWithdrawn",
    "BundleModified",
    "Decision",
    "ModificationReverted",
    "UnbundleSaga",
    "case_database",
    "example_case",
    "example_sagas",
    "reset_case_database",
]

#: A local SQLite transaction takes milliseconds; a second means the database is stuck.
DB_TIMEOUT = 1.0
#: How long the approver has to answer (a business rule: :mod:`.rules`).
APPROVAL_WINDOW = timedelta(days=rules.APPROVAL_WINDOW_DAYS)


def is_locked(error: BaseException) -> bool:
    """SQLite's busy answer: another writer holds the database; worth another try."""
    return "locked" in str(error)


LOCKED = Retry(attempts=3, backoff=0.05, retry_on=sqlite3.OperationalError, retry_if=is_locked)


@attrs.frozen
class ApprovalRequested:
    approval_id: str
    subscription_id: str
    removed_share: str


@attrs.frozen
class Decision:
    """The approver's answer: the payload of the signal ``approval``.

    Sent as JSON too: ``sagaflow sagas signal --key SUB --saga UnbundleSaga approval
    --data '{"approved": false, "by": "bob", "reason": "keeps the contract"}'``.
    """

    approved: bool
    by: str
    reason: str = ""


@attrs.frozen
class ApprovalGranted:
    approval_id: str
    by: str


@attrs.frozen
class ApprovalWithdrawn:
    approval_id: str


@attrs.frozen
class BundleModified:
    subscription_id: str
    removed: tuple[str, ...]
    original_price: Decimal
    new_price: Decimal


@attrs.frozen
class ModificationReverted:
    subscription_id: str
    restored: tuple[str, ...]
    price: Decimal


def component_ids(value: Iterable[str]) -> tuple[str, ...]:
    """The components to remove, as a tuple (a list is accepted, and kept immutable)."""
    return tuple(value)


def approval_id_of(saga_id: str) -> str:
    """The approval a saga asks for: one per saga, named after it."""
    return f"APR-{saga_id}"


def approval_required(s: UnbundleSaga) -> bool:
    """More than half of the components go (rules.requires_approval, priced by step 2)."""
    return s.needs_approval


@saga(key="subscription_id")
@attrs.define
class UnbundleSaga:
    subscription_id: str
    bundle_id: str
    remove: tuple[str, ...] = attrs.field(converter=component_ids)
    new_price: Decimal | None = None
    removed_share: str | None = None
    needs_approval: bool = False
    version: int | None = None
    original_price: Decimal | None = None  # kept only for revert_modification
    approval_id: str | None = None  # kept only for withdraw_approval
    approved_by: str | None = None

    @property
    def request(self) -> rules.ModificationRequest:
        return rules.ModificationRequest(self.subscription_id, self.bundle_id, self.remove)

    @step(readonly=True, timeout=DB_TIMEOUT)
    def validate(self, ctx: StepContext) -> None:
        found = database().load(self.subscription_id)
        rules.validate(self.request, found[0] if found else None)

    @step(readonly=True, timeout=DB_TIMEOUT)
    def calculate_pricing(self, ctx: StepContext) -> None:
        found = database().load(self.subscription_id)
        quote = rules.quote(self.request, found[0] if found else None)
        self.version = found[1] if found else None
        self.original_price, self.new_price = quote.original_price, quote.new_price
        self.removed_share = str(quote.removed_share)
        self.needs_approval = quote.requires_approval

    @step(when=approval_required, timeout=DB_TIMEOUT, retry=LOCKED)
    def create_approval(self, ctx: StepContext) -> None:
        self.approval_id = self.approval_id or approval_id_of(ctx.saga_id)
        database().create_approval(
            ctx.idempotency_key, self.approval_id, self.subscription_id, self.remove,
            str(self.removed_share),
        )
        ctx.emit(ApprovalRequested(self.approval_id, self.subscription_id, str(self.removed_share)))

    @create_approval.compensate
    def withdraw_approval(self, ctx: StepContext) -> None:
        # By the saga's own approval id, even when the step never got as far as naming it
        # (it timed out before its thread ran): its call may still arrive, and only the
        # WITHDRAWN row this leaves stops it from leaving a PENDING approval behind.
        approval_id = self.approval_id or approval_id_of(ctx.saga_id)
        db = database()
        if db.withdraw_approval(ctx.idempotency_key, approval_id, self.subscription_id):
            ctx.emit(ApprovalWithdrawn(approval_id))

    @wait("approval", payload=Decision, timeout=APPROVAL_WINDOW, when=approval_required)
    def await_approval(self, decision: Decision, ctx: StepContext) -> None:
        if not decision.approved:
            raise SagaRejected(f"refused by {decision.by}: {decision.reason or 'no reason given'}")
        self.approved_by = decision.by
        ctx.emit(ApprovalGranted(str(self.approval_id), decision.by))

    @step(timeout=DB_TIMEOUT, retry=LOCKED)
    def apply_modification(self, ctx: StepContext) -> None:
        assert self.version is not None and self.new_price is not None
        assert self.original_price is not None
        approval = (self.approval_id, self.approved_by) if self.approved_by else None
        database().apply_modification(
            ctx.idempotency_key, self.subscription_id, self.remove, self.new_price, self.version,
            approval,
        )
        ctx.emit(BundleModified(self.subscription_id, self.remove, self.original_price,
                                self.new_price))

    @apply_modification.compensate
    def revert_modification(self, ctx: StepContext) -> None:
        assert self.original_price is not None
        if database().revert_modification(
            ctx.idempotency_key, forward_key(ctx), ctx.saga_id, self.subscription_id,
            self.remove, self.original_price,
        ):
            ctx.emit(ModificationReverted(self.subscription_id, self.remove, self.original_price))

    @step(pivot=True, timeout=DB_TIMEOUT, retry=LOCKED)
    def emit_audit_events(self, ctx: StepContext) -> None:
        change = {"removed": list(self.remove), "share": self.removed_share,
                  "from": str(self.original_price), "to": str(self.new_price)}
        events = [("BundleModified", change)]
        if self.approval_id is not None:
            events[:0] = [("ApprovalRequested", {"approval_id": self.approval_id}),
                          ("ApprovalGranted", {"approval_id": self.approval_id,
                                               "by": self.approved_by})]
        database().append_audit_events(
            ctx.idempotency_key, ctx.saga_id, self.subscription_id, events
        )


# --- the example cases: the property tests and `sagaflow verify` -------------------------

#: The subscription every example case modifies: the catalogue's whole bundle.
CASE_SUBSCRIPTION = "sub-1"
_case_db: dbmod.SubscriptionDB | None = None


def case_database() -> dbmod.SubscriptionDB:
    """This process's database for the example cases, made the sagas' database.

    A file in a temporary folder of the process that first asked (removed when it exits;
    the processes it forks, which crash points kill, share the file and never remove
    it): the crash gate's recovery, in another process, must find what the killed one
    wrote. ``synchronous=OFF``: no fsync (a run costs a few milliseconds, not a hundred),
    and a killed process still loses nothing it committed.
    """
    global _case_db
    if _case_db is None:
        _case_db = dbmod.SubscriptionDB(case_folder("subscriptions") / "cases.db",
                                        synchronous="OFF")
    dbmod._current = _case_db  # another test may have opened its own since
    return _case_db


def reset_case_database() -> None:
    """The cases' ``setup``: the demo's catalogue and one subscription to its whole
    bundle (:data:`CASE_SUBSCRIPTION`), nothing else, and no fault armed."""
    from .demo import BUNDLE, seed

    db = case_database()
    db.faults.clear()
    db.clear()
    seed(db)
    db.subscribe(CASE_SUBSCRIPTION, f"customer of {CASE_SUBSCRIPTION}", BUNDLE)


def case_state() -> dict[str, Any]:
    """The cases' ``snapshot``: what customers, approver and billing see
    (:meth:`~examples.subscriptions.db.SubscriptionDB.business_state`)."""
    return case_database().business_state()


def refused(subscription_id: str, bundle_id: str, remove: Iterable[str]) -> bool:
    """Whether the rules refuse this request on the cases' fresh database."""
    from .demo import BUNDLE, COMPONENTS, DISCOUNT

    subscription = rules.Subscription(
        CASE_SUBSCRIPTION, BUNDLE, tuple(COMPONENTS), DISCOUNT,
        rules.list_price(tuple(COMPONENTS), DISCOUNT),
    )
    request = rules.ModificationRequest(subscription_id, bundle_id, tuple(remove))
    try:
        rules.validate(request, subscription if subscription_id == CASE_SUBSCRIPTION else None)
    except rules.Rejected:
        return True
    return False


def example_case(
    remove: Iterable[str], bundle_id: str | None = None, subscription_id: str = CASE_SUBSCRIPTION
) -> Any:
    """A :class:`~sagaflow.testing.SagaCase`: an UnbundleSaga removing ``remove`` on the
    cases' fresh database, whose business state is the snapshot. A request the rules
    refuse may fail ``validate`` (``allow_step_errors``); a valid one may not fail on
    its own. Module level, so that crash points can call it in their child process."""
    from sagaflow.testing import SagaCase

    from .demo import BUNDLE

    bundle = BUNDLE if bundle_id is None else bundle_id
    return SagaCase(
        UnbundleSaga(subscription_id, bundle, tuple(remove)), reset_case_database, case_state,
        allow_step_errors=refused(subscription_id, bundle, remove),
    )


def example_sagas() -> Any:
    """UnbundleSagas for the property tests and ``sagaflow verify``: one subscription to
    the demo's six-component bundle on a database reset before each run, from which a
    request removes 1 to 5 components (more than 3: the approver's wait); some requests
    the rules refuse (every component, an unknown or repeated one, none, another bundle,
    an unknown subscription), each a step error the saga ends on before any write."""
    from hypothesis import strategies as st

    from .demo import COMPONENTS

    ids = [c.component_id for c in COMPONENTS]
    valid = st.lists(st.sampled_from(ids), min_size=1, max_size=len(ids) - 1, unique=True)
    refusals = st.one_of(
        st.permutations(ids).map(lambda every: example_case(every)),
        valid.map(lambda some: example_case([*some, "hosting"])),
        valid.map(lambda some: example_case([*some, some[0]])),
        st.just(()).map(example_case),
        valid.map(lambda some: example_case(some, bundle_id="starter-pack")),
        valid.map(lambda some: example_case(some, subscription_id="sub-404")),
    )
    return st.one_of(valid.map(example_case), refusals)
