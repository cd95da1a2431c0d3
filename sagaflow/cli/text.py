"""How the commands print: aligned columns and times."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

__all__ = ["columns", "utc"]


def columns(rows: Sequence[Sequence[str]], indent: str = "") -> list[str]:
    """The rows as lines, each column as wide as its widest cell."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return [
        indent + "  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip()
        for r in rows
    ]


def utc(at: float | None) -> str:
    """A Unix time as ISO 8601 UTC to the millisecond (``-`` for none)."""
    if at is None:
        return "-"
    stamp = dt.datetime.fromtimestamp(at, dt.UTC).isoformat(timespec="milliseconds")
    return stamp.replace("+00:00", "Z")
