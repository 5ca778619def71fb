"""The public status of each model, derived from the store, and each runbook's duties.

For the public status page and the dashboard. A *component* is what the public sees: a model,
or the consumer-facing service its policy names (``status_page.component``; several models
may share one, and the worst of them shows). Its status, in Statuspage's vocabulary, comes
only from what the controller decided (operations, freezes, incidents):

=========================================  ======================
the model                                  component status
=========================================  ======================
frozen                                     major outage
a rollback moving traffic (or paused)      partial outage
all traffic back, verification running     degraded performance
an open incident otherwise                 by its status
a rollout (``rollouts_as_maintenance``)    under maintenance
otherwise                                  operational
=========================================  ======================
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

import sqlalchemy as sa

from backout.control.incidents import Incident, Incidents, IncidentStatus
from backout.control.operations import Operation, Operations
from backout.control.phases import Phase
from backout.control.policy import Policy
from backout.control.runbook import review_due
from backout.store import Store, schema

DEPLOYMENTS = schema.deployments


class ComponentStatus(StrEnum):
    """A component's status, as Statuspage spells it in its API."""

    OPERATIONAL = "operational"
    UNDER_MAINTENANCE = "under_maintenance"
    DEGRADED_PERFORMANCE = "degraded_performance"
    PARTIAL_OUTAGE = "partial_outage"
    MAJOR_OUTAGE = "major_outage"

    @property
    def label(self) -> str:
        """How a person reads it: ``partial outage``."""
        return self.value.replace("_", " ")

    @property
    def rank(self) -> int:
        """Worse is higher; a component shows its worst model."""
        return list(ComponentStatus).index(self)


# The page's overall indicator, as Statuspage's summary.json gives it.
INDICATOR = {
    ComponentStatus.OPERATIONAL: ("none", "All Systems Operational"),
    ComponentStatus.UNDER_MAINTENANCE: ("maintenance", "Service Under Maintenance"),
    ComponentStatus.DEGRADED_PERFORMANCE: ("minor", "Minor Service Outage"),
    ComponentStatus.PARTIAL_OUTAGE: ("major", "Partial System Outage"),
    ComponentStatus.MAJOR_OUTAGE: ("critical", "Major System Outage"),
}


def model_status(op: Operation | None, frozen: str | None, incident: Incident | None,
                 policy: Policy) -> ComponentStatus:  # fmt: skip
    """A model's public status from its operation in progress, freeze and open incident."""
    if frozen:
        return ComponentStatus.MAJOR_OUTAGE
    if op is not None and op.kind == "rollback":
        phase = op.state.paused_from if op.phase == Phase.PAUSED else op.phase
        if phase == Phase.VERIFYING:
            return ComponentStatus.DEGRADED_PERFORMANCE
        return ComponentStatus.PARTIAL_OUTAGE
    if incident is not None and incident.open:
        if incident.status == IncidentStatus.MONITORING:
            return ComponentStatus.DEGRADED_PERFORMANCE
        return ComponentStatus.PARTIAL_OUTAGE
    if op is not None and policy.status_page.rollouts_as_maintenance:
        return ComponentStatus.UNDER_MAINTENANCE
    return ComponentStatus.OPERATIONAL


@dataclass
class ModelView:
    """What the status page and the dashboard know of one model, read once."""

    model: str
    policy: Policy
    operation: Operation | None
    frozen: str | None
    incident: Incident | None
    status: ComponentStatus


@dataclass
class Component:
    """One line of the status page."""

    name: str
    status: ComponentStatus
    updated_at: float
    models: list[str] = field(default_factory=list)  # private: never shown publicly

    def to_public(self) -> dict[str, Any]:
        return {"id": _slug(self.name), "name": self.name, "status": self.status.value,
                "status_label": self.status.label, "updated_at": self.updated_at}  # fmt: skip


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in name.lower()).strip("-") or "component"


def live_models(store: Store) -> list[str]:
    """The models with a route table, by name."""
    with store.read() as conn:
        return list(
            conn.execute(sa.select(DEPLOYMENTS.c.model).order_by(DEPLOYMENTS.c.model)).scalars()
        )


