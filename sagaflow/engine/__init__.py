"""The decision core: given a spec, a record and the time, what happens next.

No I/O and no clock: the drivers (:mod:`sagaflow.runner`, :mod:`sagaflow.gather`) pass
``now`` in, perform the :class:`Call`, :class:`Batch` or :class:`Sleep` that
:func:`next_command` returns, and report each call's outcome to :func:`settle`. Both
mutate the record in place and append the lifecycle events to its history; every state
change goes through :func:`transition`, which checks it against the class's state
machine. The sync and async drivers share all of this, and so do the testing toolkit's
virtual-clock runs and crash recovery.

The parts, each importing only those before it: ``_moves`` (the commands, and how a
record moves: on, failing, compensating, finished), ``_waits`` (waits and timers),
``_blocks`` (parallel groups and fan-outs), ``_decide`` (:func:`next_command`,
:func:`settle`), ``_operator`` (cancellation and the operator's verbs).
"""

from __future__ import annotations

from ..errors import OperatorError
from ._blocks import abandon
from ._decide import next_command, settle, unstorable
from ._moves import Batch, Call, Park, Sleep, new_record, transition
from ._operator import cancel, interrupt, resolve, retry
from ._waits import deliver, expire, in_time

__all__ = [
    "Batch",
    "Call",
    "OperatorError",
    "Park",
    "Sleep",
    "abandon",
    "cancel",
    "deliver",
    "expire",
    "in_time",
    "interrupt",
    "new_record",
    "next_command",
    "resolve",
    "retry",
    "settle",
    "transition",
    "unstorable",
]
