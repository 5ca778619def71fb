"""The store's engine: connecting, migrating, and serialised writes.

``open_store(url)`` connects, applies any pending Alembic migrations and returns a
:class:`Store`. Writes go through :meth:`Store.write`, which serialises writers so that
read-then-write steps (the event chain's head, "is this version taken?") are safe across
processes: SQLite takes its write lock up front with ``BEGIN IMMEDIATE``; PostgreSQL takes a
transaction-scoped advisory lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import URL, Connection, Engine, make_url

from backout.errors import StoreUnavailable
from backout.store.schema import metadata

DEFAULT_HOME = Path(".backout")
MIGRATIONS = Path(__file__).with_name("migrations")
# Any constant works; it only has to be the same for every backout process on the server.
_PG_WRITE_LOCK = 0x6261636B6F7574  # "backout"


def default_url(home: Path = DEFAULT_HOME) -> str:
    """The embedded default: a SQLite file under ``.backout/`` in the working folder."""
    return f"sqlite:///{home / 'backout.db'}"


def redact_url(url: str | URL) -> str:
    """The URL with any password replaced by ``***``, safe to print."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # an unparsable URL has no password we could find; show its scheme only
        return str(url).split("://", 1)[0] + "://…"


class Store:
    """A connected, migrated store. Cheap to share within a process."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.url = engine.url
        self.dialect = engine.dialect.name
        self.metadata = metadata

    @property
    def is_sqlite(self) -> bool:
        return self.dialect == "sqlite"

    @contextlib.contextmanager
    def read(self) -> Iterator[Connection]:
        """A connection in a read transaction (a consistent snapshot)."""
        with self.engine.connect() as conn, conn.begin():
            yield conn

    @contextlib.contextmanager
    def write(self) -> Iterator[Connection]:
        """A write transaction that holds the store's write lock until it commits.

        Everything inside commits together or not at all, so a failed operation leaves the
        store as it was.
        """
        with self.engine.connect() as conn:
            conn = conn.execution_options(backout_write=True)
            with conn.begin():
                if not self.is_sqlite:
                    conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_WRITE_LOCK})
                yield conn

    def dispose(self) -> None:
        self.engine.dispose()

    def __repr__(self) -> str:
        return f"Store({redact_url(self.url)!r})"


def open_store(url: str | None = None, *, migrate: bool = True) -> Store:
    """Connect to the store at ``url`` (default: SQLite under ``.backout/``) and migrate it."""
    url = url or os.environ.get("BACKOUT_STORE") or default_url()
    try:
        parsed = make_url(url)
    except Exception as exc:
        raise StoreUnavailable(
            f"store URL {redact_url(url)!r} is not a URL: use sqlite:///PATH or "
            "postgresql+psycopg://USER:PASSWORD@HOST:PORT/DB"
        ) from exc
    shown = redact_url(parsed)
    backend = parsed.get_backend_name()
    if backend not in ("sqlite", "postgresql"):
        raise StoreUnavailable(
            f"store URL {shown!r} names {backend!r}: backout stores on sqlite or postgresql"
        )
    if backend == "postgresql" and parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    try:
        engine = _engine(parsed)
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    except Exception as exc:
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        raise StoreUnavailable(f"cannot open store {shown!r}: {reason}") from exc
    store = Store(engine)
    if migrate:
        _migrate(store)
    return store


def _engine(url: URL) -> Engine:
    if url.get_backend_name() == "postgresql":
        return sa.create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=10)
    database = url.database or ""
    if database and database != ":memory:" and not database.startswith("file:"):
        Path(database).parent.mkdir(parents=True, exist_ok=True)
    engine = sa.create_engine(url, connect_args={"timeout": 30})
    sa.event.listen(engine, "connect", _sqlite_connect)
    sa.event.listen(engine, "begin", _sqlite_begin)
    return engine


def _sqlite_connect(dbapi_conn: Any, _record: Any) -> None:
    # Let SQLAlchemy's "begin" event issue BEGIN itself (the pysqlite driver otherwise starts
    # transactions lazily and never with IMMEDIATE), then set the pragmas every connection needs.
    dbapi_conn.isolation_level = None
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.close()


def _sqlite_begin(conn: Connection) -> None:
    # A writer takes the lock up front: two writers that both read first and then try to
    # upgrade would deadlock and one would fail with "database is locked".
    if conn.get_execution_options().get("backout_write"):
        conn.exec_driver_sql("BEGIN IMMEDIATE")
    else:
        conn.exec_driver_sql("BEGIN")


def _migrate(store: Store) -> None:
    """Apply pending migrations, one process at a time."""
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with _migration_lock(store), store.engine.connect() as conn:
        if not store.is_sqlite:
            conn.execute(sa.text("SELECT pg_advisory_lock(:k)"), {"k": _PG_WRITE_LOCK + 1})
            conn.commit()
        try:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")
            conn.commit()
        finally:
            if not store.is_sqlite:
                conn.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": _PG_WRITE_LOCK + 1})
                conn.commit()


@contextlib.contextmanager
def _migration_lock(store: Store) -> Iterator[None]:
    # Two processes opening a new SQLite file at once would both try to create the tables.
    database = store.url.database if store.is_sqlite else None
    if not database or database == ":memory:":
        yield
        return
    with open(f"{database}.migrate.lock", "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def as_utc(at: datetime) -> datetime:
    """A stored time as an aware UTC datetime (SQLite hands back naive ones; all are UTC)."""
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)
