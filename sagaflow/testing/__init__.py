"""Tools to test sagas: a virtual clock (more to come: failure plans, invariants)."""

from .clock import VirtualClock

__all__ = ["VirtualClock"]
