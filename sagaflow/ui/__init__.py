"""The operator's dashboard: ``sagaflow ui --store URL`` (the ``ui`` extra).

A Starlette app over a store (:func:`create_app`): the sagas with filters and keyset
paging, a saga's page (data, steps, history, domain events, its diagram with the run's
position), and the operator's actions (retry, resolve, cancel) behind a confirmation, a
CSRF token and the record's version. Nothing here is imported by sagaflow itself.
"""

from __future__ import annotations

__all__ = ["create_app"]

from .app import create_app
