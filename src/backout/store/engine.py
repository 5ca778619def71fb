"""The store's engine: connecting, migrating, and serialised writes.

``open_store(url)`` connects to an existing store, applies any pending Alembic migrations
and returns a :class:`Store`; only ``open_store(url, create=True)`` makes a new one (owner-only
on disk, with a fresh identity). Every network wait is bounded: PostgreSQL connects within
``CONNECT_TIMEOUT_S`` and cancels statements after ``STATEMENT_TIMEOUT_S``; a store that
cannot be reached is one :class:`StoreUnavailable` line. Writes go through :meth:`Store.write`, which serialises writers so that
read-then-write steps (the event chain's head, "is this version taken?") are safe across
processes: SQLite takes its write lock up front with ``BEGIN IMMEDIATE``; PostgreSQL takes a
transaction-scoped advisory lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sqlite3
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import sqlalchemy as sa
from sqlalchemy.engine import URL, Connection, Engine, make_url

from backout import redaction
from backout.errors import StoreMissing, StoreUnavailable
from backout.store.generation import announce_routes, clear_routes_notice
from backout.store.schema import metadata

DEFAULT_HOME = Path(".backout")
MIGRATIONS = Path(__file__).with_name("migrations")
# Any constant works; it only has to be the same for every backout process on the server.
_PG_WRITE_LOCK = 0x6261636B6F7574  # "backout"
# Network limits for PostgreSQL; a URL's own ``connect_timeout`` or ``options`` win.
CONNECT_TIMEOUT_S = 3  # per attempt: libpq may try twice (with SSL, then without)
STATEMENT_TIMEOUT_S = 30
POOL_TIMEOUT_S = 10
MIGRATION_TIMEOUT_S = 600
SQLITE_BUSY_TIMEOUT_S = 30
_PG_KEEPALIVE = {
    "keepalives": 1,
    "keepalives_idle": 5,
    "keepalives_interval": 2,
    "keepalives_count": 3,
    "tcp_user_timeout": 10_000,  # ms
}
# The read transaction a thread holds open with Store.snapshot(), per engine (see there).
_SNAPSHOTS = threading.local()
HINT_URLS = "use sqlite:///PATH or postgresql+psycopg://USER:PASSWORD@HOST:PORT/DB"


def default_url(home: Path = DEFAULT_HOME) -> str:
    """The embedded default: a SQLite file under ``.backout/`` in the working folder."""
    return f"sqlite:///{home / 'backout.db'}"


def redact_url(url: str | URL) -> str:
    """The URL with any password (and any other secret) hidden, safe to print."""
    if isinstance(url, URL):
        url = url.render_as_string(hide_password=False)
    return redaction.redact_url(url)


class Store:
    """A connected, migrated store. Cheap to share within a process.

    Reads and writes that fail because the store cannot be reached, is locked for too long
    or does not answer in time raise :class:`StoreUnavailable` naming the store.
    """

    def __init__(self, engine: Engine, url: URL | None = None) -> None:
        self.engine = engine
        self.url = url if url is not None else engine.url
        self.dialect = engine.dialect.name
        self.metadata = metadata

    @property
    def is_sqlite(self) -> bool:
        return self.dialect == "sqlite"

    @contextlib.contextmanager
    def read(self) -> Iterator[Connection]:
        """A connection in a read transaction (a consistent snapshot).

        Inside :meth:`snapshot` on the same thread, the snapshot's connection is reused."""
        held = self._held_snapshot()
        if held is not None:
            yield held
            return
        with self._translated(), self.engine.connect() as conn, conn.begin():
            yield conn

    @contextlib.contextmanager
    def snapshot(self) -> Iterator[Connection]:
        """One read transaction that every :meth:`read` of this thread joins until it ends.

        For a view made of many reads (``status``: the route table, the operation, the
        releases, the policy, the lease, the incident, the telemetry): one transaction
        instead of a dozen, and every part read from the same state. Writes are not
        affected (they open their own transaction). Nested snapshots join the outer one.
        """
        held = self._held_snapshot()
        if held is not None:
            yield held
            return
        with self.read() as conn:
            snapshots = _SNAPSHOTS.__dict__.setdefault("by_engine", {})
            snapshots[id(self.engine)] = conn
            try:
                yield conn
            finally:
                snapshots.pop(id(self.engine), None)

    def _held_snapshot(self) -> Connection | None:
        snapshots: dict[int, Connection] = _SNAPSHOTS.__dict__.get("by_engine", {})
        return snapshots.get(id(self.engine))

    @contextlib.contextmanager
    def write(self) -> Iterator[Connection]:
        """A write transaction that holds the store's write lock until it commits.

        Everything inside commits together or not at all, so a failed operation leaves the
        store as it was.
        """
        with self._translated(), self.engine.connect() as conn:
            conn = conn.execution_options(backout_write=True)
            with conn.begin():
                if self.is_sqlite:
                    yield conn
                    return
                conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_WRITE_LOCK})
                clear_routes_notice(conn)
                try:
                    yield conn
                    announce_routes(conn)  # a route change's notification, sent last
                finally:
                    clear_routes_notice(conn)

    @contextlib.contextmanager
    def _translated(self) -> Iterator[None]:
        # The boundary: a store that went away, timed out or stayed locked is one retriable
        # error naming the store; integrity and programming errors pass as they are.
        try:
            yield
        except (sa.exc.OperationalError, sa.exc.InterfaceError, sa.exc.TimeoutError) as exc:
            path = sqlite_path(self.url)
            if path is not None and not path.exists():
                why = "its file is missing (moved or deleted?); it is used again once it is back"
            else:
                why = _reason(exc)
            raise StoreUnavailable(f"store {redact_url(self.url)!r} is unavailable: {why}") from exc

    def dispose(self) -> None:
        self.engine.dispose()

    def __repr__(self) -> str:
        return f"Store({redact_url(self.url)!r})"


