"""Controller scenarios: build the world, set up the situation, tick, check phase, weights, events."""

from __future__ import annotations

import random

import psycopg
import pytest

from backout.control.phases import TERMINAL, TRANSITIONS, Phase
from backout.errors import Frozen, OperationInProgress
from backout.store import ROUTES_CHANNEL
from backout.traffic.livestate import decode, decode_warm
from tests.control.world import POLICY, NewWorld, World, restart


def test_first_deploy_makes_the_release_live_and_known_good(world: World) -> None:
    assert world.weights() == {"1.0.0": 100}
    assert world.registry.get("iris@1.0.0").known_good
    assert world.op() is None


def test_a_healthy_candidate_steps_through_and_becomes_known_good(world: World) -> None:
    world.controller.deploy("iris", "1.1.0", actor="ana")
    assert world.weights() == {"1.0.0": 90, "1.1.0": 10}
    assert world.op() is not None and world.op().phase == Phase.ROLLING_OUT  # type: ignore[union-attr]
    world.run_until(lambda: world.weights() == {"1.0.0": 50, "1.1.0": 50})
    world.run_until(lambda: world.op() is None, limit=900)
    assert world.last_op().outcome == "succeeded"
    assert world.weights() == {"1.1.0": 100}
    assert world.registry.get("iris@1.1.0").known_good
    kinds = world.event_kinds()
    assert (
        kinds.index("rollout.started")
        < kinds.index("phase.completing")
        < kinds.index("phase.succeeded")
    )


def test_the_controller_keeps_one_gate_per_operation_and_a_bounded_number(world: World) -> None:
    """A gate holds its window and the baseline's history: one per step ever run would grow
    with every rollout the process lives through."""
    from backout.control import detection

    held = []
    for version in ("1.1.0", "1.2.0", "1.1.0"):
        world.controller.deploy("iris", version, actor="ana")

        def done() -> bool:
            held.append(len(world.controller._gates))
            return world.op() is None

        world.run_until(done, limit=900)
    assert world.event_kinds().count("rollout.started") == 3
    assert max(held) == 1
    # Gates of other operations (other models' steps) are bounded too, oldest dropped.
    gates = world.controller._gates
    for i in range(detection.MAX_GATES):
        gates[(10_000 + i, 0, "rolling_out")] = object()
    world.controller.deploy("iris", "1.2.0", actor="ana")
    world.run_until(lambda: any(k[0] < 10_000 for k in gates), limit=60)
    assert len(gates) == detection.MAX_GATES and (10_000, 0, "rolling_out") not in gates


def test_a_candidate_with_5x_errors_is_caught_and_rolled_back(world: World) -> None:
    world.set_health("1.1.0", error_rate=0.05)
    world.controller.deploy("iris", "1.1.0", actor="ana")
    world.run_until(lambda: world.last_op().kind == "rollback", limit=300)
    rollback = world.last_op()
    assert rollback.target == "1.0.0" and rollback.stable == "1.1.0"
    assert "gate failed" in rollback.reason
    world.run_until(lambda: world.op() is None, limit=300)
    assert world.last_op().outcome == "rolled-back"
    assert world.weights() == {"1.0.0": 100}


def test_an_emergency_rollback_moves_all_traffic_in_one_write(world: World) -> None:
    world.controller.deploy("iris", "1.1.0", actor="ana")
    world.run(3)
    op = world.controller.rollback("iris", actor="oncall", emergency=True, reason="pager")
    assert op.phase == Phase.VERIFYING
    assert world.weights() == {"1.0.0": 100}
    world.run_until(lambda: world.op() is None, limit=120)
    assert world.last_op().outcome == "rolled-back"


def test_a_staged_rollback_steps_back_behind_gates(world: World) -> None:
    world.controller.deploy("iris", "1.1.0", actor="ana")
    world.controller.promote("iris", actor="ana")
    world.run_until(lambda: world.op() is None, limit=120)
    assert world.weights() == {"1.1.0": 100}
    op = world.controller.rollback("iris", actor="oncall", to="1.0.0", reason="drill")
    assert op.phase == Phase.ROLLING_BACK
    assert world.weights() == {"1.1.0": 50, "1.0.0": 50}
    world.run_until(lambda: world.weights() == {"1.0.0": 100}, limit=120)
    world.run_until(lambda: world.op() is None, limit=120)
    assert world.last_op().outcome == "rolled-back"


