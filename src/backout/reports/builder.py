"""Building an incident report: everything one rollback left in the store, gathered.

For the ``backout report`` command and the demo: an incident is a rollback, or an operation
that froze — a rollout whose gate failed when no rollback was safe is as much an incident
as one that rolled back. :func:`build_report` reads an incident's ``operations`` row, the rollout before it, the model's audit events around it and the
telemetry batches of every release into an :class:`~backout.reports.model.IncidentReport`,
with the numbers (time to detect and to recover, requests affected) already worked out;
:func:`latest_incident` finds a model's newest one. The words of the report come from
:mod:`backout.reports.markdown`.

Times are unix seconds throughout. The trigger (the start of the rollback) is the report's
zero: the timeline and the plots count from it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

import sqlalchemy as sa

from backout.errors import NotFound
from backout.reports.markdown import (
    decision_title,
    finding_from,
    questions,
    trigger_info,
    what_happened,
)
from backout.reports.model import Decision, IncidentReport, ReleaseSeries, RolloutInfo
from backout.store import Store, audit, schema
from backout.telemetry.batches import Batch, latency_quantile, read_batches, sum_batches

__all__ = ["build_report", "incident_ids", "latest_incident"]

OPS = schema.operations
TRAFFIC_KINDS = ("traffic.applied", "traffic.set", "deploy.first")  # events that set weights
# Decisions a controller writes in the same transaction as the traffic change they cause.
_DECISIONS = ("rollout.started", "rollback.started")
_FULL = 99.995  # percent at which a release holds all the traffic (weights are rounded)
_MAX_POINTS = 150  # plot resolution: batches are binned so a series has about this many points
_LOOKBACK_S = 900.0  # how far before the trigger to look for the start of the trouble
_OPEN_WINDOW_S = 3600.0  # an unfinished incident's plots reach at most this far past its start
_SMOOTH_S = 10.0  # plotted rates and quantiles are over this many trailing seconds
_FROZEN = ("frozen", "unfrozen")  # phases of an operation that froze (and was perhaps lifted)


def _is_incident() -> Any:
    """Rows of incidents: every rollback, and any operation that froze."""
    return sa.or_(OPS.c.kind == "rollback", OPS.c.phase.in_(_FROZEN))


# -- finding an incident -------------------------------------------------------------------


def incident_ids(store: Store, model: str, limit: int = 50) -> list[int]:
    """The ids of ``model``'s incidents, newest first."""
    with store.read() as conn:
        rows = conn.execute(
            sa.select(OPS.c.id)
            .where(OPS.c.model == model, _is_incident())
            .order_by(OPS.c.id.desc())
            .limit(limit)
        ).scalars()
        return [int(i) for i in rows]


def incident_model(store: Store, operation_id: int) -> str | None:
    """The model operation ``operation_id`` belongs to (None: there is no such operation)."""
    with store.read() as conn:
        model = conn.execute(sa.select(OPS.c.model).where(OPS.c.id == operation_id)).scalar()
    return None if model is None else str(model)


def latest_incident(store: Store, model: str) -> int:
    """The id of ``model``'s newest incident: a rollback, or an operation that froze."""
    with store.read() as conn:
        op_id = conn.execute(
            sa.select(OPS.c.id)
            .where(OPS.c.model == model, _is_incident())
            .order_by(OPS.c.id.desc())
            .limit(1)
        ).scalar()
    if op_id is None:
        raise NotFound(
            f"model {model!r} has had no rollback and no freeze, so there is no incident to report: "
            f"see its operations with `backout history {model}`"
        )
    return int(op_id)


# -- building ------------------------------------------------------------------------------


