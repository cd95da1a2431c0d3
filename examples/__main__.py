"""The demo: run the example sagas, printing what happens."""

from . import quickstart

quickstart.main()