def test_a_staged_rollback_to_a_worse_target_is_aborted_and_escalated(world: World) -> None:
    world.controller.deploy("iris", "1.1.0", actor="ana")
    world.controller.promote("iris", actor="ana")
    world.run_until(lambda: world.op() is None, limit=120)
    world.set_health("1.0.0", error_rate=0.06)  # the old release degraded since (say, a dependency)
    world.controller.rollback("iris", actor="oncall", to="1.0.0", reason="drill")
    world.run_until(lambda: world.op() is None, limit=300)
    assert world.last_op().outcome == "aborted"
    assert world.weights() == {"1.1.0": 100}
    assert any(n.kind == "escalation" for n in world.notifier.notices)


def test_an_error_trigger_rolls_back_a_live_release_on_its_own(world: World) -> None:
    world.controller.deploy("iris", "1.1.0", actor="ana")
    world.controller.promote("iris", actor="ana")
    world.run_until(lambda: world.op() is None, limit=120)
    world.set_health("1.1.0", error_rate=0.5)
    world.run_until(lambda: world.op() is not None, limit=30)
    op = world.op()
    assert op is not None and op.kind == "rollback" and op.target == "1.0.0"
    assert op.state.trigger is not None
    assert op.state.trigger["triggers"][0]["name"] == "errors"


def test_a_target_that_fails_verification_after_a_trigger_freezes_the_model(world: World) -> None:
    world.controller.deploy("iris", "1.1.0", actor="ana")
    world.controller.promote("iris", actor="ana")
    world.run_until(lambda: world.op() is None, limit=120)
    world.set_health("1.1.0", error_rate=0.5)
    world.set_health("1.0.0", nan_rate=0.02)
    world.controller.rollback("iris", actor="oncall", emergency=True, reason="errors",
                              trigger={"triggers": [{"name": "errors"}]})  # fmt: skip
    world.run_until(lambda: world.op() is not None and world.op().phase == Phase.FROZEN, limit=60)  # type: ignore[union-attr]
    assert world.controller.frozen("iris")
    assert any(n.kind == "freeze" for n in world.notifier.notices)
    with pytest.raises(Frozen, match="unfreeze"):
        world.controller.deploy("iris", "1.2.0", actor="ana")
    frozen_weights = world.weights()
    world.run(5)
    assert world.weights() == frozen_weights  # no flapping while frozen
    world.controller.unfreeze("iris", actor="lead", reason="fixed the feature store")
    assert world.op() is None and not world.controller.frozen("iris")


def test_pause_holds_and_resume_restarts_the_bake(world: World) -> None:
    world.controller.deploy("iris", "1.1.0", actor="ana")
    world.controller.pause("iris", actor="ana")
    world.run(40)
    assert world.weights() == {"1.0.0": 90, "1.1.0": 10}
    world.controller.resume("iris", actor="ana")
    assert world.op().phase == Phase.ROLLING_OUT  # type: ignore[union-attr]
    world.run_until(lambda: world.weights() == {"1.0.0": 50, "1.1.0": 50}, limit=120)


def test_abort_returns_traffic_to_stable(world: World) -> None:
    world.controller.deploy("iris", "1.1.0", actor="ana")
    world.controller.abort("iris", actor="ana", reason="wrong build")
    assert world.weights() == {"1.0.0": 100}
    assert world.last_op().outcome == "aborted"


def test_a_second_rollout_is_refused_while_one_runs(world: World) -> None:
    world.controller.deploy("iris", "1.1.0", actor="ana")
    with pytest.raises(OperationInProgress):
        world.controller.deploy("iris", "1.2.0", actor="bo")


def test_missing_data_asks_a_human_when_the_policy_says_so(new_world: NewWorld) -> None:
    w = new_world(
        POLICY.replace(
            "missing_data_after: 30s", "missing_data_after: 30s\n  on_missing_data: ask"
        ),
    )
    w.controller.deploy("iris", "1.1.0", actor="ana")
    w.rps = 0
    w.run(35)
    assert w.op().phase == Phase.AWAITING_APPROVAL  # type: ignore[union-attr]
    w.controller.resume("iris", actor="ana")
    assert w.op().phase == Phase.ROLLING_OUT  # type: ignore[union-attr]


def test_a_new_controller_resumes_where_the_last_one_stopped(world: World) -> None:
    world.controller.deploy("iris", "1.1.0", actor="ana")
    world.run(5)
    restart(world)
    world.run_until(lambda: world.op() is None, limit=900)
    assert world.last_op().outcome == "succeeded"


def test_tick_reapplies_weights_changed_behind_its_back(world: World) -> None:
    world.controller.deploy("iris", "1.1.0", actor="ana")
    world.deployments.set_traffic("iris", {"1.0.0": 100}, actor="someone")
    world.controller.tick("iris")
    assert world.weights() == {"1.0.0": 90, "1.1.0": 10}


