"""The controller lease on each database: taking, renewing, expiry, takeover, and fencing
(a deposed leader's writes are refused and leave nothing behind)."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import sqlalchemy as sa

from backout.control.lease import (
    CONTROLLER,
    FencedStore,
    Held,
    LeaseLost,
    acquire_lease,
    current,
    release,
)
from backout.store import Store, schema

T0 = 1_800_000_000.0


def _events(store: Store) -> int:
    with store.read() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(schema.freezes)).scalar())


def _write(store: Store, model: str) -> None:
    with store.write() as conn:
        conn.execute(schema.freezes.insert().values(model=model, reason="t", at=T0))


def test_renewal_keeps_the_generation_and_a_takeover_advances_it(store: Store) -> None:
    a = acquire_lease(store, CONTROLLER, "a", 5.0, T0)
    assert a == Held("a", 1)
    assert acquire_lease(store, CONTROLLER, "a", 5.0, T0 + 4) == a  # renewed
    assert acquire_lease(store, CONTROLLER, "b", 5.0, T0 + 8) is None  # a's lease is live
    b = acquire_lease(store, CONTROLLER, "b", 5.0, T0 + 9.5)  # a's ran out at T0 + 9
    assert b == Held("b", 2)
    assert acquire_lease(store, CONTROLLER, "a", 5.0, T0 + 10) is None  # a woke: too late
    lease = current(store)
    assert lease is not None and (lease.holder, lease.generation) == ("b", 2)
    assert lease.acquired_at == T0 + 9.5 and lease.expires_at == T0 + 14.5
    assert acquire_lease(store, CONTROLLER, "a", 5.0, T0 + 15) == Held("a", 3)


def test_a_lease_that_ran_out_with_no_one_taking_it_is_renewed_as_it_was(store: Store) -> None:
    a = acquire_lease(store, CONTROLLER, "a", 1.0, T0)
    assert acquire_lease(store, CONTROLLER, "a", 1.0, T0 + 60) == a


def test_of_many_controllers_racing_for_an_expired_lease_exactly_one_wins(store: Store) -> None:
    for round_ in range(10):
        now = T0 + 100 * round_
        with ThreadPoolExecutor(4) as pool:
            got = list(
                pool.map(lambda h, t=now: acquire_lease(store, CONTROLLER, h, 5.0, t), "abcd")
            )
        winners = [g for g in got if g is not None]
        assert len(winners) == 1, got
        assert winners[0].generation == (current(store) or pytest.fail()).generation


def test_a_released_lease_is_taken_at_once(store: Store) -> None:
    a = acquire_lease(store, CONTROLLER, "a", 30.0, T0)
    assert a is not None
    with store.write() as conn:
        assert release(conn, CONTROLLER, a, T0 + 1)
    assert acquire_lease(store, CONTROLLER, "b", 30.0, T0 + 1) == Held("b", 2)
    with store.write() as conn:
        assert not release(conn, CONTROLLER, a, T0 + 2)  # not a's to give up any more


def test_a_deposed_leader_writes_nothing_and_people_are_never_fenced(store: Store) -> None:
    held: list[Held | None] = [acquire_lease(store, CONTROLLER, "a", 5.0, T0)]
    fenced = FencedStore(store, lambda: held[0])
    fenced.fence_thread()
    _write(fenced, "m1")  # a leads: its writes go through
    assert acquire_lease(store, CONTROLLER, "b", 5.0, T0 + 6) == Held("b", 2)
    with pytest.raises(LeaseLost):
        _write(fenced, "m2")  # a was paused past its lease and woke: refused
    assert _events(store) == 1
    other = threading.Thread(target=_write, args=(fenced, "m3"))  # a person's command
    other.start()
    other.join()
    assert _events(store) == 2
    held[0] = None  # not leading: the loop writes nothing, and nothing is checked
    _write(fenced, "m4")
    assert _events(store) == 3
