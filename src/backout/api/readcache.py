"""Cheap reads for the control API: what a read already computed, kept while it still holds.

For :mod:`backout.api.auth` and the reading routes. Every change of the store a person can
see — a decision, a pause, a freeze, traffic, a mark, a policy, a token created or revoked —
appends an audit event in the same transaction, so the newest event's ``seq`` is the store's
*generation*: an entry made at one generation is right until the generation moves. Each
entry also has a short time to live, for what changes without an event (telemetry arriving
about once a second, a gate's latest verdict, the leader's lease being renewed).

:func:`generation` reads the generation once per request (one indexed ``max`` in its own
short read transaction) and keeps it on ``request.state``; :class:`ReadCache` holds entries.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

import sqlalchemy as sa
from fastapi import Request
from fastapi.concurrency import run_in_threadpool

from backout.store import Store, schema

__all__ = ["ReadCache", "cached", "generation", "generation_of", "store_generation"]

V = TypeVar("V")


def store_generation(store: Store) -> int:
    """The ``seq`` of the newest audit event (0 for an empty log)."""
    with store.read() as conn:
        return int(conn.execute(sa.select(sa.func.max(schema.events.c.seq))).scalar() or 0)


def generation(request: Request, store: Store) -> int:
    """The store's generation as this request first saw it (read once per request)."""
    held = getattr(request.state, "backout_generation", None)
    if isinstance(held, int):
        return held
    gen = store_generation(store)
    request.state.backout_generation = gen
    return gen


async def generation_of(request: Request, store: Store) -> int:
    """:func:`generation` for an async route: the request's, or read in a worker thread."""
    held = getattr(request.state, "backout_generation", None)
    if isinstance(held, int):
        return held
    gen: int = await run_in_threadpool(generation, request, store)
    return gen


async def cached(request: Request, store: Store, cache: ReadCache[V], key: Hashable,
                 compute: Callable[[], V], *, stale_s: float = 3.0) -> V:  # fmt: skip
    """``compute()``'s value for ``key``, from ``cache`` while it holds. Past its time to
    live, one request computes it again (in a worker thread) while the others, for
    ``stale_s`` seconds more, answer with the one there is — never across a change of the
    store's generation."""
    gen = await generation_of(request, store)
    hit = cache.get(key, gen)
    if hit is not None:
        return hit
    if not cache.claim(key):
        old = cache.stale(key, gen, stale_s)
        if old is not None:
            return old
        value: V = await run_in_threadpool(compute)
        return value
    try:
        value = await run_in_threadpool(compute)
        return cache.put(key, gen, value)
    finally:
        cache.release(key)


class ReadCache(Generic[V]):
    """Values by key, each valid at the generation it was made at and for ``ttl`` seconds.

    Bounded (the least recently used entries go first) and safe to share between the
    threads that answer requests. :meth:`claim` lets one request refresh an entry while
    the others answer with :meth:`stale` (same generation, a little older), so that many
    readers of one view never compute it all at once on a busy host."""

    def __init__(self, ttl: float, size: int = 1024, clock: Callable[[], float] = time.monotonic):
        self.ttl = ttl
        self.size = size
        self.clock = clock
        self._items: OrderedDict[Hashable, tuple[int, float, V]] = OrderedDict()
        self._refreshing: set[Hashable] = set()
        self._lock = threading.Lock()

    def get(self, key: Hashable, gen: int) -> V | None:
        """The value for ``key`` if it was made at ``gen`` within the last ``ttl`` seconds."""
        with self._lock:
            held = self._items.get(key)
            if held is None:
                return None
            made_gen, made_at, value = held
            if made_gen != gen:  # the store moved on: never again
                del self._items[key]
                return None
            if self.clock() - made_at > self.ttl:  # kept for stale() while one refreshes
                return None
            self._items.move_to_end(key)
            return value

    def stale(self, key: Hashable, gen: int, max_age: float) -> V | None:
        """The value for ``key`` made at ``gen`` within ``max_age`` seconds, even past its
        time to live (for an answer while one refresh runs), else None."""
        with self._lock:
            held = self._items.get(key)
            if held is None or held[0] != gen or self.clock() - held[1] > max_age:
                return None
            return held[2]

    def claim(self, key: Hashable) -> bool:
        """Whether the caller is the one to refresh ``key`` (False: a refresh runs already);
        the claim ends with :meth:`release`."""
        with self._lock:
            if key in self._refreshing:
                return False
            self._refreshing.add(key)
            return True

    def release(self, key: Hashable) -> None:
        with self._lock:
            self._refreshing.discard(key)

    def put(self, key: Hashable, gen: int, value: V) -> V:
        with self._lock:
            self._items[key] = (gen, self.clock(), value)
            self._items.move_to_end(key)
            while len(self._items) > self.size:
                self._items.popitem(last=False)
        return value

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
