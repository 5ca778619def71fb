"""``status`` reads a model's whole state in one read transaction of the store."""

from __future__ import annotations

from typing import Any

import pytest

from backout.control.status import model_status
from tests.control.world import NewWorld


def test_status_is_one_read_transaction_on_every_store(new_world: NewWorld) -> None:
    import sqlalchemy as sa

    world = new_world()
    world.controller.deploy("iris", "1.1.0", actor="test")
    world.controller.freeze_by_hand("iris", actor="test", reason="hold")
    begun: list[Any] = []

    def on_begin(conn: Any) -> None:
        begun.append(conn)

    sa.event.listen(world.store.engine, "begin", on_begin)
    try:
        doc = model_status(world.store, world.controller, "iris")
    finally:
        sa.event.remove(world.store.engine, "begin", on_begin)
    assert len(begun) == 1
    assert doc["frozen"] and doc["operation"]["target"] == "1.1.0"
    # A read in the snapshot sees the same state as the rest; writes are not affected.
    with world.store.snapshot() as conn, world.store.read() as inner:
        assert inner is conn
    with pytest.raises(Exception, match="no live traffic"):
        model_status(world.store, world.controller, "nope")
