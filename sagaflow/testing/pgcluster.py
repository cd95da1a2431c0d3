"""A throwaway PostgreSQL cluster for tests and benchmarks: ``initdb``, start, stop.

The cluster lives in a fresh temporary directory and listens only on a Unix socket in
that directory (no TCP port, so nothing can clash with another cluster on the machine).
``initdb`` refuses to run as root, so under root the cluster is created and run as the
``postgres`` system user (Debian's server package makes one), whose files the
directory then holds.

The server binaries are found in ``$SAGAFLOW_PG_BIN`` if it is set, else in the newest
``/usr/lib/postgresql/<version>/bin`` (Debian and Ubuntu keep them off ``PATH``), else
next to ``initdb`` on ``PATH``. :func:`find_binaries` returns ``None`` when there are none, so a
test suite can skip (or, in CI, fail) with :data:`MISSING`.

::

    with PgCluster() as cluster:
        url = cluster.create_database("sagas")   # postgresql:///sagas?host=...
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import urllib.parse
from collections.abc import Mapping
from pathlib import Path

__all__ = ["MISSING", "PgCluster", "PgClusterError", "find_binaries"]

#: Why a cluster cannot be started when :func:`find_binaries` finds nothing.
MISSING = (
    "PostgreSQL server binaries (initdb, pg_ctl) not found: install them "
    "(Debian: apt-get install postgresql-15) or set SAGAFLOW_PG_BIN to their folder"
)

#: Settings for a test cluster: durability off (the tests kill workers, never the
#: server), small, quiet.
FAST: Mapping[str, str] = {
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_connections": "200",
    "shared_buffers": "128MB",
}
#: Settings for benchmarks: every commit durable, as in production.
DURABLE: Mapping[str, str] = {
    "fsync": "on",
    "synchronous_commit": "on",
    "max_connections": "200",
    "shared_buffers": "256MB",
}


class PgClusterError(RuntimeError):
    """The cluster could not be created, started or stopped; the message says why."""


def find_binaries() -> Path | None:
    """The folder holding ``initdb``, ``pg_ctl`` and ``postgres``, or ``None``.

    ``$SAGAFLOW_PG_BIN``, when set, is the only place looked at.
    """
    explicit = os.environ.get("SAGAFLOW_PG_BIN")
    candidates: list[Path] = []
    if explicit:
        candidates.append(Path(explicit))
        return candidates[0] if _complete(candidates[0]) else None
    found = glob.glob("/usr/lib/postgresql/*/bin/initdb")
    found.sort(key=lambda p: _version_key(Path(p).parents[1].name), reverse=True)
    candidates += [Path(p).parent for p in found]
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(Path(on_path).parent)
    for folder in candidates:
        if _complete(folder):
            return folder
    return None


def _complete(folder: Path) -> bool:
    return all(os.access(folder / name, os.X_OK) for name in ("initdb", "pg_ctl", "postgres"))


def _version_key(name: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in name.split("."))
    except ValueError:
        return (0,)


class PgCluster:
    """A PostgreSQL cluster in a temporary directory, on a private Unix socket.

    ``settings`` are ``postgresql.conf`` lines (default :data:`FAST`); ``user`` runs the
    server (default: ``postgres`` when this process is root, else the current user).
    Start it with :meth:`start` or ``with``; :meth:`stop` stops it and removes its files.
    """

    def __init__(
        self,
        *,
        settings: Mapping[str, str] | None = None,
        bindir: Path | None = None,
        user: str | None = None,
        port: int = 5432,
    ) -> None:
        found = bindir if bindir is not None else find_binaries()
        if found is None:
            raise PgClusterError(MISSING)
        self.bindir = found
        self.settings = dict(FAST if settings is None else settings)
        self.port = port
        root = os.geteuid() == 0
        self.user = user if user is not None else ("postgres" if root else None)
        self._uid: int | None = None
        if self.user is not None:
            try:
                self._uid = pwd.getpwnam(self.user).pw_uid
            except KeyError:
                raise PgClusterError(
                    f"there is no {self.user!r} system user to run PostgreSQL as (initdb "
                    "refuses root): create one, or pass user= an unprivileged account"
                ) from None
        self.base: Path | None = None
        self.started = False

    # -- paths and commands --------------------------------------------------------

    @property
    def datadir(self) -> Path:
        assert self.base is not None, "the cluster is not created yet"
        return self.base / "data"

    @property
    def socket_dir(self) -> Path:
        assert self.base is not None, "the cluster is not created yet"
        return self.base / "run"

    def url(self, dbname: str = "postgres") -> str:
        """A ``postgresql://`` URL of database ``dbname`` on this cluster's socket."""
        query = urllib.parse.urlencode(
            {"host": str(self.socket_dir), "port": str(self.port), "user": self.db_user}
        )
        return f"postgresql:///{urllib.parse.quote(dbname)}?{query}"

    @property
    def db_user(self) -> str:
        """The database superuser (initdb names it after the user that ran it)."""
        return self.user if self.user is not None else pwd.getpwuid(os.geteuid()).pw_name

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        command = [str(self.bindir / args[0]), *args[1:]]
        if self.user is not None and os.geteuid() == 0:
            runuser = shutil.which("runuser")
            if runuser is not None:
                command = [runuser, "-u", self.user, "--", *command]
            else:
                command = ["su", self.user, "-s", "/bin/sh", "-c", _quote(command)]
        done = subprocess.run(
            command, capture_output=True, text=True, check=False, cwd=self.base,
            env={**os.environ, "LC_ALL": "C", "LANG": "C"},
        )
        if check and done.returncode != 0:
            raise PgClusterError(
                f"{args[0]} failed (exit {done.returncode}): "
                f"{(done.stderr or done.stdout).strip()[-2000:]}"
            )
        return done

    # -- lifecycle -----------------------------------------------------------------

    def start(self) -> PgCluster:
        """Create the cluster (initdb) and start it; returns ``self``."""
        if self.started:
            return self
        parent = tempfile.gettempdir()
        if len(parent) > 60 and os.path.isdir("/tmp"):
            parent = "/tmp"  # a Unix socket's path is limited to about 100 bytes
        self.base = Path(tempfile.mkdtemp(prefix="sagaflow-pg-", dir=parent))
        try:
            self.socket_dir.mkdir()
            if self._uid is not None and os.geteuid() == 0:
                for path in (self.base, self.socket_dir):
                    os.chown(path, self._uid, -1)
            os.chmod(self.base, 0o755)
            self._run(
                "initdb", "-D", str(self.datadir), "-U", self.db_user, "--auth=trust",
                "--no-sync", "-E", "UTF8", "--locale=C",
            )
            conf = {
                "listen_addresses": "''",
                "unix_socket_directories": f"'{self.socket_dir}'",
                "port": str(self.port),
                "logging_collector": "off",
                "log_min_messages": "warning",
                **{k: _conf_value(v) for k, v in self.settings.items()},
            }
            with open(self.datadir / "postgresql.conf", "a", encoding="utf-8") as f:
                f.write("\n# sagaflow.testing.pgcluster\n")
                f.writelines(f"{key} = {value}\n" for key, value in conf.items())
            self._run(
                "pg_ctl", "-D", str(self.datadir), "-l", str(self.base / "server.log"),
                "-w", "-t", "60", "start",
            )
        except BaseException:
            self._remove()
            raise
        self.started = True
        return self

    def create_database(self, name: str) -> str:
        """Create database ``name`` (if absent) and return its URL."""
        import psycopg
        from psycopg import sql

        with psycopg.connect(self.url(), autocommit=True) as conn:
            exists = conn.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", (name,)
            ).fetchone()
            if exists is None:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.url(name)

    @property
    def postmaster_pid(self) -> int | None:
        """The server's main process (its backends are its children), once started."""
        if not self.started:
            return None
        with contextlib.suppress(OSError, ValueError, IndexError):
            return int((self.datadir / "postmaster.pid").read_text().split()[0])
        return None

    def log(self) -> str:
        """The server's log so far (to explain a failure)."""
        if self.base is None:
            return ""
        with contextlib.suppress(OSError):
            return (self.base / "server.log").read_text(errors="replace")
        return ""

    def stop(self) -> None:
        """Stop the server (fast shutdown) and remove every file of the cluster."""
        try:
            if self.started:
                done = self._run(
                    "pg_ctl", "-D", str(self.datadir), "-m", "fast", "-w", "stop", check=False
                )
                if done.returncode != 0:
                    self._run("pg_ctl", "-D", str(self.datadir), "-m", "immediate", "stop",
                              check=False)
        finally:
            self.started = False
            self._remove()

    def _remove(self) -> None:
        if self.base is not None:
            shutil.rmtree(self.base, ignore_errors=True)
            self.base = None

    def __enter__(self) -> PgCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        where = self.socket_dir if self.base is not None else "not started"
        return f"PgCluster({where})"


def _conf_value(value: str) -> str:
    if value.replace(".", "").replace("-", "").isalnum() or (
        value.startswith("'") and value.endswith("'")
    ):
        return value
    return "'" + value.replace("'", "''") + "'"


def _quote(command: list[str]) -> str:
    import shlex

    return " ".join(shlex.quote(part) for part in command)
