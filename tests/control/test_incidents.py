"""Incidents follow the rollback's phases; the status page's components follow the incidents."""

from __future__ import annotations

import pytest

from backout.control.incidents import Incidents, IncidentStatus
from backout.control.phases import Phase
from backout.control.policy import parse_policy
from backout.control.statuspage import (
    ComponentStatus,
    overdue_warning,
    public_summary,
    read_models,
    runbook_duties,
)
from backout.errors import Conflict, PolicyError, ValidationError
from tests.control.world import POLICY, NewWorld, World


def status(world: World) -> ComponentStatus:
    return read_models(world.store)[0].status


def promoted(world: World) -> None:
    """iris@1.1.0 live at 100% and known-good."""
    world.controller.deploy("iris", "1.1.0", actor="ana")
    world.controller.promote("iris", actor="ana")
    world.run_until(lambda: world.op() is None, limit=120)


def test_a_staged_rollback_walks_the_incident_through_every_status(new_world: NewWorld) -> None:
    world = new_world(POLICY.replace("steps: [50, 100]", "steps: [25, 50, 100]"))
    promoted(world)
    assert status(world) == ComponentStatus.OPERATIONAL
    world.controller.rollback("iris", actor="oncall", to="1.0.0", reason="drill")
    incident = Incidents(world.store).current("iris")
    assert incident is not None and incident.status == IncidentStatus.INVESTIGATING
    seen = set()
    while world.op() is not None:
        seen.add(status(world))
        world.second()
    done = Incidents(world.store).get(incident.id)
    assert [u.status.value for u in done.updates] == [
        "investigating", "identified", "monitoring", "resolved",
    ]  # fmt: skip
    assert done.resolved_at is not None and all(u.automatic for u in done.updates)
    assert status(world) == ComponentStatus.OPERATIONAL
    assert seen == {ComponentStatus.PARTIAL_OUTAGE, ComponentStatus.DEGRADED_PERFORMANCE}


def test_an_emergency_rollback_opens_its_incident_monitoring(world: World) -> None:
    world.controller.deploy("iris", "1.1.0", actor="ana")
    world.run(3)
    op = world.controller.rollback("iris", actor="oncall", emergency=True, reason="pager")
    assert op.phase == Phase.VERIFYING
    incident = Incidents(world.store).current("iris")
    assert incident is not None and incident.status == IncidentStatus.MONITORING
    assert status(world) == ComponentStatus.DEGRADED_PERFORMANCE
    assert Incidents(world.store).for_operation(op.id) is not None


def test_a_rollout_opens_no_incident(world: World) -> None:
    promoted(world)
    assert Incidents(world.store).list() == []


def test_a_freeze_is_a_major_outage_until_it_is_lifted(world: World) -> None:
    promoted(world)
    world.set_health("1.1.0", error_rate=0.5)
    world.set_health("1.0.0", nan_rate=0.02)
    world.controller.rollback("iris", actor="oncall", emergency=True, reason="errors",
                              trigger={"triggers": [{"name": "errors"}]})  # fmt: skip
    world.run_until(lambda: world.controller.frozen("iris") is not None, limit=60)
    assert status(world) == ComponentStatus.MAJOR_OUTAGE
    incident = Incidents(world.store).current("iris")
    assert incident is not None and incident.status == IncidentStatus.IDENTIFIED
    assert "halted" in incident.updates[-1].message
    world.controller.unfreeze("iris", actor="lead", reason="fixed the feature store")
    assert Incidents(world.store).current("iris") is None
    assert status(world) == ComponentStatus.OPERATIONAL


def test_an_incident_commander_adds_updates_in_their_words(world: World) -> None:
    promoted(world)
    world.controller.rollback("iris", actor="oncall", to="1.0.0", reason="drill")
    inc = Incidents(world.store).add_update(
        "iris", "identified", "A bad feature export; we are moving back.", actor="ana"
    )
    assert inc.updates[-1].message == "A bad feature export; we are moving back."
    assert not inc.updates[-1].automatic and inc.updates[-1].actor == "ana"
    with pytest.raises(ValidationError, match="not one of investigating"):
        Incidents(world.store).add_update("iris", "fine", "x", actor="ana")
    with pytest.raises(ValidationError, match="empty"):
        Incidents(world.store).add_update("iris", "identified", "  ", actor="ana")
    closed = Incidents(world.store).add_update("iris", "resolved", "All good.", actor="ana")
    assert closed.resolved_at is not None
    with pytest.raises(Conflict, match="no open incident"):
        Incidents(world.store).add_update("iris", "identified", "again", actor="ana")


