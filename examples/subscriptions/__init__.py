"""Seed 000: the UnbundleSaga of a SaaS subscription platform.

``rules`` holds the pure business rules (no sagaflow), ``db`` the SQLite domain
database and its idempotent operations, ``saga`` the ``UnbundleSaga`` that ties them.
"""
