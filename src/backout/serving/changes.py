"""How a gateway worker learns, cheaply, that the store's route state may have changed.

Workers look for a new route table every few milliseconds; :class:`ChangeWatch` tells them
when a real read is worth it: on SQLite a ``PRAGMA data_version`` check on a private
connection, on PostgreSQL a LISTEN on ``backout_routes`` (every routes-generation bump
notifies in its transaction, see :func:`backout.store.bump_generation`).
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import time
from typing import Any

from backout.store import Store

log = logging.getLogger("backout.gateway")

ROUTES_CHANNEL = "backout_routes"


def _listen(store: Store) -> Any:
    """A dedicated autocommit PostgreSQL connection listening for route changes, or None."""
    try:
        import psycopg

        url = store.url.set(drivername="postgresql")
        conn = psycopg.connect(url.render_as_string(hide_password=False), autocommit=True)
        conn.execute(f"LISTEN {ROUTES_CHANNEL}")
        return conn
    except Exception:  # no listener: the watch answers "maybe" and the poll reads instead
        log.warning("cannot LISTEN for route changes; polling the store instead")
        return None


class ChangeWatch:
    """A cheap hint that the store may have changed, so the routes generation is read only then.

    Workers check for a new route table every few milliseconds. On a SQLite file store,
    ``PRAGMA data_version`` on a private connection changes whenever any other connection,
    in any process, commits; it costs about 3 µs where a SQLAlchemy read of the generation
    costs about 100 µs, which 200 times a second was several percent of a busy worker's CPU.
    On PostgreSQL the hint is LISTEN/NOTIFY: every routes-generation bump notifies
    ``backout_routes`` in its transaction, delivered on commit. Either way a real read happens
    at least once a second whatever the hint says.
    """

    def __init__(self, store: Store, *, recheck_s: float = 1.0) -> None:
        self._conn: sqlite3.Connection | None = None
        self._pg: Any = None
        self._last: int | None = None
        self._recheck_s = recheck_s
        self._checked = 0.0
        database = store.url.database or ""
        if (
            store.is_sqlite
            and database
            and database != ":memory:"
            and not database.startswith("file:")
        ):
            with contextlib.suppress(sqlite3.Error):
                self._conn = sqlite3.connect(
                    database, isolation_level=None, check_same_thread=False
                )
        elif not store.is_sqlite:
            self._pg = _listen(store)

    def maybe_changed(self) -> bool:
        now = time.monotonic()
        if (self._conn is None and self._pg is None) or now - self._checked >= self._recheck_s:
            self._checked = now
            return True
        if self._pg is not None:
            try:
                return any(True for _ in self._pg.notifies(timeout=0))
            except Exception:  # a broken listener connection: fall back to reading each time
                self._pg = None
                return True
        if self._conn is None:
            return True
        try:
            version = self._conn.execute("PRAGMA data_version").fetchone()[0]
        except sqlite3.Error:
            return True
        if version == self._last:
            return False
        self._last = version
        return True

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        if self._pg is not None:
            self._pg.close()
            self._pg = None
