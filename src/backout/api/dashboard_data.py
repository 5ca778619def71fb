"""What the dashboard shows, as plain documents: the overview, one model's live view, actions.

For :mod:`backout.api.dashboard` (pages and the server-sent stream). Each action button is a
row of :data:`ACTIONS`: the right it needs (a person never sees a button their role does not
allow), the phases it applies to, the control API endpoint it calls, and the confirmation
that names what will happen.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from backout.api.auth import Principal
from backout.api.charts import charts
from backout.api.roles import Right
from backout.api.state import ApiState
from backout.control.operations import Operation
from backout.control.phases import Phase
from backout.control.statuspage import ModelView, overdue_warning, read_models, runbook_duties
from backout.store import Store, audit, schema
from backout.telemetry.batches import read_batches

__all__ = ["ACTIONS", "actions_for", "change_marker", "model_live", "model_page", "overview"]

CHART_MINUTES = 5.0
CHART_STEP = 5.0  # seconds per point of the charts
TIMELINE = 25


@dataclass(frozen=True)
class Context:
    """What an action's condition and confirmation look at."""

    model: str
    op: Operation | None
    frozen: str | None
    target: str | None  # where a rollback would go now
    live: str | None  # the release a rollback leaves
    mode: str = ""  # how the policy's rollback moves traffic, in words


@dataclass(frozen=True)
class ActionSpec:
    """One button: who may press it, when it applies, what it calls and says."""

    key: str
    label: str
    rights: tuple[Right, ...]  # any of them
    when: Callable[[Context], bool]
    path: str  # under /api/v1, {model} filled in
    body: dict[str, Any]
    confirm: Callable[[Context], str]
    danger: bool = False


def _rollback_applies(c: Context) -> bool:
    return not c.frozen and c.target is not None and (c.op is None or c.op.kind == "rollout")


def _op_is(*phases: Phase) -> Callable[[Context], bool]:
    return lambda c: c.op is not None and c.op.phase in phases


MOVING = (Phase.ROLLING_OUT, Phase.AWAITING_APPROVAL, Phase.COMPLETING, Phase.ROLLING_BACK,
          Phase.VERIFYING)  # fmt: skip

ACTIONS: tuple[ActionSpec, ...] = (
    ActionSpec("rollback", "Roll back", (Right.ROLLBACK, Right.DEPLOY), _rollback_applies,
               "/models/{model}/rollback", {"reason": "rolled back from the dashboard"},
               lambda c: f"Roll {c.model} back from {c.live} to {c.target} ({c.mode}), then "
               "verify it?", danger=True),
    ActionSpec("rollback-emergency", "Emergency rollback", (Right.ROLLBACK, Right.DEPLOY),
               _rollback_applies, "/models/{model}/rollback",
               {"mode": "emergency", "reason": "emergency rollback from the dashboard"},
               lambda c: f"Move ALL of {c.model}'s traffic from {c.live} to {c.target} at "
               "once, then verify it?", danger=True),
    ActionSpec("abort", "Abort", (Right.ABORT,),
               _op_is(Phase.ROLLING_OUT, Phase.AWAITING_APPROVAL, Phase.COMPLETING,
                      Phase.ROLLING_BACK, Phase.PAUSED), "/models/{model}/abort",
               {"reason": "aborted from the dashboard"},
               lambda c: f"Stop {c.model}'s {c.op.kind if c.op else 'operation'} and put its "
               f"traffic back where it started ({c.op.stable if c.op else '-'})?"),
    ActionSpec("pause", "Pause", (Right.PAUSE,), _op_is(*MOVING), "/models/{model}/pause",
               {"reason": "paused from the dashboard"},
               lambda c: f"Hold {c.model}'s {c.op.kind if c.op else 'operation'} where it is "
               "(traffic stays as it is now)?"),
    ActionSpec("resume", "Resume", (Right.PAUSE, Right.DEPLOY), _op_is(Phase.PAUSED),
               "/models/{model}/resume", {"reason": "resumed from the dashboard"},
               lambda c: f"Resume {c.model}'s {c.op.kind if c.op else 'operation'} where it "
               "was paused?"),
    ActionSpec("promote", "Promote to 100%", (Right.PROMOTE,),
               _op_is(Phase.ROLLING_OUT, Phase.AWAITING_APPROVAL), "/models/{model}/promote",
               {"reason": "promoted from the dashboard"},
               lambda c: f"Skip the remaining steps and send all of {c.model}'s traffic to "
               f"{c.op.target if c.op else '-'}?"),
    ActionSpec("approve", "Approve step", (Right.APPROVE,), _op_is(Phase.AWAITING_APPROVAL),
               "/models/{model}/approve", {"reason": "approved from the dashboard"},
               lambda c: f"Approve the step {c.model}'s gate left to a person (the rollout "
               "moves on)?"),
    ActionSpec("freeze", "Freeze", (Right.FREEZE,), lambda c: not c.frozen,
               "/models/{model}/freeze", {"reason": "frozen from the dashboard"},
               lambda c: f"Halt every traffic change of {c.model} (rollouts and rollbacks) "
               "until someone lifts the freeze?", danger=True),
    ActionSpec("unfreeze", "Lift freeze", (Right.FREEZE,), lambda c: bool(c.frozen),
               "/models/{model}/unfreeze", {"reason": "freeze lifted from the dashboard"},
               lambda c: f"Lift {c.model}'s freeze? Traffic stays where it is."),
)  # fmt: skip


