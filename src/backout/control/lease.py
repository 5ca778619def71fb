"""The controller lease: one controller acts per store, the others wait to take over.

The lease is a row of the ``leases`` table: its holder, when it expires, and a fencing
token, ``generation``, that grows by one each time the lease passes to another holder.
:func:`acquire` takes or renews it with one conditional ``UPDATE`` (``WHERE holder = me OR
expires_at < now``), so of two controllers racing for an expired lease exactly one wins on
either database. The holder renews it every tick; when it dies, the lease runs out and the
next controller to ask takes it.

Fencing: a controller paused rather than killed (a long GC pause, a stopped VM) can wake
after its lease passed to another and carry on with the tick it was in. :class:`FencedStore`
checks, at the start of every write transaction of the controller's loop, that the stored
generation is still the one that loop acquired, and raises :class:`LeaseLost` otherwise.
Writes are serialised (``BEGIN IMMEDIATE`` on SQLite, an advisory lock on PostgreSQL) and a
takeover is itself a write, so no takeover can commit between the check and the commit of
the write it guards: a deposed leader writes nothing. People's commands (other threads of
the same process included) are never fenced.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from backout.control.operations import Stale
from backout.store import Store, schema

LEASES = schema.leases
CONTROLLER = "controller"  # the name of the controller lease


@dataclass(frozen=True)
class Lease:
    """A lease as stored."""

    name: str
    holder: str
    expires_at: float
    generation: int  # the fencing token: one more each time another holder took it
    acquired_at: float | None  # when the holder took it (None: before it was recorded)

    def live(self, now: float) -> bool:
        """Whether the holder still holds it at ``now`` (else anyone may take it)."""
        return self.expires_at >= now

    def to_dict(self, now: float) -> dict[str, Any]:
        return {
            "holder": self.holder, "generation": self.generation, "live": self.live(now),
            "expires_in_s": round(self.expires_at - now, 3),
            "leading_for_s": None if self.acquired_at is None else round(now - self.acquired_at, 3),
        }  # fmt: skip


@dataclass(frozen=True)
class Held:
    """What a controller holds: its holder id and the generation it acquired."""

    holder: str
    generation: int


class LeaseLost(Stale):
    """The lease passed to another holder: this controller's decision is void and it writes
    nothing until it holds the lease again."""


def read(conn: Connection, name: str = CONTROLLER) -> Lease | None:
    """The lease ``name`` as stored, or None when no controller ever took it."""
    row = conn.execute(sa.select(LEASES).where(LEASES.c.name == name)).first()
    if row is None:
        return None
    return Lease(row.name, row.holder, float(row.expires_at), int(row.generation),
                 None if row.acquired_at is None else float(row.acquired_at))  # fmt: skip


def acquire(conn: Connection, name: str, holder: str, ttl: float, now: float) -> Held | None:
    """Take or renew the lease ``name`` for ``ttl`` seconds, in the caller's write.

    Returns what is held, or None when another holder's lease is still live. Renewing keeps
    the generation; taking it from another holder (or from no one) advances it.
    """
    c = LEASES.c
    taken = c.holder != holder
    written = conn.execute(
        LEASES.update()
        .where(c.name == name, sa.or_(c.holder == holder, c.expires_at < now))
        .values(
            holder=holder,
            expires_at=now + ttl,
            generation=sa.case((taken, c.generation + 1), else_=c.generation),
            acquired_at=sa.case((taken, now), else_=sa.func.coalesce(c.acquired_at, now)),
        )
    ).rowcount
    if written == 0:
        if read(conn, name) is not None:
            return None  # another holder's live lease
        conn.execute(LEASES.insert().values(name=name, holder=holder, expires_at=now + ttl,
                                            generation=1, acquired_at=now))  # fmt: skip
    lease = read(conn, name)
    assert lease is not None and lease.holder == holder
    return Held(holder, lease.generation)


def release(conn: Connection, name: str, held: Held, now: float) -> bool:
    """Give the lease up at once (a clean stop), so another controller need not wait for it
    to run out; False when it was not held any more."""
    c = LEASES.c
    return bool(
        conn.execute(
            LEASES.update()
            .where(c.name == name, c.holder == held.holder, c.generation == held.generation)
            .values(expires_at=now - 0.001)
        ).rowcount
    )


def check(conn: Connection, name: str, held: Held) -> None:
    """Raise :class:`LeaseLost` unless ``held`` is still the stored lease (holder and
    generation); a lease that merely ran out with no one taking it over is still held."""
    lease = read(conn, name)
    if lease is None or (lease.holder, lease.generation) != (held.holder, held.generation):
        raise LeaseLost(0)


def acquire_lease(store: Store, name: str, holder: str, ttl: float, now: float) -> Held | None:
    """Take or renew the lease ``name`` in ``store`` in a write of its own."""
    with store.write() as conn:
        return acquire(conn, name, holder, ttl, now)


def current(store: Store, name: str = CONTROLLER) -> Lease | None:
    """The lease ``name`` as stored now."""
    with store.read() as conn:
        return read(conn, name)


class FencedStore(Store):
    """A store whose writes, from the thread that holds the lease, check it first.

    ``held()`` says what the controller's loop holds (None: not leading, or not running);
    only writes from the thread registered with :meth:`fence_thread` are checked, so a
    person's command through the same controller object is never refused.
    """

    def __init__(self, inner: Store, held: Callable[[], Held | None], name: str = CONTROLLER):
        super().__init__(inner.engine, inner.url)
        self.inner = inner
        self._held = held
        self._name = name
        self._thread: int | None = None

    def fence_thread(self) -> None:
        """Fence the writes of the calling thread (the controller's loop)."""
        self._thread = threading.get_ident()

    def fenced(self) -> Held | None:
        """What the calling thread's writes are fenced by, or None."""
        if self._thread is None or threading.get_ident() != self._thread:
            return None
        return self._held()

    @contextlib.contextmanager
    def read(self) -> Iterator[Connection]:
        with self.inner.read() as conn:
            yield conn

    @contextlib.contextmanager
    def write(self) -> Iterator[Connection]:
        with self.inner.write() as conn:
            held = self.fenced()
            if held is not None:
                check(conn, self._name, held)
            yield conn

    def dispose(self) -> None:
        self.inner.dispose()
