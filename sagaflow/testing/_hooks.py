"""hypothesis's entry point (``hypothesis`` group in setup.cfg): teach ``st.from_type``
about ``FailurePlan[MySaga]`` as soon as hypothesis is imported.

It lives apart from :mod:`.strategies` because importing that module imports hypothesis,
whose entry points then run while :mod:`.strategies` is half made: the hook then leaves
the registering to :mod:`.strategies` itself, which does it once it is whole.
"""

from __future__ import annotations

import sys

__all__ = ["hypothesis_setup"]


def hypothesis_setup() -> None:
    """Register sagaflow's strategies with hypothesis (run by its entry point)."""
    module = sys.modules.get("sagaflow.testing.strategies")
    if module is not None and not hasattr(module, "register_strategies"):
        return  # being imported, and hypothesis with it: it registers at its end
    from .strategies import register_strategies

    register_strategies()
