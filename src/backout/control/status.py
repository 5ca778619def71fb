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

__all__ = ["history", "model_status"]


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
        "telemetry": seen["telemetry"],
        "bad": [{"version": v, **mark} for v, mark in bad.items()],
        "controller": None if held is None else held.to_dict(time.time()),  # who leads
    } | runbook_view(store, model)  # the runbook's duties, overdue review, open incident


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
