"""One log line per fault, not per attempt; and a failing telemetry flush loses nothing."""

from __future__ import annotations

import logging
import time

import pytest
import sqlalchemy as sa

from backout.errors import StoreUnavailable
from backout.serving.faultlog import FaultLog
from backout.telemetry.batches import read_batches
from tests.serving.world import World

log = logging.getLogger("test.faults")


def test_a_fault_is_logged_when_it_starts_changes_and_ends(
    caplog: pytest.LogCaptureFixture,
) -> None:
    faults = FaultLog(log, "route refresh")
    for _ in range(50):
        faults.failed(
            StoreUnavailable("the store at sqlite:///x is unavailable"), "serving generation 7"
        )
    faults.failed(ValueError("a bug"))
    faults.failed(ValueError("a bug, again"))
    faults.ok()
    faults.ok()
    records = [(r.levelname, r.getMessage(), r.exc_info is not None) for r in caplog.records]
    assert records == [
        ("ERROR", "route refresh failed: the store at sqlite:///x is unavailable; serving "
                  "generation 7", False),
        ("ERROR", "route refresh still failing, now: ValueError: a bug", True),
        ("WARNING", records[2][1], False),
    ]  # fmt: skip
    assert records[2][1].startswith("route refresh works again after ")
    assert records[2][1].endswith(" s and 52 failed attempts")
    assert not faults.failing and faults.failures == 0


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
    assert [level for level, _ in flush] == ["ERROR", "WARNING"], flush
    assert flush[0][1].endswith("; keeping the telemetry for the next flush")
