"""Sagas for the dashboard's tests: one that completes, one that fails with what it
could not undo, one left RUNNING (its process died), one whose data holds markup."""

from __future__ import annotations

import attrs

from sagaflow import Retry, saga, step

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
