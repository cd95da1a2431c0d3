"""The throwaway cluster: found, started as an unprivileged user, removed; and a
machine without PostgreSQL skips the PostgreSQL tests locally but fails them in CI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from sagaflow.testing.pgcluster import PgCluster, PgClusterError, find_binaries

TESTS = Path(__file__).resolve().parents[1]

PROBE = '''
from postgres_cluster import pg_url  # noqa: F401


def test_needs_postgres(pg_url):
    assert pg_url
'''


def run_probe(tmp_path: Path, ci: str | None) -> subprocess.CompletedProcess[str]:
    (tmp_path / "test_probe.py").write_text(PROBE)
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env["SAGAFLOW_PG_BIN"] = str(tmp_path / "no-postgres-here")
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS), str(TESTS.parent)])
    if ci is not None:
        env["CI"] = ci
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider",
         str(tmp_path / "test_probe.py"), "--rootdir", str(tmp_path)],
        capture_output=True, text=True, env=env, cwd=tmp_path, check=False,
    )


def test_without_postgres_the_tests_skip_saying_why(tmp_path: Path) -> None:
    done = run_probe(tmp_path, ci=None)
    assert done.returncode == 0, done.stdout
    assert "1 skipped" in done.stdout and "PostgreSQL server binaries" in done.stdout


def test_without_postgres_ci_fails(tmp_path: Path) -> None:
    done = run_probe(tmp_path, ci="true")
    assert done.returncode == 1, done.stdout
    assert "CI=true: the PostgreSQL tests must run" in done.stdout


def test_a_cluster_starts_in_a_private_directory_and_is_removed() -> None:
    cluster = PgCluster(settings={"fsync": "off", "max_connections": "20"}, port=5499)
    with cluster:
        base = cluster.base
        assert base is not None and (base / "data" / "PG_VERSION").exists()
        url = cluster.create_database("probe")
        assert cluster.create_database("probe") == url  # already there: same URL
        with psycopg.connect(url) as conn:
            assert conn.execute("SHOW fsync").fetchone() == ("off",)
            assert conn.execute("SHOW listen_addresses").fetchone() == ("",)
            user = conn.execute("SELECT current_user").fetchone()
        assert user is not None and user[0] == cluster.db_user
    assert not base.exists() and not cluster.started


def test_a_missing_run_as_user_is_named() -> None:
    with pytest.raises(PgClusterError, match="no 'nobody-here' system user"):
        PgCluster(user="nobody-here")
    assert find_binaries() is not None