def build_report(store: Store, operation_id: int) -> IncidentReport:
    """Read incident ``operation_id`` (a rollback's, or a frozen operation's, id) from the store.

    In a rollback the release rolled back from is the operation's stable release and the
    target its target; in a frozen rollout the candidate is the bad release and the stable
    release the one that could not safely take its traffic back."""
    with store.read() as conn:
        row = conn.execute(sa.select(OPS).where(OPS.c.id == operation_id)).first()
        if row is None:
            raise NotFound(
                f"incident {operation_id} does not exist: find one with `backout report MODEL --last`"
            )
        froze = row.kind != "rollback"
        if froze and row.phase not in _FROZEN:
            raise NotFound(
                f"operation {operation_id} of {row.model} is a {row.kind}, not a rollback, and it "
                f"did not freeze, so it is no incident: find one with `backout report {row.model} --last`"
            )
        before = None
        if not froze:
            before = conn.execute(
                sa.select(OPS)
                .where(OPS.c.model == row.model, OPS.c.id < row.id, OPS.c.target == row.stable)
                .order_by(OPS.c.id.desc())
                .limit(1)
            ).first()
        events = audit.list_events(conn, row.model)
    state: dict[str, Any] = dict(row.state or {})
    policy: dict[str, Any] = dict(row.policy or {})
    bad, good = (row.target, row.stable) if froze else (row.stable, row.target)
    reason, actor = row.reason, row.actor
    started = float(row.started_at)
    ended = None if row.ended_at is None else float(row.ended_at)
    if froze:
        # The incident starts when the operation froze; its trigger is what the gate saw.
        frozen = next((e for e in events if e.kind == "phase.frozen"
                       and e.data.get("operation") == row.id), None)  # fmt: skip
        started = _ts(frozen) if frozen is not None else float(row.updated_at)
        if frozen is not None:
            reason, actor = frozen.reason, frozen.actor
        gate = state.get("last_gate")
        state["trigger"] = {"gate": gate} if isinstance(gate, Mapping) else None
        state["mode"] = "freeze"
        before = row
    rollout = _rollout(before, started) if before is not None and before.kind == "rollout" else None
    if rollout is not None and (froze or state.get("superseded") == rollout.id):
        # The controller records which rollout this rollback cut short: it was live at the trigger.
        rollout = replace(rollout, active_at_trigger=True)

    # Before the trigger: the target's error rate (the baseline) and when the bad release
    # began to look bad, read over a look-back that does not depend on the window.
    since = started - _LOOKBACK_S
    lookback = read_batches(store, row.model, since=since, until=started)
    baseline = _rate(lookback.get(good, []), since, started)
    first_bad = _first_bad(lookback.get(bad, []), state.get("trigger"), baseline, since, started)
    if rollout is not None and rollout.active_at_trigger:
        begin = rollout.started_at
    else:
        begin = min(started, first_bad if first_bad is not None else started)
    end = ended if ended is not None else _still_running_until(store, row, events)
    pad = max(10.0, 0.08 * (end - begin))
    window = (begin - pad, end + pad)

    ours = {row.id} | ({rollout.id} if rollout else set())
    shown = [
        e for e in events if (e.data.get("operation") in ours) or window[0] <= _ts(e) <= window[1]
    ]
    recovered = _recovered_at(shown, good, started)
    trigger = trigger_info(state.get("trigger"), reason, actor)
    per = read_batches(store, row.model, since=window[0], until=window[1])
    if rollout is not None and rollout.active_at_trigger:
        step_pct = rollout.steps[rollout.step] if rollout.step < len(rollout.steps) else None
        detect_from: float | None = rollout.step_started_at
        basis = f"the start of rollout step {rollout.step + 1}" + (
            f" ({rollout.candidate} at {step_pct:g}%)" if step_pct is not None else ""
        )
    elif first_bad is not None:
        detect_from, basis = first_bad, f"the first bad batch of {bad}"
    else:
        detect_from, basis = None, "unknown: no rollout step and no bad batch before the trigger"

    lo = detect_from if detect_from is not None else started
    stop = ended if ended is not None else window[1]
    recovered_or_stop = recovered if recovered is not None else stop
    total = failed = affected = failed_bad = 0
    for version, batches in per.items():
        for b in batches:
            if lo <= b.start < stop:
                total += b.requests
                failed += b.error_count
                if version == bad:
                    failed_bad += b.error_count
            if version == bad and lo <= b.start < recovered_or_stop:
                affected += b.requests

    report = IncidentReport(
        id=int(row.id),
        model=row.model,
        outcome=row.phase if froze else (row.outcome or "in progress"),
        phase=row.phase,
        mode=str(state.get("mode") or "staged"),
        from_version=bad,
        target=good,
        actor=actor,
        reason=reason,
        started_at=started,
        ended_at=ended,
        recovered_at=recovered,
        detect_from=detect_from,
        detect_basis=basis,
        first_bad_at=first_bad,
        trigger=trigger,
        warm_note=str(state.get("warm") or ""),
        escalations=[
            str(e.data.get("contact", "?"))
            for e in shown
            if e.kind == "escalation" and e.data.get("operation") == row.id
        ],
        rollout=rollout,
        timeline=_timeline(shown),
        weights=_weights(events, window, started, state.get("from_weights")),
        series=_series(per, window, order=[bad, good]),
        compat=[finding_from(e) for e in shown if e.kind.startswith("compat.")],
        replay=[finding_from(e) for e in shown if e.kind.startswith("replay.")],
        window=window,
        requests_total=total,
        requests_affected=affected,
        requests_failed=failed,
        failed_on_bad=failed_bad,
        baseline_error_rate=baseline,
        policy=policy,
        kind="freeze" if froze else "rollback",
        chain=(shown[0].seq, shown[-1].seq, shown[-1].hash) if shown else (0, 0, ""),
    )
    report.summary = what_happened(report)
    report.questions = questions(report)
    return report


