"""Decisions that stay made: releases rolled back from are marked bad, and stay out of the way."""

from __future__ import annotations

import re

import pytest

from backout.errors import Conflict, ModelNotFound, ReleaseMarkedBad, ValidationError
from backout.store import audit
from tests.control.world import POLICY, NewWorld, World


def events(world: World, kind: str) -> list[audit.Event]:
    with world.store.read() as conn:
        return [e for e in audit.list_events(conn, "iris") if e.kind == kind]


def complete(world: World, version: str) -> None:
    """Roll ``version`` out at once and let it complete (it becomes known-good)."""
    world.controller.deploy("iris", version, actor="ana")
    world.controller.promote("iris", actor="ana")
    world.run_until(lambda: world.op() is None, limit=120)
    assert world.registry.get(f"iris@{version}").known_good


def test_a_release_whose_gate_failed_is_marked_bad_with_the_evidence_and_the_operation(
    world: World,
) -> None:
    world.set_health("1.1.0", error_rate=0.05)
    world.controller.deploy("iris", "1.1.0", actor="ana")
    world.run_until(lambda: world.last_op().kind == "rollback", limit=300)
    rollback = world.last_op()
    bad = world.registry.get("iris@1.1.0").bad
    assert bad is not None and bad.operation == rollback.id and bad.actor == "controller"
    assert re.match(r"gate failed at step \d: error rate ", bad.evidence)
    # The failing judgement's one line, with the releases named.
    assert " on 1.1.0 vs " in bad.evidence and " on 1.0.0: " in bad.evidence
    assert "at least ×" in bad.evidence and " requests: fail" in bad.evidence
    (marked,) = events(world, "release.marked-bad")
    assert marked.data["operation"] == rollback.id and marked.data["source"] == "gate"
    (started,) = events(world, "rollback.started")
    assert started.data["marked_bad"] == "1.1.0"
    assert marked.seq > started.seq  # written in the rollback's own write, after its start
    assert world.registry.get("iris@1.0.0").bad is None


def _all(world: World) -> list[audit.Event]:
    with world.store.read() as conn:
        return audit.list_events(conn, "iris")


def test_a_trigger_on_the_live_release_marks_it_bad_and_no_longer_known_good(
    world: World,
) -> None:
    complete(world, "1.1.0")
    world.set_health("1.1.0", error_rate=0.5)
    world.run_until(lambda: world.op() is not None, limit=30)
    op = world.op()
    assert op is not None and op.target == "1.0.0"
    rel = world.registry.get("iris@1.1.0")
    assert rel.bad is not None and rel.bad.evidence.startswith("trigger: ")
    assert rel.bad.operation == op.id and not rel.known_good
    assert events(world, "release.marked-bad")[0].data["source"] == "trigger"


def test_an_aborted_rollback_marks_its_target_bad(world: World) -> None:
    complete(world, "1.1.0")
    world.set_health("1.0.0", error_rate=0.06)
    world.controller.rollback("iris", actor="oncall", to="1.0.0", reason="drill")
    world.run_until(lambda: world.op() is None, limit=300)
    assert world.last_op().outcome == "aborted"
    bad = world.registry.get("iris@1.0.0").bad
    assert bad is not None and bad.evidence.startswith("rollback aborted: ")
    assert bad.operation == world.last_op().id
    assert world.registry.get("iris@1.1.0").bad is None  # a rollback by hand marks nothing


def test_no_rollback_targets_a_bad_release_found_named_or_in_the_policy(
    new_world: NewWorld,
) -> None:
    world = new_world()
    complete(world, "1.1.0")  # 1.0.0 and 1.1.0 known-good, 1.1.0 live
    world.registry.mark_bad("iris@1.0.0", actor="ana", reason="leaks memory")
    with pytest.raises(ModelNotFound, match="no known-good release"):
        world.controller.rollback("iris", actor="oncall")  # last-known-good skips it
    with pytest.raises(ReleaseMarkedBad, match=r"iris@1\.0\.0 is marked bad .*clear-bad"):
        world.controller.rollback("iris", actor="oncall", to="1.0.0", emergency=True)
    world.registry.quarantine("iris@1.2.0", actor="ana", reason="license")
    with pytest.raises(ValidationError, match=r"iris@1\.2\.0 is quarantined \(license\)"):
        world.controller.rollback("iris", actor="oncall", to="1.2.0")
    named = new_world(POLICY.replace("  mode: staged\n", "  mode: staged\n  target: 1.0.0\n"))
    complete(named, "1.1.0")
    named.registry.mark_bad("iris@1.0.0", actor="ana", reason="leaks memory")
    with pytest.raises(ReleaseMarkedBad, match="leaks memory"):
        named.controller.rollback("iris", actor="oncall")
    assert named.op() is None and named.weights() == {"1.1.0": 100}