def open_store(url: str | None = None, *, create: bool = False, migrate: bool = True) -> Store:
    """Connect to the existing store at ``url`` (default: SQLite under ``.backout/``).

    Only ``create=True`` (``backout init``, and ``serve`` or ``demo`` when told to) makes a
    new store: otherwise a missing SQLite file, or a PostgreSQL database without backout's
    tables, raises :class:`StoreMissing` naming the path and ``backout init``. ``migrate``
    applies pending migrations to an existing store.
    """
    url = url or os.environ.get("BACKOUT_STORE") or default_url()
    try:
        parsed = make_url(url)
    except Exception as exc:
        raise StoreUnavailable(f"store URL {redact_url(url)!r} is not a URL: {HINT_URLS}") from exc
    shown = redact_url(parsed)
    backend = parsed.get_backend_name()
    if backend not in ("sqlite", "postgresql"):
        raise StoreUnavailable(
            f"store URL {shown!r} names {backend!r}: backout stores on sqlite or postgresql"
        )
    if backend == "postgresql" and parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    path = sqlite_path(parsed)
    if path is not None:
        if create:
            _create_sqlite_file(path)
        elif not path.is_file():
            raise StoreMissing(
                f"no store at {str(path)!r}: create it with `backout init` "
                "(or point --store / BACKOUT_STORE at an existing one)"
            )
    try:
        engine = _engine(parsed, path)
        with engine.connect() as conn:
            exists = sa.inspect(conn).has_table("alembic_version")
    except Exception as exc:
        raise StoreUnavailable(f"cannot open store {shown!r}: {_reason(exc)}") from exc
    store = Store(engine, parsed)
    if not exists and not create:
        store.dispose()
        where = str(path) if path is not None else shown
        raise StoreMissing(
            f"{where!r} is not a backout store (it has no backout tables): create one with "
            "`backout init` (or point --store / BACKOUT_STORE at an existing store)"
        )
    if migrate or not exists:
        with store._translated():
            _migrate(store)
    return store


def sqlite_path(url: URL) -> Path | None:
    """The file of a SQLite store URL, or None (PostgreSQL, in-memory, ``file:`` URIs)."""
    if url.get_backend_name() != "sqlite":
        return None
    database = url.database or ""
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    return Path(database)


def _reason(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip() or type(exc).__name__
    return redaction.redact_text(text.splitlines()[0])


def _create_sqlite_file(path: Path) -> None:
    """Create the store file owner-only (0600), in folders made owner-only (0700).

    Only folders backout creates get 0700; an existing one (a home, /tmp) is left alone.
    SQLite gives its -wal and -shm files the database file's permissions.
    """
    missing = [p for p in (path.parent, *path.parent.parents) if not p.exists()]
    for folder in reversed(missing):
        with contextlib.suppress(FileExistsError):
            folder.mkdir(mode=0o700)
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))


