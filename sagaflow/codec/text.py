"""JSON text: msgspec's encoder and decoder, with the standard library behind them for the
two things msgspec refuses.

- A lone surrogate (text made from undecodable bytes) is not UTF-8, so msgspec cannot write
  it: such a value is written by :func:`json.dumps`, ASCII-escaped, as sagaflow 0.1 wrote
  everything.
- sagaflow 0.1 wrote non-finite floats as ``NaN``/``Infinity`` and lone surrogates as
  ``\\udcxx`` escapes; msgspec reads neither, so text it refuses is read by
  :func:`json.loads`. Malformed text raises :class:`ValueError` from there.

What sagaflow writes now never holds a non-finite float as a JSON number: msgspec would
write ``null``. The callers keep them out (the value encoders tag them, the step and history
encoders fall back to :func:`dumps_compat`).
"""

from __future__ import annotations

import json
from typing import Any

import msgspec

__all__ = ["dumps", "dumps_compat", "encode", "loads"]

#: Bytes of JSON-able ``value`` (builtins, msgspec structs, attrs classes, ...).
encode = msgspec.json.Encoder().encode
_decode = msgspec.json.decode


def dumps(value: Any) -> str:
    """Compact JSON text of JSON-able ``value``."""
    try:
        return encode(value).decode()
    except UnicodeEncodeError:
        return dumps_compat(value)


def dumps_compat(value: Any) -> str:
    """Compact, ASCII-only JSON text as sagaflow 0.1 wrote it (``NaN``, ``Infinity`` and
    lone surrogates escaped): for the rare value msgspec cannot write as itself."""
    return json.dumps(value, separators=(",", ":"))


def loads(text: str | bytes) -> Any:
    """Parse JSON text (what :func:`dumps` or sagaflow 0.1 wrote)."""
    try:
        return _decode(text)
    except msgspec.DecodeError:
        return json.loads(text)
