"""Benchmarks: ``python -m benchmarks`` (or ``./run.sh bench``). Never part of the tests."""
