"""Sagas for the dashboard's tests: one that completes, one that fails with what it
could not undo, one left RUNNING (its process died), one whose data holds markup; one
that waits for an approval (a signal with a payload class), then ships."""

from __future__ import annotations

from datetime import timedelta

import attrs

from sagaflow import Retry, saga, step, wait

NO_RETRY = Retry(attempts=1)
broken: set[str] = set()


class Crash(BaseException):
    """The process dies in the middle of a step (the record stays RUNNING)."""


@saga(name="shop")
@attrs.define
class Shop:
    note: str = "o-1"

    @step
    def reserve(self, ctx):
        pass

    @reserve.compensate(retry=NO_RETRY)
    def release(self, ctx):
        if "release" in broken:
            raise ConnectionError("release down")

    @step(retry=NO_RETRY)
    def charge(self, ctx):
        if "crash" in broken:
            broken.discard("crash")
            raise Crash
        if "charge" in broken:
            raise ValueError("card declined")

    @charge.compensate
    def refund(self, ctx):
        pass


@attrs.frozen
class Approval:
    """The payload of the signal ``approval``."""

    by: str
    amount: int


@saga(name="approve")
@attrs.define
class Approve:
    """Reserves, waits (a week at most) for ``approval``, ships."""

    note: str = "o-2"
    approved_by: str | None = None

    @step
    def reserve(self, ctx):
        pass

    @reserve.compensate
    def release(self, ctx):
        pass

    @wait("approval", payload=Approval, timeout=timedelta(days=7))
    def approved(self, approval: Approval, ctx):
        self.approved_by = approval.by

    @step(pivot=True)
    def ship(self, ctx):
        pass


@saga(name="ship")
@attrs.define
class Ship:
    """Fails after its pivot when ``"notify"`` is broken: nothing to undo, to be finished."""

    order: str = "o-1"

    @step(pivot=True)
    def ship(self, ctx):
        pass

    @step(retriable=True, retry=NO_RETRY)
    def notify(self, ctx):
        if "notify" in broken:
            raise ConnectionError("mail server down")
