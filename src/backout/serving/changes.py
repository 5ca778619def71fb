"""How a gateway worker learns that the store's route state changed, and when it may apply it.

Workers look for a new route table every few milliseconds; :class:`ChangeWatch` tells them
when a real read is worth it: on SQLite a ``PRAGMA data_version`` check on a private
connection, on PostgreSQL a LISTEN on ``backout_routes`` (every routes-generation bump
notifies in its transaction, see :func:`backout.store.bump_generation`). On PostgreSQL the
notification usually carries the new live state itself (:mod:`backout.traffic.livestate`):
the worker applies it without reading the store, and reads instead when a notification names
only the generation (the state was too large to send) or cannot be validated. A warm-up
notice names releases to load ahead of the route change that will move traffic to them.

:class:`StateGuard` decides whether a state read from the store may replace the one being
served: never one from a store with another identity (a file replaced behind the worker's
back, an empty store created where the real one was) and never an older generation. A
worker that cannot read the store, or reads a refused state, keeps serving what it has
(fail-static) and takes the store's state again by itself once the real store answers.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import threading
import time
from typing import Any

from backout.errors import StoreUnavailable
from backout.store import ROUTES_CHANNEL, Store, redact_url, sqlite_path
from backout.store.engine import CONNECT_TIMEOUT_S
from backout.traffic.livestate import LiveState, decode, decode_warm

log = logging.getLogger("backout.gateway")


class StateGuard:
    """Remembers which store a worker serves and refuses states that would go backwards.

    The identity is learnt from the first state accepted (a store created before identities
    existed gets one on its next migration, which is then learnt).
    """

    def __init__(self, store: Store) -> None:
        self.store = store
        self.identity: str | None = None

    def check(self, current: LiveState, new: LiveState) -> None:
        """Raise :class:`StoreUnavailable` if ``new`` must not replace ``current``."""
        shown = redact_url(self.store.url)
        if self.identity is not None and new.store_id != self.identity:
            raise StoreUnavailable(
                f"the store at {shown!r} is not the one this worker serves (identity "
                f"{new.store_id or 'none'}, expected {self.identity}): it was replaced or "
                f"recreated; serving generation {current.generation} until the original store "
                "returns (restart the gateway to serve the new store)"
            )
        if new.generation < current.generation:
            raise StoreUnavailable(
                f"the store at {shown!r} went back from routes generation "
                f"{current.generation} to {new.generation} (restored from a backup?); serving "
                f"generation {current.generation} (restart the gateway to serve the older state)"
            )

    def accepted(self, new: LiveState) -> None:
        """Remember the identity of a state that was applied."""
        if new.store_id is not None:
            self.identity = new.store_id


def _listen(store: Store) -> Any:
    """A dedicated autocommit PostgreSQL connection listening for route changes, or None."""
    try:
        import psycopg

        url = store.url.set(drivername="postgresql")
        conn = psycopg.connect(
            url.render_as_string(hide_password=False),
            autocommit=True,
            connect_timeout=int(str(store.url.query.get("connect_timeout", CONNECT_TIMEOUT_S))),
        )
        conn.execute(f"LISTEN {ROUTES_CHANNEL}")
        return conn
    except Exception:  # no listener: the watch answers "maybe" and the poll reads instead
        return None


def _file_id(path: Any) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


class ChangeWatch:
    """A cheap hint that the store may have changed, so the routes generation is read only then.

    Workers check for a new route table every few milliseconds. On a SQLite file store,
    ``PRAGMA data_version`` on a private connection changes whenever any other connection,
    in any process, commits; it costs about 3 µs where a SQLAlchemy read of the generation
    costs about 100 µs, which 200 times a second was several percent of a busy worker's CPU.
    On PostgreSQL the hint is LISTEN/NOTIFY: every routes-generation bump notifies
    ``backout_routes`` in its transaction, delivered on commit. Either way a real read happens
    at least once a second whatever the hint says; then a lost listener is re-established,
    and a private SQLite connection whose file was moved or replaced is reopened on the file
    now at the path (it would otherwise watch the old file forever).
    """

    def __init__(self, store: Store, *, recheck_s: float = 1.0) -> None:
        self._store = store
        self._conn: sqlite3.Connection | None = None
        self._file: tuple[int, int] | None = None
        self._pg: Any = None
        self._last: int | None = None
        self._recheck_s = recheck_s
        self._checked = 0.0
        self._path = sqlite_path(store.url)
        self._relistening = False
        self.hinted: int | None = None  # the newest generation a notification named
        self.pushed: LiveState | None = None  # the state it carried, when it carried one
        self.warm: list[tuple[str, str]] = []  # releases a warm-up notice asked to load
        self._connect()
        if not store.is_sqlite and self._pg is None:
            log.warning("cannot LISTEN for route changes; polling the store until it can")

    def _connect(self) -> None:
        if self._path is not None:
            self._file = _file_id(self._path)
            if self._file is None:
                return
            with contextlib.suppress(sqlite3.Error):
                uri = f"file:{self._path.absolute()}?mode=rw"  # never creates the file
                self._conn = sqlite3.connect(
                    uri, uri=True, isolation_level=None, check_same_thread=False
                )
                self._last = None
        elif not self._store.is_sqlite:
            self._pg = _listen(self._store)

    def _reconnect_if_lost(self) -> None:
        if self._path is not None and _file_id(self._path) != self._file:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
            self._connect()
        elif not self._store.is_sqlite and self._pg is None and not self._relistening:
            # Connecting may take up to the connect timeout: never on the event loop.
            self._relistening = True
            threading.Thread(target=self._relisten, name="backout-relisten", daemon=True).start()

    def _relisten(self) -> None:
        try:
            self._pg = _listen(self._store)
        finally:
            self._relistening = False

    def maybe_changed(self) -> bool:
        """Whether the routes generation may have moved since the last call; when a
        notification said to which generation, :attr:`hinted` holds it (else None), and
        when it also carried the state of that generation, :attr:`pushed` holds it."""
        self.hinted = self.pushed = None
        self.warm = []
        now = time.monotonic()
        recheck = (
            self._conn is None and self._pg is None
        ) or now - self._checked >= self._recheck_s
        if recheck:
            self._checked = now
            self._reconnect_if_lost()
        if self._pg is not None:
            try:
                payloads = [n.payload for n in self._pg.notifies(timeout=0)]
            except Exception:  # a broken listener connection: fall back to reading each time
                self._pg = None
                return True
            routes = []
            for p in payloads:  # a warm-up notice names no generation: a route change follows
                warm = decode_warm(p)
                if warm is None:
                    routes.append(p)
                else:
                    self.warm += warm
            payloads = routes
            if payloads:
                self.hinted, self.pushed = self._newest(payloads)
            if recheck and self.pushed is None:
                self.hinted = None  # the safety net: read the generation
            # A state that came with the recheck is applied as it is (no slow read while a
            # route change waits); the next recheck reads, a second later.
            return recheck or bool(payloads)
        if recheck:
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

    def _newest(self, payloads: list[str]) -> tuple[int | None, LiveState | None]:
        """The newest generation the notifications named, and its state if one carried it.

        Only when every notification is understood can the read be skipped: one that is
        not (malformed, another format) might be the newest change, so the store is read.
        """
        named: list[int] = []
        states: dict[int, LiveState] = {}
        for p in payloads:
            if p.isdigit():  # the generation alone: the state was too large to send
                named.append(int(p))
                continue
            try:
                state = decode(p)
            except ValueError as exc:
                log.warning("a route-change notification could not be used (%s); reading "
                            "the store instead", exc)  # fmt: skip
                return None, None
            named.append(state.generation)
            states[state.generation] = state
        newest = max(named)
        return newest, states.get(newest)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        if self._pg is not None:
            self._pg.close()
            self._pg = None