def actions_for(principal: Principal, ctx: Context) -> list[dict[str, Any]]:
    """The buttons ``principal`` may press on ``ctx.model`` now, each with its confirmation."""
    shown = []
    for a in ACTIONS:
        if not any(principal.can(r, ctx.model) for r in a.rights) or not a.when(ctx):
            continue
        shown.append({"key": a.key, "label": a.label, "path": "/api/v1" + a.path.format(
            model=ctx.model), "body": a.body, "confirm": a.confirm(ctx), "danger": a.danger})  # fmt: skip
    return shown


def _context(st: ApiState, view: ModelView, weights: dict[str, float]) -> Context:
    live = max(weights, key=lambda v: weights[v]) if weights else None
    op = view.operation
    if op is not None and op.kind == "rollout":
        live = op.target  # a rollback leaves the candidate, whatever its share
    target = None
    try:
        exclude = {view.operation.target} if view.operation is not None else set(weights)
        target = st.controller.rollback_target(view.model, view.policy, exclude=exclude)
    except Exception:  # no known-good release to go back to: no rollback button
        target = None
    rb = view.policy.rollback
    mode = (f"staged: {' → '.join(f'{w:g}%' for w in rb.steps)}, each step behind its gate"
            if rb.mode == "staged" else "all traffic at once")  # fmt: skip
    return Context(view.model, view.operation, view.frozen, target, live, mode)


def change_marker(store: Store) -> tuple[int, float]:
    """Changes whenever anything a dashboard shows was decided: the newest event, incident."""
    with store.read() as conn:
        seq = conn.execute(sa.select(sa.func.max(schema.events.c.seq))).scalar() or 0
        inc = conn.execute(sa.select(sa.func.max(schema.incidents.c.updated_at))).scalar() or 0
    return int(seq), float(inc)


def _weights(st: ApiState, model: str) -> tuple[dict[str, float], dict[str, str]]:
    table = st.controller.deployments.get(model)
    if table is None:
        return {}, {}
    return {v: w / 100 for v, w in table.weights.items()}, dict(table.pins)


def overview(st: ApiState, principal: Principal) -> list[dict[str, Any]]:
    """One row per model the principal may read: phase, weights, known-good, pins, status."""
    models = principal.readable(st.controller.deployments.models())
    rows = []
    now = time.time()
    for view in read_models(st.store, models):
        weights, pins = _weights(st, view.model)
        known_good = [r.version for r in st.registry.list(view.model, known_good=True)][:5]
        duties = runbook_duties(st.store, view.model, view.policy, now)
        op = view.operation
        rows.append({
            "model": view.model,
            "phase": op.phase.value if op else ("frozen" if view.frozen else "steady"),
            "operation": f"{op.kind} {op.stable} → {op.target}" if op else "",
            "weights": weights, "pins": pins, "known_good": known_good,
            "status": view.status.value, "status_label": view.status.label,
            "incident": view.incident.to_dict() if view.incident else None,
            "warning": overdue_warning(view.model, duties),
        })  # fmt: skip
    return rows


