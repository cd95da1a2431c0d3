"""A figure of the benchmarks: its value, its ratio to the baseline measured in the same
run, and the target that ratio has."""

from __future__ import annotations

import attrs

__all__ = ["Row", "show"]


@attrs.frozen
class Row:
    """One figure: ``value`` (in ``unit``), and its ratio to its baseline (``ratio``,
    against ``against``) with the target that ratio has (``target``: at least; for
    ``target_max``: at most)."""

    what: str
    value: float
    unit: str = "sagas/s"
    ratio: float | None = None
    against: str = ""
    target: float | None = None
    target_max: float | None = None

    @property
    def verdict(self) -> str:
        if self.ratio is None or (self.target is None and self.target_max is None):
            return ""
        if self.target is not None:
            ok = self.ratio >= self.target
            goal = f">= {self.target:g}x"
        else:
            assert self.target_max is not None
            ok = self.ratio <= self.target_max
            goal = f"<= {self.target_max:g}x"
        return f"target {goal}: {'met' if ok else 'MISSED'}"


def show(rows: list[Row]) -> None:
    for row in rows:
        value = f"{row.value:10.1f}" if row.unit != "sagas/s" else f"{row.value:10.0f}"
        ratio = "" if row.ratio is None else f"{row.ratio:6.2f}x {row.against:20}"
        print(f"  {row.what:52} {value} {row.unit:8} {ratio} {row.verdict}".rstrip())
