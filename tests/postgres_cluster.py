"""One throwaway PostgreSQL cluster per test session, shared by every test folder.

``pg_url`` (a session fixture, imported by the conftests that need it) starts the
cluster on first use and stops it when the session ends; each test then works in a
fresh schema (:func:`fresh_schema`), so tests never see each other's sagas.

Without PostgreSQL's server binaries (or psycopg) the tests that need it are skipped,
saying why, except in CI (``CI=true``), where a missing PostgreSQL fails them: CI must
never pass by silently not testing the PostgreSQL store.
"""

from __future__ import annotations

import itertools
import os

import pytest

from sagaflow.testing.pgcluster import MISSING, PgCluster, find_binaries

_cluster: PgCluster | None = None
_url: str | None = None
_names = itertools.count()


def _unavailable(reason: str) -> None:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason} (CI=true: the PostgreSQL tests must run, not be skipped)")
    pytest.skip(reason)


def cluster_url(config: pytest.Config) -> str:
    """The URL of the session's test database, starting the cluster on first call."""
    global _cluster, _url
    if _url is not None:
        return _url
    try:
        import psycopg  # noqa: F401
        import psycopg_pool  # noqa: F401
    except ImportError as exc:
        _unavailable(f"psycopg 3 is not installed ({exc}): pip install 'sagaflow[postgres]'")
    if find_binaries() is None:
        _unavailable(MISSING)
    cluster = PgCluster()
    cluster.start()
    config.add_cleanup(cluster.stop)
    _cluster = cluster
    _url = cluster.create_database("sagaflow_tests")
    return _url


def fresh_schema(prefix: str = "t") -> str:
    """A schema name no other test of this session uses."""
    return f"{prefix}_{os.getpid()}_{next(_names)}"


def drop_schema(url: str, schema: str) -> None:
    """Remove a test's schema and everything in it."""
    import psycopg
    from psycopg import sql

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


@pytest.fixture(scope="session")
def pg_url(request: pytest.FixtureRequest) -> str:
    """The session's PostgreSQL test database (skipped, or failed in CI, without one)."""
    return cluster_url(request.config)