def _rollout(r: Any, trigger_at: float) -> RolloutInfo:
    policy = dict(r.policy or {})
    spec = policy.get("rollout") or {}
    steps = tuple(float(s) for s in spec.get("steps") or ())
    ended = None if r.ended_at is None else float(r.ended_at)
    # A rollout a rollback superseded ends in the same transaction the rollback starts in.
    active = ended is None or abs(ended - trigger_at) <= 1.0
    gate = (dict(r.state or {}).get("last_gate") or {}).get("summary", "")
    bake = spec.get("bake")
    return RolloutInfo(
        id=int(r.id),
        candidate=r.target,
        stable=r.stable,
        started_at=float(r.started_at),
        ended_at=ended,
        outcome=r.outcome,
        steps=steps,
        step=int(r.step),
        step_started_at=float(r.step_started_at),
        bake_s=float(bake) if isinstance(bake, int | float) else None,
        active_at_trigger=active,
        last_gate=str(gate),
    )


def _still_running_until(store: Store, row: Any, events: Sequence[audit.Event]) -> float:
    """Where the window of an unfinished incident ends: its last sign of life.

    That is its own latest event or update, or the newest telemetry since it started (the
    incident is still going on), but no more than an hour past its start.
    """
    started = float(row.started_at)
    own = [_ts(e) for e in events if e.data.get("operation") == row.id]
    end = max([float(row.updated_at), float(row.step_started_at), *own])
    T = schema.telemetry
    with store.read() as conn:
        newest = conn.execute(
            sa.select(sa.func.max(T.c.end)).where(T.c.model == row.model, T.c.start >= started)
        ).scalar()
    if newest is not None:
        end = max(end, min(float(newest), started + _OPEN_WINDOW_S))
    return end


def _ts(e: audit.Event) -> float:
    return e.at.timestamp()


def _event_weights(e: audit.Event) -> dict[str, float] | None:
    w = e.data.get("weights")
    if e.kind not in TRAFFIC_KINDS or not isinstance(w, Mapping):
        return None
    return {str(v): float(p) for v, p in w.items()}


def _recovered_at(events: Sequence[audit.Event], target: str, started: float) -> float | None:
    """When a traffic change after the trigger first put all traffic on the target."""
    for e in events:
        w = _event_weights(e)
        if w is not None and _ts(e) >= started - 1.0 and w.get(target, 0.0) >= _FULL:
            return max(started, _ts(e))
    return None


def _weights(
    events: Sequence[audit.Event], window: tuple[float, float], started: float, before: Any
) -> list[tuple[float, dict[str, float]]]:
    """The route table's weights over the window, starting from what was live before it.

    When no traffic event says what was live before the trigger, the weights the rollback
    recorded as live when it started (``before``) stand in from the window's start.
    """
    points: list[tuple[float, dict[str, float]]] = []
    for e in events:
        w = _event_weights(e)
        if w is None:
            continue
        at = _ts(e)
        if at < window[0]:
            points = [(window[0], w)]
        elif at <= window[1]:
            points.append((at, w))
    known = any(at < started - 1.0 for at, _ in points)
    if not known and isinstance(before, Mapping) and before:
        points.insert(0, (window[0], {str(v): float(p) for v, p in before.items()}))
    return points


def _timeline(events: Sequence[audit.Event]) -> list[Decision]:
    """Decisions in order; a traffic change written with a decision is folded into its row."""
    folded: dict[int, dict[str, float]] = {}  # decision seq -> the weights it set
    skip: set[int] = set()
    by_seq = {e.seq: e for e in events}
    for e in events:
        w = _event_weights(e)
        op = e.data.get("operation")
        if w is None or op is None:
            continue
        for near in (e.seq + 1, e.seq - 1):
            other = by_seq.get(near)
            if (
                other is not None
                and other.data.get("operation") == op
                and other.kind not in TRAFFIC_KINDS
                and (other.kind.startswith("phase.") or other.kind in _DECISIONS)
                and other.seq not in folded
            ):
                folded[other.seq] = w
                skip.add(e.seq)
                break
    rows = []
    for e in events:
        if e.seq in skip:
            continue
        title, detail, verdict, judges = decision_title(e)
        rows.append(
            Decision(
                seq=e.seq,
                at=_ts(e),
                kind=e.kind,
                actor=e.actor,
                title=title,
                detail=detail,
                verdict=verdict,
                weights=folded.get(e.seq, _event_weights(e)),
                judges=judges,
            )
        )
    return rows