def _engine(url: URL, path: Path | None) -> Engine:
    if url.get_backend_name() == "postgresql":
        query = dict(url.query)
        connect_args: dict[str, Any] = {}
        if "connect_timeout" not in query:
            connect_args["connect_timeout"] = CONNECT_TIMEOUT_S
        # A peer that stops acknowledging (a dead host, a cut link) closes the connection
        # within about ten seconds instead of the kernel's many minutes.
        for key, value in _PG_KEEPALIVE.items():
            if key not in query:
                connect_args[key] = value
        if "options" not in query:
            # The server cancels a statement after this long (SQLSTATE 57014, translated to
            # StoreUnavailable), so a stuck lock or query cannot hang a command or a tick.
            connect_args["options"] = f"-c statement_timeout={STATEMENT_TIMEOUT_S * 1000}"
        return sa.create_engine(
            url, pool_pre_ping=True, pool_size=5, max_overflow=10,
            pool_timeout=POOL_TIMEOUT_S, connect_args=connect_args,
        )  # fmt: skip
    if path is None:
        engine = sa.create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_S})
    else:
        engine = sa.create_engine(url, creator=_sqlite_opener(path))
        sa.event.listen(engine, "connect", _sqlite_remember(path))
        sa.event.listen(engine, "checkout", _sqlite_checkout(path))
    sa.event.listen(engine, "connect", _sqlite_connect)
    sa.event.listen(engine, "begin", _sqlite_begin)
    return engine


def _sqlite_opener(path: Path) -> Any:
    # mode=rw: opening never creates the file, so a store moved away is an error here and
    # not a new, empty store in its place.
    uri = f"file:{quote(str(path.absolute()))}?mode=rw"

    def connect() -> sqlite3.Connection:
        return sqlite3.connect(
            uri, uri=True, timeout=SQLITE_BUSY_TIMEOUT_S, check_same_thread=False
        )

    return connect


def _file_id(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _sqlite_remember(path: Path) -> Any:
    def remember(_dbapi_conn: Any, record: Any) -> None:
        record.info["backout_file"] = _file_id(path)

    return remember


def _sqlite_checkout(path: Path) -> Any:
    # A pooled connection keeps the file it opened even after that file is moved away or
    # replaced; reading through it would serve a store that is no longer at the path (the
    # gateway once stayed on an empty store's generation 0 that way). Each checkout checks
    # that the path still names the connection's file (one stat, about a microsecond) and
    # makes the pool reconnect when it does not.
    def checkout(_dbapi_conn: Any, record: Any, _proxy: Any) -> None:
        now = _file_id(path)
        opened = record.info.get("backout_file")
        if now is None or now != opened:
            raise sa.exc.DisconnectionError(f"store file {str(path)!r} was moved or replaced")

    return checkout


def _sqlite_connect(dbapi_conn: Any, _record: Any) -> None:
    # Let SQLAlchemy's "begin" event issue BEGIN itself (the pysqlite driver otherwise starts
    # transactions lazily and never with IMMEDIATE), then set the pragmas every connection needs.
    dbapi_conn.isolation_level = None
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_S * 1000}")
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
            # A migration may rewrite a large table: it gets longer than one statement of a
            # command, but still a bound (a connection reset ends the session's setting).
            conn.execute(sa.text(f"SET statement_timeout = {MIGRATION_TIMEOUT_S * 1000}"))
            conn.execute(sa.text("SELECT pg_advisory_lock(:k)"), {"k": _PG_WRITE_LOCK + 1})
            conn.commit()
        try:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")
            conn.commit()
        finally:
            if not store.is_sqlite:
                conn.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": _PG_WRITE_LOCK + 1})
                conn.execute(sa.text("RESET statement_timeout"))
                conn.commit()


@contextlib.contextmanager
def _migration_lock(store: Store) -> Iterator[None]:
    # Two processes opening a new SQLite file at once would both try to create the tables.
    database = store.url.database if store.is_sqlite else None
    if not database or database == ":memory:":
        yield
        return
    lock = f"{database}.migrate.lock"
    with os.fdopen(os.open(lock, os.O_CREAT | os.O_WRONLY | os.O_APPEND, 0o600), "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def as_utc(at: datetime) -> datetime:
    """A stored time as an aware UTC datetime (SQLite hands back naive ones; all are UTC)."""
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)
