"""Controller scenarios at its seams: the router it moves traffic through, the telemetry it
reads, the clock it shares with the registry, and the commands that used to live elsewhere."""

from __future__ import annotations

from collections.abc import Mapping

import pytest

from backout.control.controller import Controller
from backout.control.phases import Phase
from backout.control.policy import parse_policy
from backout.errors import InvalidTraffic, OperationInProgress, RouterError, UnsupportedByRouter
from backout.traffic.router import Capability, GatewayRouter
from backout.traffic.routes import RouteTable
from tests.control.world import POLICY, NewWorld, World

NO_CAPTURE = "capture: {rate: 0}\nreplay: {allowed: false}\n"


class WeightsOnlyRouter:
    """An external router that splits by weight only and can be made unreachable."""

    name = "weights-only"
    capabilities: frozenset[Capability] = frozenset()

    def __init__(self, world: World) -> None:
        self.inner = GatewayRouter(world.deployments)
        self.serving: dict[str, dict[str, float]] = {}
        self.down = False
        self.applied = 0

    def apply(self, table: RouteTable) -> None:
        if self.down:
            raise RouterError("router at 127.0.0.1:1 refused the connection")
        self.applied += 1
        self.serving[table.model] = {v: w / 100 for v, w in table.weights.items()}

    def served(self, model: str) -> Mapping[str, float] | None:
        if self.down:
            raise RouterError("router at 127.0.0.1:1 refused the connection")
        return self.serving.get(model)


def _on_router(w: World, router: WeightsOnlyRouter) -> None:
    w.controller = Controller(
        w.store, w.registry, notifier=w.notifier, clock=w.clock, router=router, prober=w.prober
    )


def test_a_policy_that_needs_capture_is_refused_on_a_router_without_it(world: World) -> None:
    w = world
    router = WeightsOnlyRouter(w)
    _on_router(w, router)
    with pytest.raises(UnsupportedByRouter) as caught:
        w.controller.deploy("iris", "1.1.0", actor="ana")
    message = caught.value.message
    assert (
        "weights-only router" in message
        and "capture.rate: 0.01 needs the capture capability" in message
    )
    assert "\n" not in message
    assert w.op() is None and w.weights() == {"1.0.0": 100}  # nothing moved


def test_a_rollout_moves_only_as_far_as_the_router_confirms(new_world: NewWorld) -> None:
    w = new_world(POLICY + NO_CAPTURE)
    router = WeightsOnlyRouter(w)
    _on_router(w, router)
    w.controller.deploy("iris", "1.1.0", actor="ana")
    assert router.serving["iris"] == {"1.0.0": 90, "1.1.0": 10}  # pushed after the commit
    router.down = True
    w.run(60)  # well past the bake: the step would have moved on
    op = w.op()
    assert op is not None and op.phase == Phase.ROLLING_OUT and op.step == 0
    router.down = False
    w.run_until(lambda: w.weights() == {"1.0.0": 50, "1.1.0": 50}, limit=60)
    w.run(1)
    assert router.serving["iris"] == {"1.0.0": 50, "1.1.0": 50}


def test_the_rollback_window_skips_gates_for_a_recently_known_good_target(
    new_world: NewWorld,
) -> None:
    """Marks are taken on the controller's clock, so the window is measured on one clock."""
    policy = POLICY.replace("mode: staged", "mode: staged\n  window: 120s")
    w = new_world(policy)  # 1.0.0 became known-good at the first deploy, now
    w.controller.deploy("iris", "1.1.0", actor="ana")
    w.controller.promote("iris", actor="ana")  # 1.1.0 takes all traffic
    w.run(5)
    op = w.controller.rollback("iris", actor="oncall", reason="inside the window")
    assert op.phase == Phase.VERIFYING and op.state.skip_gates
    assert w.weights() == {"1.0.0": 100}


def test_outside_the_rollback_window_a_staged_rollback_takes_its_steps(
    new_world: NewWorld,
) -> None:
    policy = POLICY.replace("mode: staged", "mode: staged\n  window: 120s")
    w = new_world(policy)
    w.clock.t += 121  # the mark is now older than the window
    w.controller.deploy("iris", "1.1.0", actor="ana")
    w.controller.promote("iris", actor="ana")
    w.run(5)
    op = w.controller.rollback("iris", actor="oncall", reason="outside the window")
    assert op.phase == Phase.ROLLING_BACK and not op.state.skip_gates
    assert w.weights() == {"1.0.0": 50, "1.1.0": 50}


def test_traffic_set_by_hand_is_refused_while_an_operation_runs(world: World) -> None:
    world.controller.deploy("iris", "1.1.0", actor="ana")
    with pytest.raises(OperationInProgress, match="pass --force"):
        world.controller.set_traffic("iris", {"1.0.0": 100}, actor="bo")
    assert world.weights() == {"1.0.0": 90, "1.1.0": 10}


def test_forced_traffic_pauses_the_operation_in_the_same_write(world: World) -> None:
    world.controller.deploy("iris", "1.1.0", actor="ana")
    table = world.controller.set_traffic("iris", {"1.0.0": 100}, actor="bo", force=True)
    op = world.op()
    assert op is not None and op.phase == Phase.PAUSED and op.state.forced
    assert op.state.paused_from == Phase.ROLLING_OUT
    assert world.weights() == {"1.0.0": 100} == {v: w / 100 for v, w in table.weights.items()}
    world.run(30)  # a paused operation does not fight the change
    assert world.weights() == {"1.0.0": 100}


def test_bad_forced_traffic_is_refused_before_anything_is_paused(world: World) -> None:
    world.controller.deploy("iris", "1.1.0", actor="ana")
    with pytest.raises(InvalidTraffic):
        world.controller.set_traffic("iris", {"1.0.0": 60}, actor="bo", force=True)
    op = world.op()
    assert op is not None and op.phase == Phase.ROLLING_OUT


def test_a_trigger_still_rolls_back_a_rollout_awaiting_a_decision(new_world: NewWorld) -> None:
    w = new_world(
        POLICY.replace(
            "missing_data_after: 30s", "missing_data_after: 30s\n  on_missing_data: ask"
        ),
    )
    w.controller.deploy("iris", "1.1.0", actor="ana")
    w.rps = 0
    w.run(35)
    assert w.op().phase == Phase.AWAITING_APPROVAL  # type: ignore[union-attr]
    w.rps = 200
    w.set_health("1.1.0", error_rate=0.6)  # the candidate's 10% now fails badly
    w.run_until(lambda: w.last_op().kind == "rollback", limit=60)
    assert "trigger" in w.last_op().reason


def test_the_policy_check_knows_each_router_s_capabilities() -> None:
    from backout.control import capabilities
    from backout.traffic.router import ROUTER_CAPABILITIES

    policy = parse_policy("rollout: {steps: [10, 100]}\n")
    assert capabilities.missing(policy, ROUTER_CAPABILITIES["gateway"]) == []
    assert capabilities.missing(policy, ROUTER_CAPABILITIES["weights-only"]) == [
        "capture.rate: 0.01 needs the capture capability",
        "replay.allowed: true needs the capture capability",
    ]
