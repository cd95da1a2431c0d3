"""Step records as JSON: ``{"name": "charge", "status": "COMPLETED", "attempts": 1, ...}``,
fields at their default left out (a pending step is ``{"name": "charge"}``).

A store encodes a step record at nearly every checkpoint and decodes every one at a
recovery, so they go through a msgspec struct made from :class:`StepRecord`'s own fields (a
field added there is carried here), which writes and checks the form in C. A timestamp that
is not finite, or text msgspec cannot write, takes :func:`~.text.dumps_compat` (sagaflow
0.1's form), and text msgspec refuses is parsed by :func:`~.text.loads`.
"""

from __future__ import annotations

import operator
from typing import Any

import attrs
import msgspec

from ..records import StepRecord
from .text import dumps_compat, encode, loads

__all__ = ["dump_step", "dump_steps", "load_steps"]


_FIELDS: tuple[Any, ...] = tuple(attrs.fields(attrs.resolve_types(StepRecord)))


def _form() -> type[msgspec.Struct]:
    spec: list[tuple[str, Any, Any]] = []
    for f in _FIELDS:
        default = f.default
        if default is attrs.NOTHING:
            spec.append((f.name, f.type, msgspec.NODEFAULT))
        elif isinstance(default, attrs.Factory):  # type: ignore[arg-type]
            spec.append((f.name, f.type, msgspec.field(default_factory=default.factory)))
        else:
            spec.append((f.name, f.type, default))
    return msgspec.defstruct("StepForm", spec, omit_defaults=True)


_StepForm = _form()
_values = operator.attrgetter(*(f.name for f in _FIELDS))
_decode_list = msgspec.json.Decoder(list[_StepForm]).decode  # type: ignore[valid-type]
_astuple = msgspec.structs.astuple


def dump_step(step: StepRecord) -> str:
    """One step record as JSON text (a store may keep it while the step is unchanged)."""
    values = _values(step)
    try:
        text = encode(_StepForm(*values)).decode()
    except (UnicodeEncodeError, TypeError):  # a lone surrogate, a value of another type
        return _compat(values)
    # Fields at None are left out, so a null is a non-finite float msgspec wrote as null
    # (or text holding "null": the compatible form is right for it too).
    if "null" in text:
        return _compat(values)
    return text


def _compat(values: tuple[Any, ...]) -> str:
    return dumps_compat(msgspec.to_builtins(_StepForm(*values)))


def dump_steps(steps: list[StepRecord]) -> str:
    """The step records as a JSON array."""
    return "[" + ",".join([dump_step(s) for s in steps]) + "]"


def load_steps(text: str | bytes) -> list[StepRecord]:
    """The step records from :func:`dump_steps`' text (or sagaflow 0.1's)."""
    try:
        forms = _decode_list(text)
    except msgspec.ValidationError:
        raise
    except msgspec.DecodeError:  # NaN or an escaped lone surrogate: sagaflow 0.1's text
        forms = msgspec.convert(loads(text), list[_StepForm])  # type: ignore[valid-type]
    return [StepRecord(*_astuple(f)) for f in forms]


def step_from_form(data: Any) -> StepRecord:
    """A step record from its JSON form (a dict), checked."""
    return StepRecord(*_astuple(msgspec.convert(data, _StepForm)))