def test_public_text_shows_no_version_reason_or_consumer_by_default(world: World) -> None:
    promoted(world)
    world.controller.rollback("iris", actor="oncall", to="1.0.0", reason="secret-evidence")
    summary = public_summary(world.store, now=world.clock())
    text = str(summary)
    assert "1.1.0" not in text and "1.0.0" not in text and "secret-evidence" not in text
    assert summary["components"][0]["status"] == "partial_outage"
    assert summary["status"]["indicator"] == "major"
    assert summary["incidents"][0]["status"] == "investigating"


def test_the_policy_names_the_component_and_may_allow_versions(new_world: NewWorld) -> None:
    world = new_world(POLICY + """
status_page:
  component: Flower scoring
  show_versions: true
  messages:
    investigating: "{component}: moving from {from_version} to {to_version}"
""")  # fmt: skip
    promoted(world)
    world.controller.rollback("iris", actor="oncall", to="1.0.0", reason="drill")
    summary = public_summary(world.store, now=world.clock())
    assert summary["components"][0]["name"] == "Flower scoring"
    assert summary["incidents"][0]["updates"][0]["message"] == (
        "Flower scoring: moving from 1.1.0 to 1.0.0"
    )
    assert summary["incidents"][0]["components"] == ["Flower scoring"]


def test_a_template_that_would_leak_a_version_is_refused_with_its_line() -> None:
    with pytest.raises(PolicyError, match=r":3: status_page.messages.identified: \{to_version\}"):
        parse_policy('status_page:\n  messages:\n    identified: "now {to_version}"\n')
    with pytest.raises(PolicyError, match=r"\{secret\} is not a placeholder"):
        parse_policy('status_page:\n  title: "{secret}"\n')


def test_the_incident_commander_rotates_and_a_stale_runbook_is_overdue(world: World) -> None:
    policy = parse_policy("""
incident_commander: {rotation: [ana, bo], every: 7d, since: 2026-01-05}
review_every: 90d
reviewed: 2026-01-01
""")
    base = 1_767_571_200.0  # 2026-01-05T00:00:00Z
    assert policy.incident_commander.on_duty(base + 3600) == "ana"
    assert policy.incident_commander.on_duty(base + 8 * 86400) == "bo"
    assert policy.incident_commander.on_duty(base + 15 * 86400) == "ana"
    duties = runbook_duties(world.store, "iris", policy, now=base + 100 * 86400)
    assert duties["incident_commander"] == "ana"  # turn 14 of a rotation of two
    warning = overdue_warning("iris", duties)
    assert warning is not None and "overdue for review by 14 day(s)" in warning
    fresh = runbook_duties(world.store, "iris", policy, now=base + 10 * 86400)
    assert overdue_warning("iris", fresh) is None


def test_a_rollback_to_a_worse_target_leaves_the_incident_open(world: World) -> None:
    promoted(world)
    world.set_health("1.0.0", error_rate=0.06)
    world.controller.rollback("iris", actor="oncall", to="1.0.0", reason="drill")
    world.run_until(lambda: world.op() is None, limit=300)
    incident = Incidents(world.store).current("iris")
    assert incident is not None and incident.status == IncidentStatus.IDENTIFIED
    assert "halted" in incident.updates[-1].message
    assert status(world) == ComponentStatus.PARTIAL_OUTAGE  # until a person resolves it


def test_a_freeze_with_nothing_running_opens_an_incident_and_its_lifting_resolves_it(
    world: World,
) -> None:
    world.controller.freeze_by_hand("iris", actor="ana", reason="feature store outage")
    incident = Incidents(world.store).current("iris")
    assert incident is not None and incident.status == IncidentStatus.IDENTIFIED
    assert status(world) == ComponentStatus.MAJOR_OUTAGE
    world.controller.unfreeze("iris", actor="ana", reason="fixed")
    done = Incidents(world.store).get(incident.id)
    assert done.resolved_at is not None and done.updates[-1].status == IncidentStatus.RESOLVED
    assert status(world) == ComponentStatus.OPERATIONAL
