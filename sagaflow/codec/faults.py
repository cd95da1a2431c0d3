"""A saga's error as JSON: ``{"type": "StepError", "message": ..., <its constructor's
arguments by name>}``. Errors of :mod:`sagaflow.errors` are named by class name, others by
type path; an exception among the arguments is flattened to ``"ValueError: boom"``, a
sagaflow error among them nested as ``{"$error": {...}}``. An error whose class is gone, or
refuses its arguments, comes back as a plain :class:`~sagaflow.SagaflowError` with the
stored message: a record is never unreadable because of its error."""

from __future__ import annotations

import inspect
import threading
from collections.abc import Mapping
from typing import Any

from .. import errors as _errors
from ..errors import CodecError, SagaflowError
from .diagnose import cause_text
from .paths import type_path
from .values import Values

__all__ = ["Errors"]

#: Errors stored under the names they had before 0.2.0.
_RENAMED = {"StepFailed": "StepError", "CompensationFailed": "CompensationError"}


class Errors:
    """Encodes and decodes saga errors; one per codec."""

    def __init__(self, values: Values) -> None:
        self.values = values
        self._lock = threading.Lock()
        self._params: dict[type, tuple[str, ...] | None] = {}

    def encode(self, error: SagaflowError | None) -> dict[str, Any] | None:
        """``error`` as a JSON-able dict (``None`` stays ``None``)."""
        if error is None:
            return None
        cls = type(error)
        tag = cls.__name__
        if getattr(_errors, tag, None) is not cls:
            tag = type_path(cls)
            self.values.names.remember(tag, cls)
        out: dict[str, Any] = {"type": tag, "message": str(error)}
        try:
            reduced = error.__reduce__()
            args = tuple(reduced[1]) if isinstance(reduced, tuple) and len(reduced) > 1 else ()
        except Exception:  # an odd __reduce__: the message alone still informs
            args = ()
        names = self._names(cls)
        encoded = [self._encode_arg(a) for a in args]
        if names is not None and len(args) <= len(names):
            out.update(zip(names, encoded, strict=False))
        else:
            out["args"] = encoded
        return out

    def decode(self, data: Mapping[str, Any] | None) -> SagaflowError | None:
        """The inverse of :meth:`encode`."""
        if data is None:
            return None
        tag = data["type"]
        tag = _RENAMED.get(tag, tag)
        message = data.get("message", tag)
        try:
            cls = getattr(_errors, tag, None) if ":" not in tag else self.values.names.type_of(tag)
            if not (isinstance(cls, type) and issubclass(cls, SagaflowError)):
                return SagaflowError(message)
            if "args" in data:
                made = cls(*(self._decode_arg(a) for a in data["args"]))
            else:
                made = cls(**{
                    k: self._decode_arg(v) for k, v in data.items() if k not in ("type", "message")
                })
        except Exception:  # degrade rather than make the whole record unreadable
            return SagaflowError(message)
        return made

    def _names(self, cls: type) -> tuple[str, ...] | None:
        try:
            return self._params[cls]
        except KeyError:
            pass
        names: tuple[str, ...] | None
        try:
            params = inspect.signature(cls).parameters.values()
            names = tuple(
                p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
            )
            if any(p.kind in (p.VAR_POSITIONAL, p.POSITIONAL_ONLY) for p in params):
                names = None
        except (TypeError, ValueError):
            names = None
        with self._lock:
            self._params[cls] = names
        return names

    def _encode_arg(self, value: Any) -> Any:
        if isinstance(value, SagaflowError):
            return {"$error": self.encode(value)}
        if isinstance(value, BaseException):
            return cause_text(value)
        if type(value) is tuple:  # SagaDefinitionError keeps problems as a tuple
            return [self._encode_arg(v) for v in value]
        try:
            return self.values.encode_value(value)
        except CodecError:
            return repr(value)

    def _decode_arg(self, data: Any) -> Any:
        if type(data) is dict and len(data) == 1 and "$error" in data:
            return self.decode(data["$error"])
        return self.values.decode_value(data)