def _rate(batches: Sequence[Batch], since: float, until: float) -> float | None:
    n = sum(b.requests for b in batches if since <= b.start < until)
    errors = sum(b.error_count for b in batches if since <= b.start < until)
    return errors / n if n else None


def _first_bad(
    batches: Sequence[Batch],
    trigger: Mapping[str, Any] | None,
    baseline: float | None,
    since: float,
    until: float,
) -> float | None:
    """When the bad release began to look as bad as it was judged, up to the trigger.

    Batches are about a second, too few requests for a rate on their own, so windows of five
    (at least 20 requests) are read together. The error limit is the error-rate trigger's
    when it fired, else three times the baseline plus two points; the latency limit is the
    latency trigger's when it fired. Walking back from the trigger, the answer is the start
    of the stretch of bad windows that ends there (at its first bad batch); None when the
    last windows look fine.
    """
    base = baseline or 0.0
    err_limit = max(3 * base, base + 0.02)
    lat: tuple[float, float] | None = None
    for t in (trigger or {}).get("triggers") or ():
        ev = t.get("evidence") or {}
        if t.get("kind") == "error_rate" and isinstance(ev.get("limit"), int | float):
            err_limit = float(ev["limit"])
        if t.get("kind") == "latency" and isinstance(ev.get("limit_ms"), int | float):
            lat = (float(ev.get("quantile", 0.99)), float(ev["limit_ms"]))
    run = [b for b in batches if since <= b.start < until]
    first: int | None = None
    for i in range(len(run) - 1, -1, -1):
        window = sum_batches(run[i : i + 5])
        if window is None or window.requests < 20:
            continue  # too few requests to say either way
        bad = window.error_count / window.requests > err_limit
        if lat is not None:
            bad = bad or latency_quantile(window.latency, lat[0]) * 1000 > lat[1]
        if not bad:
            break
        first = i
    if first is None:
        return None
    # The stretch's first window may open on a few good batches: start at its first bad one.
    for b in run[first : first + 5]:
        if b.requests and b.error_count / b.requests > err_limit:
            return b.start
    return run[first].start


def _series(
    per: Mapping[str, Sequence[Batch]], window: tuple[float, float], order: Sequence[str]
) -> list[ReleaseSeries]:
    """Each release's batches binned over the window; the bad release and the target first."""
    step = max(1.0, math.ceil((window[1] - window[0]) / _MAX_POINTS))
    k = max(1, round(_SMOOTH_S / step))  # bins in the trailing window
    versions = [v for v in order if v in per] + sorted(v for v in per if v not in order)
    out = []
    for version in versions:
        bins: dict[int, Batch] = {}
        for b in per[version]:
            i = int((b.start - window[0]) // step)
            if i in bins:
                bins[i].merge(b)
            else:
                bins[i] = Batch.from_dict(b.to_dict())
        if not bins:
            continue
        keys = list(range(min(bins), max(bins) + 1))  # dense: a bin without traffic is a gap
        rates: list[float | None] = []
        p50: list[float | None] = []
        p99: list[float | None] = []
        for i in keys:
            merged = sum_batches(bins[j] for j in range(i - k + 1, i + 1) if j in bins)
            n = merged.requests if merged else 0
            rates.append(merged.error_count / n if merged and n else None)
            p50.append(_q(merged, 0.5) if merged and n else None)
            p99.append(_q(merged, 0.99) if merged and n else None)
        out.append(
            ReleaseSeries(
                version=version,
                t=[window[0] + i * step for i in keys],
                requests=[bins[i].requests if i in bins else 0 for i in keys],
                errors=[bins[i].error_count if i in bins else 0 for i in keys],
                error_rate=rates,
                p50_ms=p50,
                p99_ms=p99,
                bin_s=step,
                smooth_s=k * step,
            )
        )
    return out


def _q(b: Batch, q: float) -> float | None:
    v = latency_quantile(b.latency, q)
    return None if math.isnan(v) else v * 1000
