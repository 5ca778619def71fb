"""A throwaway PostgreSQL server for tests: initdb and pg_ctl in a temporary folder.

It listens only on 127.0.0.1, on a free port, with trust authentication, and is stopped
and removed when the test session ends. PostgreSQL refuses to run as root, so when the
tests run as root the server runs as the unprivileged user ``nobody``. Databases are
created and dropped over one maintenance connection: a ``createdb`` process per database
would cost more than most tests.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import threading
from pathlib import Path

import psycopg
from psycopg.rows import TupleRow


class PostgresUnavailable(RuntimeError):
    """The server could not be started; the message says why."""


def find_bin() -> Path:
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)
    for c in candidates:
        if Path(c, "initdb").exists() and Path(c, "pg_ctl").exists():
            return Path(c)
    raise PostgresUnavailable(
        "PostgreSQL server binaries were not found under /usr/lib/postgresql/*/bin: "
        "run `make test` (it installs Debian's postgresql package) or `bash scripts/ensure-postgres.sh`"
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PostgresServer:
    """One running server; ``url(db)`` gives a SQLAlchemy URL for a database on it."""

    def __init__(self) -> None:
        self.bin = find_bin()
        self.root = Path(tempfile.mkdtemp(prefix="backout-pg-"))
        self.data = self.root / "data"
        self.port = free_port()
        self._as_root = os.geteuid() == 0
        self._dbs = 0
        self._lock = threading.Lock()  # databases are created from several threads
        self._admin: psycopg.Connection[TupleRow] | None = None  # creates and drops databases
        self._strategy = ""

    def _run(self, *args: str) -> subprocess.CompletedProcess[str]:
        cmd = list(args)
        if self._as_root:
            cmd = ["runuser", "-u", "nobody", "--", *cmd]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)

    def start(self) -> PostgresServer:
        if self._as_root:
            shutil.chown(self.root, "nobody", "nogroup")
        res = self._run(
            str(self.bin / "initdb"), "-D", str(self.data), "-U", "backout",
            "--auth=trust", "--encoding=UTF8", "--no-sync",
        )  # fmt: skip
        if res.returncode != 0:
            raise PostgresUnavailable(f"initdb failed: {res.stderr.strip() or res.stdout.strip()}")
        opts = (
            f"-c listen_addresses=127.0.0.1 -c port={self.port} "
            f"-c unix_socket_directories={self.root} -c fsync=off -c max_connections=200"
        )
        res = self._run(
            str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(self.root / "log"),
            "-o", opts, "-w", "-t", "60", "start",
        )  # fmt: skip
        if res.returncode != 0:
            log = (self.root / "log").read_text() if (self.root / "log").exists() else ""
            raise PostgresUnavailable(f"pg_ctl start failed: {res.stderr.strip()} {log[-2000:]}")
        try:
            self._admin = psycopg.connect(
                host="127.0.0.1", port=self.port, user="backout", dbname="postgres", autocommit=True
            )
        except psycopg.Error as exc:
            raise PostgresUnavailable(f"cannot connect to the test server: {exc}") from exc
        # Copying the template's files is quicker than writing them to the WAL (the default
        # since PostgreSQL 15) for the small, empty databases the tests want.
        self._strategy = " STRATEGY FILE_COPY" if self._admin.info.server_version >= 150000 else ""
        return self

    def create_database(self) -> str:
        """A new empty database; returns its SQLAlchemy URL."""
        assert self._admin is not None, "start() the server first"
        with self._lock:
            self._dbs += 1
            name = f"t{self._dbs}"
            try:
                self._admin.execute(f"CREATE DATABASE {name}{self._strategy}")
            except psycopg.Error as exc:
                raise PostgresUnavailable(f"CREATE DATABASE {name} failed: {exc}") from exc
        return f"postgresql+psycopg://backout@127.0.0.1:{self.port}/{name}"

    def drop_database(self, url: str) -> None:
        """Drop a database made by :meth:`create_database`, closing what is still connected."""
        assert self._admin is not None, "start() the server first"
        name = url.rsplit("/", 1)[1]
        with self._lock:
            self._admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")

    def stop(self) -> None:
        if self._admin is not None:
            self._admin.close()
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.root, ignore_errors=True)
