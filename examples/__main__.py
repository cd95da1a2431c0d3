"""The demo (``./run.sh demo``, i.e. ``python -m examples``): every example saga, printed."""

from __future__ import annotations

import sys

from .console import Demo
from .registration import demo as registration


def main(argv: list[str] | None = None) -> int:
    d = Demo()
    registration.demo(d)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
