"""sagaflow: declarative sagas for Python, with compensation done right.

Decorate a class with :func:`saga`, its forward methods with :func:`step` and their
undo methods with ``@<step>.compensate``; run instances with an :class:`Orchestrator`.
"""

from . import events
from .builder import SagaBuilder
from .choreography import ChoreographySpec, FlowFailed, Participant
from .context import Direction, StepContext
from .definition import Parallel, parallel, saga, step, timer, wait
from .diagram import draw
from .errors import (
    AlreadyExecuting,
    CodecError,
    CompensationError,
    ConcurrentModification,
    CorruptRecord,
    GraphvizNotFound,
    InvalidTransition,
    LeaseLost,
    OperatorError,
    SagaCancelled,
    SagaDeadlineExceeded,
    SagaDefinitionChanged,
    SagaDefinitionError,
    SagaflowError,
    SagaNotFound,
    SagaQuarantined,
    SagaRejected,
    ScaffoldError,
    SignalRefused,
    StepError,
    StepTimeout,
    StoreError,
    UnknownSaga,
    UnknownSagaClass,
    WaitTimedOut,
)
from .orchestrator import Orchestrator, RecoveryReport
from .policy import Retry, backoff_delay
from .records import (
    CompensationStatus,
    SagaRecord,
    SagaResult,
    SagaStatus,
    Signal,
    StepRecord,
    StepStatus,
)
from .routing import (
    NoRoute,
    ReplyRefused,
    Router,
    Undecodable,
    UnknownCorrelation,
    Unroutable,
)
from .spec import OnTimeout, SagaSpec, StepKind, StepSpec, is_saga, spec_of

__version__ = "0.1.0"

__all__ = [
    "Unroutable",
    "UnknownCorrelation",
    "Undecodable",
    "Router",
    "ReplyRefused",
    "NoRoute",
    "AlreadyExecuting",
    "ChoreographySpec",
    "CodecError",
    "CompensationError",
    "CompensationStatus",
    "ConcurrentModification",
    "CorruptRecord",
    "Direction",
    "FlowFailed",
    "GraphvizNotFound",
    "InvalidTransition",
    "LeaseLost",
    "OnTimeout",
    "OperatorError",
    "Orchestrator",
    "Parallel",
    "Participant",
    "RecoveryReport",
    "Retry",
    "SagaCancelled",
    "SagaDeadlineExceeded",
    "SagaDefinitionChanged",
    "SagaBuilder",
    "SagaDefinitionError",
    "SagaNotFound",
    "SagaQuarantined",
    "SagaRecord",
    "SagaRejected",
    "SagaResult",
    "SagaSpec",
    "SagaStatus",
    "SagaflowError",
    "ScaffoldError",
    "Signal",
    "SignalRefused",
    "StepContext",
    "StepError",
    "StepKind",
    "StepRecord",
    "StepSpec",
    "StepStatus",
    "StepTimeout",
    "StoreError",
    "UnknownSaga",
    "UnknownSagaClass",
    "WaitTimedOut",
    "backoff_delay",
    "draw",
    "events",
    "is_saga",
    "parallel",
    "saga",
    "spec_of",
    "step",
    "timer",
    "wait",
]