def model_live(st: ApiState, principal: Principal, model: str, *,
               now: float | None = None) -> dict[str, Any]:  # fmt: skip
    """What the model's page shows and updates every second (the stream sends this)."""
    now = time.time() if now is None else now
    view = read_models(st.store, [model])[0]
    weights, pins = _weights(st, model)
    op = view.operation
    gate = op.state.last_gate if op is not None else None
    with st.store.read() as conn:
        events = audit.list_events(conn, model, limit=TIMELINE, newest_first=True)
        marker = conn.execute(sa.select(sa.func.max(schema.events.c.seq))).scalar() or 0
    duties = runbook_duties(st.store, model, view.policy, now)
    return {
        "model": model,
        "at": now,
        "seq": int(marker),
        "phase": op.phase.value if op else ("frozen" if view.frozen else "steady"),
        "operation": None if op is None else {
            "id": op.id, "kind": op.kind, "phase": op.phase.value, "step": op.step + 1,
            "steps": len(op.policy.rollout.steps if op.kind == "rollout" else op.policy.rollback.steps),
            "stable": op.stable, "target": op.target, "reason": op.reason, "actor": op.actor,
            "seconds_in_step": round(now - op.step_started_at, 1),
        },
        "weights": weights,
        "pins": pins,
        "frozen": view.frozen,
        "status": view.status.value,
        "status_label": view.status.label,
        "gate": None if not gate else {
            "verdict": str(gate.get("verdict")),
            "judgements": [
                {"judge": str(j.get("judge")), "verdict": str(j.get("verdict")),
                 "summary": str(j.get("summary", ""))}
                for j in gate.get("judgements", [])
            ],
        },
        "incident": view.incident.to_dict() if view.incident else None,
        "timeline": [
            {"seq": e.seq, "at": e.at.timestamp(), "kind": e.kind, "actor": e.actor,
             "reason": e.reason} for e in events
        ],
        "charts": _charts(st, model, now),
        "actions": actions_for(principal, _context(st, view, weights)),
        "warning": overdue_warning(model, duties),
        "commander": duties["incident_commander"],
    }  # fmt: skip


def _charts(st: ApiState, model: str, now: float) -> dict[str, str]:
    """The charts, drawn once per bucket of :data:`CHART_STEP` seconds and shared by every
    open dashboard: their points only change when a bucket ends, and reading five minutes
    of telemetry every second for every viewer would take CPU from the gateway."""
    key = (model, int(now // CHART_STEP))
    cache: dict[str, tuple[tuple[str, int], dict[str, str]]] = st.extra.setdefault("charts", {})
    hit = cache.get(model)
    if hit is not None and hit[0] == key:
        return hit[1]
    end = key[1] * CHART_STEP  # the last complete bucket: its points no longer change
    per_release = read_batches(st.store, model, since=end - CHART_MINUTES * 60, until=end)
    drawn = charts(per_release, now=end, minutes=CHART_MINUTES, step=CHART_STEP)
    doc = {k: str(v) for k, v in drawn.items()}
    cache[model] = (key, doc)
    return doc


def model_page(st: ApiState, principal: Principal, model: str) -> dict[str, Any]:
    """The model's page on first load: the live view, and what changes rarely."""
    from backout.control.drills import list_drills
    from backout.control.preflight import compat_report
    from backout.proof.consumers import list_consumers

    live = model_live(st, principal, model)
    view = read_models(st.store, [model])[0]
    policy = view.policy
    compat = None
    ctx = _context(st, view, live["weights"])
    if ctx.live and ctx.target and ctx.live != ctx.target:
        try:
            compat = compat_report(st.store, st.registry, model, ctx.live, ctx.target).summary()
        except Exception as exc:  # a contract that cannot be read: say so, do not fail the page
            compat = f"compatibility not known: {exc}"
    return live | {
        "known_good": [r.version for r in st.registry.list(model, known_good=True)][:10],
        "triggers": [{"name": t.name, "kind": t.kind, "mode": getattr(t, "mode", None) or "policy"}
                     for t in policy.triggers],
        "drills": list_drills(st.store, model, limit=5),
        "consumers": [c.name for c in list_consumers(st.store, model)],
        "compat": compat,
        "rollback_target": ctx.target,
        "owners": list(policy.owners),
        "approvers": list(policy.approvers),
        "can_update_incident": _may_update(principal, st, model),
    }  # fmt: skip


def _may_update(principal: Principal, st: ApiState, model: str) -> bool:
    from backout.api.incident_routes import may_update

    return may_update(principal, st, model)
