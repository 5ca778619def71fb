"""What ``status`` and ``history`` show: the live state of a model, and the audit log.

For every front end (the command line, the control API, the dashboard): one function per
view, returning plain JSON-ready documents, so that each shows exactly the same thing.
"""

from __future__ import annotations

import time
from typing import Any

from backout.control.controller import Controller
from backout.control.lease import current
from backout.control.statuspage import runbook_view
from backout.store import Store, audit
from backout.telemetry.batches import latency_quantile, sum_batches
from backout.traffic.deployments import describe

__all__ = ["SLOW_STORE_MS", "history", "model_status", "notices_and_router", "store_round_trip"]


def model_status(
    store: Store, ctl: Controller, model: str, *, window: float = 60.0
) -> dict[str, Any]:
    """One model's route table, running (or last) operation, freeze, and each release's
    traffic over the last ``window`` seconds, read in one transaction of the store."""
    with store.snapshot():
        return _model_status(store, ctl, model, window)


def _model_status(store: Store, ctl: Controller, model: str, window: float) -> dict[str, Any]:
    table = ctl.deployments.require(model)
    since = time.time() - window
    seen = ctl.observe(model, since)  # live from the model's router and telemetry source
    per_release = {v: sum_batches(bs) for v, bs in seen["batches"].items()}
    releases: list[dict[str, Any]] = []
    for v in sorted(set(table.weights) | set(per_release)):
        b = per_release.get(v)
        releases.append({
            "version": v,
            "weight": table.weights.get(v, 0) / 100,
            "requests": b.requests if b else 0,
            "error_rate": (b.error_count / b.requests) if b and b.requests else None,
            "errors": dict(b.errors) if b else {},
            # Refused as the callers' fault: never in requests, errors or the judges.
            "client_errors": dict(b.client_errors) if b else {},
            "p50_ms": latency_quantile(b.latency, 0.5) * 1000 if b and b.latency else None,
            "p99_ms": latency_quantile(b.latency, 0.99) * 1000 if b and b.latency else None,
        })  # fmt: skip
    op = ctl.active(model)
    op_doc = None
    if op is not None:
        steps = op.policy.rollout.steps if op.kind == "rollout" else op.policy.rollback.steps
        op_doc = op.to_dict() | {
            "seconds_in_step": round(time.time() - op.step_started_at, 1),
            "steps": list(steps),
        }
    bad = {r.version: r.bad.to_dict() for r in ctl.registry.list(model) if r.bad is not None}
    for r in releases:
        r["bad"] = bad.get(r["version"])
    # With nothing in progress, the operation that ended last says how the model got here.
    last = None if op is not None else next(iter(ctl.operations(model, limit=1)), None)
    held = current(store)
    notices, router_trouble = notices_and_router(store, model)
    return {
        "model": model,
        "generation": table.generation,
        "routes": describe(table),
        "table": table.to_dict(),
        "releases": releases,
        "operation": op_doc,
        "last_operation": last.to_dict() if last is not None else None,
        "frozen": ctl.frozen(model),
        "router": seen["router"],
        "router_trouble": router_trouble,  # the last router.error not yet recovered
        "notices": notices,  # undelivered notices (the outbox)
        "telemetry": seen["telemetry"],
        "bad": [{"version": v, **mark} for v, mark in bad.items()],
        "controller": None if held is None else held.to_dict(time.time()),  # who leads
    } | runbook_view(store, model)  # the runbook's duties, overdue review, open incident


# One round trip to the store above this is worth a line: the gateway serves from memory and
# does not wait for the store, but the controller's ticks, its lease and every command do.
SLOW_STORE_MS = 250.0


def store_round_trip(store: Any) -> dict[str, Any]:
    """How long one trivial query to the store takes from here, and whether that is slow:
    the better of two, on a connection already open, so that neither connecting nor one
    hiccup of a busy machine reads as a slow store (a slow store is slow every time)."""
    import time

    import sqlalchemy as sa

    times = []
    with store.read() as conn:
        conn.execute(sa.text("SELECT 1"))
        for _ in range(2):
            started = time.perf_counter()
            conn.execute(sa.text("SELECT 1"))
            times.append(time.perf_counter() - started)
    ms = min(times) * 1000
    return {"round_trip_ms": round(ms, 1), "slow": ms > SLOW_STORE_MS,
            "slow_above_ms": SLOW_STORE_MS}  # fmt: skip


def notices_and_router(store: Any, model: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The model's undelivered notices, and whether its router is in trouble (its last
    ``router.error`` not followed by a ``router.recovered``)."""
    from backout.control.outbox import undelivered
    from backout.store import audit

    with store.read() as conn:
        notices = undelivered(conn, model)
        last = audit.latest(conn, model, ("router.error", "router.recovered"))
    router: dict[str, Any] = {"error": None, "since": None, "router": None}
    if last is not None and last.kind == "router.error":
        router = {"error": last.reason, "since": last.at.isoformat(),
                  "router": last.data.get("router")}  # fmt: skip
    return notices, router


def history(store: Store, model: str | None = None, *, verify: bool = False,
            limit: int | None = None) -> dict[str, Any]:  # fmt: skip
    """The audit log (the newest ``limit`` events), and with ``verify`` its chain's check."""
    with store.read() as conn:
        events = audit.list_events(conn, model)
        problems = audit.verify_chain(conn) if verify else []
        checkpoint = audit.latest_checkpoint(conn) if verify else None
        signer = audit.checkpoint_signer(conn, checkpoint)[0] if checkpoint else None
    if limit is not None:
        events = events[-limit:]
    doc: dict[str, Any] = {"events": [e.to_dict() for e in events]}
    if verify:
        doc["chain"] = {
            "ok": not problems,
            "problems": [{"seq": p.seq, "problem": p.problem} for p in problems],
        }
        if checkpoint is not None:
            doc["chain"]["checkpoint"] = {**checkpoint.to_dict(), "signer": signer}
    return doc
