"""Event storms: one event per incident state change, and drills that see every detection."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from backout.control.detection import CLEARED, NO_TARGET
from backout.control.drills import run_drill
from backout.store import audit
from backout.traffic.faults import parse_fault
from tests.control.world import World, make_world


def no_target_world(tmp_path: Path) -> World:
    """iris@1.0.0 live and the only known-good release: a trigger on it has nowhere to go."""
    return make_world(tmp_path)


def count(world: World, kind: str) -> int:
    return world.event_kinds().count(kind)


def test_a_trigger_with_no_target_writes_one_event_not_one_per_tick(tmp_path: Path) -> None:
    w = no_target_world(tmp_path)
    w.set_health("1.0.0", error_rate=0.5)
    w.run(60)
    assert count(w, NO_TARGET) == 1
    assert not w.controller.frozen("iris")


def test_the_no_target_state_clears_once_and_a_new_firing_is_news(tmp_path: Path) -> None:
    w = no_target_world(tmp_path)
    w.set_health("1.0.0", error_rate=0.5)
    w.run(20)
    w.set_health("1.0.0", error_rate=0.0)
    w.run(30)
    assert count(w, NO_TARGET) == 1 and count(w, CLEARED) == 1
    w.set_health("1.0.0", error_rate=0.5)
    w.run(30)
    assert count(w, NO_TARGET) == 2 and count(w, CLEARED) == 1


def test_a_new_controller_does_not_repeat_an_open_no_target_event(tmp_path: Path) -> None:
    from tests.control.world import restart

    w = no_target_world(tmp_path)
    w.set_health("1.0.0", error_rate=0.5)
    w.run(15)
    restart(w)
    w.run(15)
    assert count(w, NO_TARGET) == 1


def test_the_same_tick_failure_is_recorded_once(tmp_path: Path) -> None:
    w = no_target_world(tmp_path)

    def broken(model: str) -> None:
        raise RuntimeError("the policy table is unreadable")

    w.controller.tick = broken  # type: ignore[assignment,method-assign]
    w.run(20)
    assert count(w, "controller.error") == 1


def test_a_drill_with_no_rollback_target_reports_when_the_trigger_fired(tmp_path: Path) -> None:
    """The trigger fires, nothing can roll back: the drill ends with a detection time."""
    w = no_target_world(tmp_path)
    w.rps = 100
    stop = threading.Event()

    def gateway_and_controller() -> None:
        # Real time here: the drill measures with the wall clock.
        while not stop.is_set():
            w.clock.t = time.time()
            faulted = w.store  # the fault row is what a gateway would apply; apply it here
            with faulted.read() as conn:
                from backout.store import schema

                live = conn.execute(schema.faults.select().where(schema.faults.c.end_at > time.time(),
                                                               schema.faults.c.start_at <= time.time())).first()  # fmt: skip
            w.set_health("1.0.0", error_rate=live.value if live is not None else 0.0)
            w.second()
            time.sleep(0.05)

    thread = threading.Thread(target=gateway_and_controller, daemon=True)
    thread.start()
    try:
        result = run_drill(w.store, w.registry, "iris", parse_fault("errors=50%"), actor="t",
                           timeout=20, poll=0.05)  # fmt: skip
    finally:
        stop.set()
        thread.join(5)
    assert result.outcome == "no-target"
    assert result.time_to_detect is not None and 0 <= result.time_to_detect < 20
    assert result.time_to_recover is None
    with w.store.read() as conn:
        ended = audit.latest(conn, "iris", ["drill.ended"])
    assert ended is not None and "detect -" not in ended.reason
    assert count(w, NO_TARGET) == 1
