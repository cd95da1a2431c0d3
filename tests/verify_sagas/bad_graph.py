"""BROKEN (graph gate): ``@saga`` never builds a machine that traps a run, so this
module removes one of its transitions afterwards, standing in for such a bug."""

from __future__ import annotations

import attrs

from sagaflow import StepContext, saga, spec_of, step
from sagaflow.spec import SPEC_ATTRIBUTE

from .ledger import LEDGER, forward_key


@saga(name="trapped")
class Trapped:
    @step(timeout=5)
    def charge(self, ctx: StepContext) -> None:
        LEDGER.apply(ctx.idempotency_key, "ann", -1)

    @charge.compensate
    def refund(self, ctx: StepContext) -> None:
        LEDGER.undo(ctx.idempotency_key, forward_key(ctx))


_spec = spec_of(Trapped)
_cut = frozenset(t for t in _spec.transitions if t[0] != "compensating_charge")
setattr(Trapped, SPEC_ATTRIBUTE, attrs.evolve(_spec, transitions=_cut))
