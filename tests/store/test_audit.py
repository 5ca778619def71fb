"""The hash-chained event log detects edited, removed and reordered events."""

from __future__ import annotations

import sqlalchemy as sa

from backout.store import Store, audit, schema


def _append(store: Store, n: int) -> None:
    for i in range(n):
        with store.write() as conn:
            audit.append(conn, "test.event", model="fraud", actor="ana", reason=f"step {i}",
                         data={"i": i})  # fmt: skip


def _problems(store: Store) -> list[str]:
    with store.read() as conn:
        return [p.problem for p in audit.verify_chain(conn)]


def test_an_intact_chain_verifies(store: Store) -> None:
    _append(store, 5)
    assert _problems(store) == []
    with store.read() as conn:
        events = audit.list_events(conn, "fraud")
    assert [e.seq for e in events] == [1, 2, 3, 4, 5]
    assert events[1].prev_hash == events[0].hash


def test_an_edited_event_is_detected(store: Store) -> None:
    _append(store, 3)
    with store.engine.begin() as conn:
        conn.execute(schema.events.update().where(schema.events.c.seq == 2).values(reason="edited"))
    assert any("changed" in p for p in _problems(store))


def test_edited_data_is_detected(store: Store) -> None:
    _append(store, 3)
    with store.engine.begin() as conn:
        conn.execute(schema.events.update().where(schema.events.c.seq == 1).values(data={"i": 9}))
    assert any("changed" in p for p in _problems(store))


def test_a_removed_event_is_detected(store: Store) -> None:
    _append(store, 4)
    with store.engine.begin() as conn:
        conn.execute(schema.events.delete().where(schema.events.c.seq == 2))
    problems = _problems(store)
    assert any("missing" in p for p in problems)


def test_removing_the_newest_event_is_detected(store: Store) -> None:
    _append(store, 3)
    with store.engine.begin() as conn:
        conn.execute(schema.events.delete().where(schema.events.c.seq == 3))
    assert any("newest events were removed" in p for p in _problems(store))


def test_reordered_events_are_detected(store: Store) -> None:
    _append(store, 3)
    e = schema.events
    with store.engine.begin() as conn:
        rows = {r.seq: r for r in conn.execute(sa.select(e))}
        # Swap the contents of events 1 and 2, keeping their sequence numbers.
        for seq, src in ((1, rows[2]), (2, rows[1])):
            conn.execute(
                e.update().where(e.c.seq == seq).values(
                    at=src.at, kind=src.kind, actor=src.actor, reason=src.reason,
                    data=src.data, prev_hash=src.prev_hash, hash=src.hash,
                )
            )  # fmt: skip
    assert _problems(store)
