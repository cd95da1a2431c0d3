"""The sync and async drivers: perform what the engine decides, save, notify.

:func:`drive` and :func:`adrive` take a :class:`~sagaflow.runtime.Runtime` and a record
and run it to a terminal state. Both loops are the same few lines around
:mod:`sagaflow.engine`: ask for the next command, save the record (write-ahead), tell
the listeners, perform the command and report its outcome. Only how a call is made
differs:

- sync: when any call has a limit, the run happens on a call thread while the
  caller watches the clock. Python cannot kill a thread, so a call that overruns is
  *abandoned*: the watcher records the timeout and moves the run on (compensating) on
  a fresh thread; the abandoned thread finishes its call on its own, and whatever it
  returns or emits late is dropped. A saga with no limits at all runs on the caller's
  thread.
- async: a coroutine step is cancelled when it overruns; a plain ``def`` step runs on
  a call thread so it cannot block the loop (and, overrunning, is abandoned like a sync
  one). Compensation is shielded from cancellation of the task that awaits the run.

A save that cannot encode what a call left in the saga's fields (a field that cannot be
stored) does not leave the saga stuck: the record goes back to what the store holds
(the fields as they were before the call), the call's outcome is taken as unknown, and
the saga moves on (compensating the step too).

The parts, each importing only those before it: ``_common`` (what both drivers
share), ``_once`` (:func:`step_once`, :func:`astep_once`: one call, for a
choreography's participant), ``_handoff`` (what a driver does with a choreographed
instance instead of its calls: only what is due), ``_sync`` (:func:`drive`), ``_async``
(:func:`adrive`). A parallel group or fan-out is driven by :mod:`sagaflow.gather`.

A runtime's telemetry (:class:`~sagaflow.runtime.Instrument`, ``sagaflow.otel``) is told
where a run begins and ends (``enter``/``leave``) and wraps each call where the driver makes
it; without one, a call costs one attribute test.
"""

from __future__ import annotations

from ._async import adrive
from ._common import handover, stored_result
from ._once import BeforeSave, Check, Expect, astep_once, step_once
from ._sync import drive

__all__ = [
    "BeforeSave",
    "Check",
    "Expect",
    "adrive",
    "astep_once",
    "drive",
    "handover",
    "step_once",
    "stored_result",
]