def test_every_transition_in_the_table_is_to_a_known_phase() -> None:
    for (src, event), dest in TRANSITIONS.items():
        assert isinstance(dest, Phase), (src, event)
        assert src is None or src not in TERMINAL, f"{src} is terminal but has a way out"


def test_every_phase_has_a_handler_or_is_terminal_or_held() -> None:
    from backout.control.controller import HANDLERS, HELD

    for phase in Phase:
        assert (phase in HANDLERS) + (phase in TERMINAL) + (phase in HELD) == 1, phase


def test_every_phase_is_reachable_from_no_operation() -> None:
    seen: set[Phase | None] = {None}
    while True:
        more = {to for (src, _), to in TRANSITIONS.items() if src in seen} - seen
        if not more:
            break
        seen |= more
    assert seen - {None} == set(Phase)


def test_random_commands_and_crashes_keep_the_invariants(new_world: NewWorld) -> None:
    """Invariants over random sequences of commands, faults and controller restarts."""
    rng = random.Random(11)
    for _run in range(3):
        w = new_world()
        for _ in range(120):
            action = rng.random()
            try:
                if action < 0.05:
                    w.controller.deploy("iris", rng.choice(["1.1.0", "1.2.0"]), actor="fuzz")
                elif action < 0.08:
                    w.controller.rollback("iris", actor="fuzz", emergency=rng.random() < 0.5)
                elif action < 0.10:
                    w.controller.abort("iris", actor="fuzz")
                elif action < 0.12:
                    w.controller.pause("iris", actor="fuzz")
                elif action < 0.15:
                    w.controller.resume("iris", actor="fuzz")
                elif action < 0.18:
                    restart(w)
                elif action < 0.22:
                    v = rng.choice(["1.0.0", "1.1.0", "1.2.0"])
                    w.set_health(
                        v, error_rate=rng.choice([0.01, 0.3]), nan_rate=rng.choice([0.0, 0.0, 0.01])
                    )
                elif action < 0.24 and w.controller.frozen("iris"):
                    w.controller.unfreeze("iris", actor="fuzz", reason="fuzz")
            except Exception as exc:  # refused commands are fine; they must be BackoutErrors
                from backout.errors import BackoutError

                assert isinstance(exc, BackoutError), exc
            w.second()
            w.check_invariants()


def test_a_much_slower_candidate_never_gets_past_its_first_step(world: World) -> None:
    """Its estimate leans towards a regression, so the step holds until the test proves it."""
    world.set_health("1.1.0", latency_ms=60.0)
    world.controller.deploy("iris", "1.1.0", actor="ana")
    seen = set()

    def rolled_back() -> bool:
        seen.add(world.weights().get("1.1.0", 0.0))
        return world.last_op().kind == "rollback"

    world.run_until(rolled_back, limit=200)
    assert max(seen) == 10
    assert "mean latency" in world.last_op().reason


def test_a_rollout_under_the_default_policy_ticks_without_errors(new_world: NewWorld) -> None:
    """The default error-rate trigger has no fixed limit (use_judge only): it must not crash."""
    w = new_world("{}")
    w.controller.deploy("iris", "1.1.0", actor="ana")
    w.run(5)
    assert "controller.error" not in w.event_kinds()
    assert w.op() is not None and w.op().phase == Phase.ROLLING_OUT  # type: ignore[union-attr]


def test_a_controller_whose_lease_was_taken_over_writes_nothing(world: World) -> None:
    """Fencing: a controller that wakes after another took its lease must not act."""
    from backout.control.lease import CONTROLLER, acquire_lease

    world.controller.deploy("iris", "1.1.0", actor="ana")
    old = acquire_lease(world.store, CONTROLLER, "old", 5.0, world.clock())
    world.controller.lead(old)
    world.clock.t += 10  # the old holder stalls past its lease; another takes over
    new = acquire_lease(world.store, CONTROLLER, "new", 5.0, world.clock())
    assert old is not None and new is not None and new.generation == old.generation + 1
    world.set_health("1.1.0", error_rate=0.5)
    before = world.event_kinds()
    world.run(30)  # the stalled controller wakes and ticks: every write is refused
    assert world.event_kinds() == before
    world.controller.lead(new)
    world.run_until(lambda: world.last_op().kind == "rollback", limit=60)


@pytest.mark.databases("postgresql")
def test_a_deploy_has_the_replicas_warm_its_release_before_traffic_moves(world: World) -> None:
    url = world.store.url.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"LISTEN {ROUTES_CHANNEL}")
        world.controller.deploy("iris", "1.1.0", actor="test")
        first, second = [n.payload for n in conn.notifies(timeout=2, stop_after=2)]
    assert decode_warm(first) == [("iris", "1.1.0")]  # before the write that moves traffic
    assert "1.1.0" in decode(second).tables["iris"].weights
