"""A failing telemetry flush loses nothing and says so once (the one-line-per-fault log itself
is tested in tests/store/test_outage.py)."""

from __future__ import annotations

import logging
import time

import pytest
import sqlalchemy as sa

from backout.telemetry.batches import read_batches
from tests.serving.world import World


def test_a_failing_flush_keeps_its_telemetry_and_logs_once(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="backout.gateway")
    with world.store.write() as conn:  # the store loses its telemetry table for a while
        conn.execute(sa.text("ALTER TABLE telemetry RENAME TO telemetry_away"))
    for _ in range(30):
        assert world.predict().status_code == 200
    time.sleep(1.0)  # about five failed flushes
    with world.store.write() as conn:
        conn.execute(sa.text("ALTER TABLE telemetry_away RENAME TO telemetry"))
    deadline = time.monotonic() + 10
    written = 0
    while written < 30:
        assert time.monotonic() < deadline, f"only {written} of 30 requests reached the store"
        time.sleep(0.1)
        written = sum(b.requests for b in read_batches(world.store, "iris").get("1.0.0", []))
    assert written == 30
    flush = [
        (r.levelname, r.getMessage()) for r in caplog.records if "telemetry flush" in r.getMessage()
    ]
    assert len(flush) == 2, flush  # one line when the fault starts, one when it ends
    assert "keeping the telemetry for the next flush" in flush[0][1]
    assert "recovered after" in flush[1][1]