def read_models(store: Store, models: list[str] | None = None) -> list[ModelView]:
    """Every live model's view (or those named), for the page and the dashboard."""
    ops = Operations(store)
    open_incidents = {i.model: i for i in Incidents(store).list(open_only=True, limit=1000)}
    views = []
    for model in live_models(store) if models is None else models:
        policy = ops.policy_for(model)
        op = ops.active(model)
        frozen = ops.frozen(model)
        incident = open_incidents.get(model)
        views.append(ModelView(model, policy, op, frozen, incident,
                               model_status(op, frozen, incident, policy)))  # fmt: skip
    return views


def components(views: list[ModelView]) -> list[Component]:
    """The page's components: one per named service (or model), worst status first wins."""
    out: dict[str, Component] = {}
    for v in views:
        name = v.policy.status_page.name_for(v.model)
        at = max([v.operation.updated_at if v.operation else 0.0,
                  v.incident.updated_at if v.incident else 0.0])  # fmt: skip
        c = out.setdefault(name, Component(name, ComponentStatus.OPERATIONAL, 0.0))
        c.models.append(v.model)
        c.updated_at = max(c.updated_at, at)
        if v.status.rank > c.status.rank:
            c.status = v.status
    return sorted(out.values(), key=lambda c: c.name.lower())


def public_summary(store: Store, *, page: str = "backout", now: float | None = None,
                   recent_s: float = 7 * 86400.0) -> dict[str, Any]:  # fmt: skip
    """The status page as data, shaped like Statuspage's ``summary.json``.

    Only public words: component names, statuses, incident titles and the updates'
    messages (written from the policy's templates, or by an incident commander).
    """
    now = time.time() if now is None else now
    views = read_models(store)
    comps = components(views)
    name_of = {v.model: v.policy.status_page.name_for(v.model) for v in views}
    worst = max(
        (c.status for c in comps), key=lambda s: s.rank, default=ComponentStatus.OPERATIONAL
    )
    incidents = []
    for inc in Incidents(store).list(since=now - recent_s, limit=50):
        doc = inc.to_dict(public=True)
        doc["components"] = [name_of.get(inc.model, inc.model)]
        incidents.append(doc)
    indicator, description = INDICATOR[worst]
    return {
        "page": {"name": page, "updated_at": max([now, *(c.updated_at for c in comps)])},
        "status": {"indicator": indicator, "description": description},
        "components": [c.to_public() for c in comps],
        "incidents": incidents,
    }


def runbook_duties(
    store: Store, model: str, policy: Policy, now: float | None = None
) -> dict[str, Any]:
    """Who holds which role for ``model`` now, and whether its runbook is overdue for review."""
    now = time.time() if now is None else now
    return duties_of(policy, Operations(store).policy_stored_at(model), now)


def duties_of(policy: Policy, stored_at: datetime | None, now: float) -> dict[str, Any]:
    """The runbook's roles at ``now``, and how overdue its review is (None: not)."""
    return {
        "owners": list(policy.owners),
        "approvers": list(policy.approvers),
        "incident_commander": policy.incident_commander.on_duty(now),
        "review_every": policy.review_every,
        "review_overdue": review_due(policy.review_every, policy.reviewed, stored_at, now),
    }


def overdue_warning(model: str, duties: dict[str, Any]) -> str | None:
    """``fraud's runbook is overdue for review by 12 days (due every 90d)``, or None."""
    due = duties.get("review_overdue")
    if not due:
        return None
    from backout.configfile import format_duration

    days = due["overdue_s"] / 86400
    late = f"{days:.0f} day(s)" if days >= 1 else f"{due['overdue_s'] / 3600:.1f} h"
    return (
        f"{model}'s runbook is overdue for review by {late} (due every "
        f"{format_duration(duties['review_every'])}): review it and set 'reviewed' in its policy"
    )


def runbook_view(store: Store, model: str, now: float | None = None) -> dict[str, Any]:
    """What ``status`` adds for people: the runbook's duties (and overdue warning) and the
    model's open incident, read in one transaction."""
    now = time.time() if now is None else now
    with store.read() as conn:
        policy, stored = Operations.policy_in(conn, model)
        found = Incidents.list_in(conn, model, limit=1, open_only=True)
    incident = found[0] if found else None
    duties = duties_of(policy, stored, now)
    return {
        "runbook": duties | {"warning": overdue_warning(model, duties)},
        "incident": incident.to_dict() if incident is not None else None,
    }