def test_the_known_good_release_with_most_traffic_is_skipped_when_bad(world: World) -> None:
    complete(world, "1.1.0")
    world.controller.set_traffic("iris", {"1.0.0": 60, "1.1.0": 40}, actor="ana")
    world.registry.mark_bad("iris@1.0.0", actor="ana", reason="wrong labels")
    op = world.controller.rollback("iris", actor="oncall", emergency=True)
    assert (op.target, op.stable) == ("1.1.0", "1.0.0")


def test_a_stable_release_marked_bad_mid_rollout_is_no_way_back(world: World) -> None:
    complete(world, "1.1.0")  # 1.0.0 stays known-good
    world.set_health("1.2.0", error_rate=0.05)
    world.controller.deploy("iris", "1.2.0", actor="ana")
    world.registry.mark_bad("iris@1.1.0", actor="ana", reason="bad feature export")
    world.run_until(lambda: world.last_op().kind == "rollback", limit=300)
    assert world.last_op().target == "1.0.0"
    assert world.registry.get("iris@1.2.0").bad is not None


def test_deploying_a_bad_release_is_refused_unless_overridden_with_a_reason(
    world: World,
) -> None:
    world.registry.mark_bad("iris@1.1.0", actor="bo", reason="wrong labels")
    before = len(_all(world))
    with pytest.raises(ReleaseMarkedBad) as refused:
        world.controller.deploy("iris", "1.1.0", actor="ana")
    message = refused.value.message
    assert "\n" not in message and "wrong labels" in message and "by bo" in message
    assert "--override-bad --reason TEXT" in message
    with pytest.raises(ReleaseMarkedBad, match="without a reason"):
        world.controller.deploy("iris", "1.1.0", actor="ana", override_bad=True)
    assert len(_all(world)) == before and world.op() is None  # refusals change nothing
    op = world.controller.deploy(
        "iris", "1.1.0", actor="ana", override_bad=True, reason="labels fixed upstream"
    )
    (override,) = events(world, "release.bad-overridden")
    assert override.actor == "ana" and "labels fixed upstream" in override.reason
    assert override.data["operation"] == op.id and override.data["bad"]["actor"] == "bo"
    assert world.registry.get("iris@1.1.0").bad is not None  # until it proves itself
    world.controller.promote("iris", actor="ana")
    world.run_until(lambda: world.op() is None, limit=120)
    rel = world.registry.get("iris@1.1.0")
    assert rel.bad is None and rel.known_good
    assert events(world, "release.bad-cleared")[0].reason.startswith("marked known-good")


def test_marks_by_hand_are_audited_and_need_a_reason(world: World) -> None:
    with pytest.raises(ValidationError, match="needs a reason"):
        world.registry.mark_bad("iris@1.2.0", actor="ana", reason=" ")
    rel = world.registry.mark_bad("iris@1.2.0", actor="ana", reason="OOM on load")
    assert rel.bad is not None and rel.bad.operation is None and rel.bad.actor == "ana"
    with pytest.raises(ValidationError, match="clear-bad"):
        world.registry.mark_good("iris@1.2.0", actor="ana")
    with pytest.raises(ValidationError, match="needs a reason"):
        world.registry.clear_bad("iris@1.2.0", actor="bo", reason="")
    assert world.registry.clear_bad("iris@1.2.0", actor="bo", reason="fixed").bad is None
    with pytest.raises(Conflict, match="not marked bad"):
        world.registry.clear_bad("iris@1.2.0", actor="bo", reason="again")
    (marked,) = events(world, "release.marked-bad")
    (cleared,) = events(world, "release.bad-cleared")
    assert (marked.actor, marked.data["source"]) == ("ana", "hand")
    assert (cleared.actor, cleared.reason) == ("bo", "fixed")
    assert [m.action for m in world.registry.marks("iris@1.2.0")] == ["bad", "clear-bad"]
    world.check_invariants()


def test_a_failure_injected_by_a_drill_marks_nothing_bad(world: World) -> None:
    from backout.store import schema

    complete(world, "1.1.0")
    now = world.clock()
    with world.store.write() as conn:
        conn.execute(
            schema.faults.insert().values(model="iris", version="1.1.0", kind="errors", value=0.5,
                                          start_at=now, end_at=now + 600, drill_id=None)
        )  # fmt: skip
    world.set_health("1.1.0", error_rate=0.5)  # what the gateway would do with the fault
    world.run_until(lambda: world.op() is not None, limit=30)
    assert world.op().target == "1.0.0"  # type: ignore[union-attr]
    assert world.registry.get("iris@1.1.0").bad is None
    (started,) = events(world, "rollback.started")
    assert started.data["drill_fault"] == "errors=50%" and started.data["marked_bad"] is None


def test_a_candidate_marked_bad_during_its_rollout_is_rolled_back(world: World) -> None:
    world.controller.deploy("iris", "1.1.0", actor="ana")
    world.run(2)
    world.registry.mark_bad("iris@1.1.0", actor="bo", reason="customer reports")
    world.run_until(lambda: world.last_op().kind == "rollback", limit=10)
    rollback = world.last_op()
    assert (rollback.stable, rollback.target) == ("1.1.0", "1.0.0")
    assert "was marked bad during its rollout: customer reports" in (rollback.reason)
    world.run_until(lambda: world.op() is None, limit=120)
    rel = world.registry.get("iris@1.1.0")
    assert rel.bad is not None and rel.bad.actor == "bo" and not rel.known_good


def test_no_traffic_by_hand_reaches_a_bad_release_but_a_shadow_copy_may(world: World) -> None:
    complete(world, "1.1.0")
    world.registry.mark_bad("iris@1.0.0", actor="bo", reason="wrong labels")
    before = len(_all(world))
    for weights, pins in (({"1.0.0": 1, "1.1.0": 99}, None), ({"1.1.0": 100}, {"k1": "1.0.0"})):
        with pytest.raises(ReleaseMarkedBad) as refused:
            world.controller.set_traffic("iris", weights, actor="ana", pins=pins)
        message = refused.value.message
        assert (
            "\n" not in message and "wrong labels" in message and "take traffic by hand" in message
        )
        assert "--override-bad --reason TEXT" in message and "clear-bad" in message
    assert len(_all(world)) == before  # refusals change nothing
    # A zero weight and a shadow copy send no user's request to it.
    world.controller.set_traffic("iris", {"1.1.0": 100, "1.0.0": 0}, actor="ana",
                                 shadow=("1.0.0", 10))  # fmt: skip
    assert world.weights() == {"1.1.0": 100.0}


@pytest.mark.parametrize("lift", ["clear-bad", "unquarantine"])
def test_abort_never_puts_traffic_back_on_a_bad_or_quarantined_release(
    world: World, lift: str
) -> None:
    complete(world, "1.1.0")
    world.controller.set_traffic("iris", {"1.0.0": 1, "1.1.0": 99}, actor="ana")
    op = world.controller.rollback("iris", actor="oncall", to="1.0.0", emergency=False,
                                   reason="labels")  # fmt: skip
    if lift == "clear-bad":
        world.registry.mark_bad("iris@1.1.0", actor="bo", reason="wrong labels")
    else:
        world.registry.quarantine("iris@1.1.0", actor="bo", reason="leaks PII")
    before = len(_all(world))
    with pytest.raises(Conflict) as refused:
        world.controller.abort("iris", actor="oncall")
    message = refused.value.message
    assert "\n" not in message and message.startswith(
        "abort would put all of iris's traffic back on iris@1.1.0, which is "
    )
    assert ("wrong labels" if lift == "clear-bad" else "leaks PII") in message
    assert "let the rollback to 1.0.0 finish" in message and "--emergency" in message
    assert len(_all(world)) == before and world.op() is not None
    assert world.op().id == op.id  # type: ignore[union-attr]
    if lift == "clear-bad":
        world.registry.clear_bad("iris@1.1.0", actor="bo", reason="false alarm")
    else:
        world.registry.quarantine("iris@1.1.0", actor="bo", reason="cleared", lift=True)
    assert world.controller.abort("iris", actor="oncall").id == op.id
    assert world.weights() == {"1.1.0": 100.0}
    world.check_invariants()
