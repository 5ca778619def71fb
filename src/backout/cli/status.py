"""``backout status`` and ``backout history``: the live state and the audit log.

For anyone watching a model: ``status`` shows each model's route table, its running
operation with the last gate, and each release's traffic over a recent window;
``history`` lists the audit events and can verify their hash chain.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from backout.cli.output import JsonOpt, err, out, print_json, settings, short


def status(
    ctx: typer.Context,
    model: Annotated[str | None, typer.Argument(help="Only this model.")] = None,
    window: Annotated[
        float, typer.Option(min=1, help="Seconds of telemetry to summarise (at least 1).")
    ] = 60.0,
    json: JsonOpt = False,
) -> None:
    """Live state: route table, and each release's traffic over the last WINDOW seconds."""
    import time as _time

    from backout.telemetry.batches import latency_quantile, read_batches, sum_batches
    from backout.traffic.deployments import describe

    s = settings(ctx)
    dep = s.deployments()
    store_doc = _store_round_trip(s.store())
    models = [model] if model else dep.models()
    docs = []
    for m in models:
        table = dep.require(m)
        since = _time.time() - window
        per_release = {
            v: sum_batches(bs) for v, bs in read_batches(s.store(), m, since=since).items()
        }
        releases = []
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
        ctl = s.controller()
        op = ctl.active(m)
        op_doc = None
        if op is not None:
            steps = op.policy.rollout.steps if op.kind == "rollout" else op.policy.rollback.steps
            op_doc = op.to_dict() | {
                "seconds_in_step": round(_time.time() - op.step_started_at, 1),
                "steps": list(steps),
            }
        # With nothing in progress, the operation that ended last says how the model got here.
        last = None if op is not None else next(iter(ctl.operations(m, limit=1)), None)
        notices, router = _notices_and_router(s.store(), m)
        docs.append(
            {
                "model": m,
                "generation": table.generation,
                "routes": describe(table),
                "table": table.to_dict(),
                "releases": releases,
                "operation": op_doc,
                "last_operation": last.to_dict() if last is not None else None,
                "frozen": ctl.frozen(m),
                "notices": notices,
                "router": router,
                "store": store_doc,
            }
        )
    if json:
        print_json(docs if model is None else docs[0])
        return
    if store_doc["slow"]:
        out.print(_store_line(store_doc))
    for d in docs:
        out.print(
            f"[bold]{escape(d['routes'])}[/bold]  (generation {d['generation']})", markup=True
        )
        if d["frozen"]:
            out.print(
                f"[bold red]FROZEN[/bold red]: {escape(str(d['frozen']))} — lift with `backout unfreeze {d['model']} --reason ...`",
                markup=True,
            )
        op = d["operation"]
        if op:
            out.print(
                f"{op['kind']} {op['stable']} → {op['target']}: [bold]{op['phase']}[/bold], step {op['step'] + 1} of "
                f"{len(op['steps'])}, {op['seconds_in_step']:g} s in step",
                markup=True,
            )
            gate = op["state"].get("last_gate")
            if gate:
                out.print(
                    f"  gate ({gate['alpha']:g} family-wise): [bold]{escape(str(gate['verdict']))}[/bold]",
                    markup=True,
                )
                for j in gate.get("judgements", []):
                    out.print(f"    {j['judge']:<14} {j['verdict']:<12} {j['summary']}")
        elif (
            (last := d["last_operation"])
            and last["ended_at"] is not None
            and last["stable"] != last["target"]
        ):
            # (a first deploy, stable == target, replaced nothing: not worth a line)
            out.print(_ended_line(last))
        t = Table(box=None, header_style="bold")
        for col in ("release", "weight", f"requests/{window:g}s", "errors", "p50 ms", "p99 ms"):
            t.add_column(col, justify="right" if col != "release" else "left")
        for r in d["releases"]:
            t.add_row(
                r["version"], f"{r['weight']:g}%", f"{r['requests']:,}", _errors(r),
                "-" if r["p50_ms"] is None else f"{r['p50_ms']:.2f}",
                "-" if r["p99_ms"] is None else f"{r['p99_ms']:.2f}",
            )  # fmt: skip
        out.print(t)
        refused = [
            f"{r['version']} {_kinds(r['client_errors'])}"
            for r in d["releases"]
            if r["client_errors"]
        ]
        if refused:
            out.print(
                "client errors (refused as the callers' fault, not counted above): "
                + "; ".join(refused)
            )
        if d["router"]["error"]:
            out.print(_router_line(d["router"]))
        if d["notices"]["pending"]:
            out.print(_notices_line(d["notices"]))


# One round trip to the store above this is worth a line: the gateway serves from memory and
# does not wait for the store, but the controller's ticks, its lease and every command do.
SLOW_STORE_MS = 250.0


def _store_round_trip(store: Any) -> dict[str, Any]:
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


def _store_line(doc: dict[str, Any]) -> str:
    return (
        f"store slow: one round trip took {doc['round_trip_ms']:,.0f} ms (over "
        f"{doc['slow_above_ms']:g} ms); the gateway keeps serving what it has, the "
        "controller's steps and every command wait for the store"
    )


def _notices_and_router(store: Any, model: str) -> tuple[dict[str, Any], dict[str, Any]]:
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


def _router_line(router: dict[str, Any]) -> str:
    return f"router trouble since {router['since'][:19].replace('T', ' ')} UTC: {router['error']}"


def _notices_line(notices: dict[str, Any]) -> str:
    """``2 notices not delivered yet; oldest: phase to webhook http://h/… after 3 attempts:
    HTTP 500``."""
    n = notices["pending"]
    line = f"{n} notice{'s' if n != 1 else ''} not delivered yet"
    if notices["oldest"]:
        o = notices["oldest"][0]
        line += f"; oldest: {o['kind']} to {o['channel']} {o['target']}"
        if o["attempts"]:
            line += f" after {o['attempts']} attempt{'s' if o['attempts'] != 1 else ''}"
        line += f": {o['last_error']}" if o["last_error"] else " (not tried yet)"
    return line


def _ended_line(op: dict[str, Any]) -> str:
    """``last rollback 1.1.0 → 1.0.0: rolled-back 12 s ago (operation 7): why``."""
    import time

    ago = max(0.0, time.time() - op["ended_at"])
    when = (
        f"{ago:.0f} s ago"
        if ago < 120
        else f"{ago / 60:.0f} min ago"
        if ago < 7200
        else f"{ago / 3600:.0f} h ago"
    )
    return (
        f"last {op['kind']} {op['stable']} → {op['target']}: {op['outcome']} {when} "
        f"(operation {op['id']}): {op['reason']}"
    )


def _errors(release: dict[str, Any]) -> str:
    """The error rate, and its kinds when there are errors (``load``: it cannot be loaded)."""
    rate = release["error_rate"]
    if rate is None:
        return "-"
    kinds = release["errors"]
    return (
        f"{rate:.2%} ({', '.join(sorted(kinds, key=lambda k: -kinds[k]))})"
        if kinds
        else f"{rate:.2%}"
    )


def _kinds(counts: dict[str, int]) -> str:
    """``200 input, 3 malformed``: counts by kind, most first."""
    return ", ".join(f"{n:,} {k}" for k, n in sorted(counts.items(), key=lambda kv: -kv[1]))


def history(
    ctx: typer.Context,
    model: Annotated[str | None, typer.Argument(help="Only this model's events.")] = None,
    verify: Annotated[
        bool, typer.Option("--verify", help="Check the hash chain of the whole log.")
    ] = False,
    limit: Annotated[int | None, typer.Option(min=1, help="Only the newest N events.")] = None,
    json: JsonOpt = False,
) -> None:
    """The audit log: who did what, when and why. --verify checks its hash chain."""
    from backout.store import audit

    store = settings(ctx).store()
    with store.read() as conn:
        events = audit.list_events(conn, model)
        problems = audit.verify_chain(conn) if verify else []
        checkpoint = audit.latest_checkpoint(conn) if verify else None
        signer = audit.checkpoint_signer(conn, checkpoint)[0] if checkpoint else None
    if limit is not None:
        events = events[-limit:]
    if json:
        doc: dict[str, Any] = {"events": [e.to_dict() for e in events]}
        if verify:
            doc["chain"] = {
                "ok": not problems,
                "problems": [{"seq": p.seq, "problem": p.problem} for p in problems],
            }
            if checkpoint is not None:
                doc["chain"]["checkpoint"] = {**checkpoint.to_dict(), "signer": signer}
        print_json(doc)
    else:
        t = Table(box=None, header_style="bold")
        for col in ("#", "at (UTC)", "model", "event", "actor", "reason"):
            t.add_column(col)
        for e in events:
            t.add_row(
                str(e.seq),
                f"{e.at:%Y-%m-%d %H:%M:%S}",
                e.model or "",
                e.kind,
                e.actor,
                short(e.reason, 60),
            )
        out.print(t)
        if verify:
            if problems:
                for p in problems:
                    err.print(f"event {p.seq}: {p.problem}")
            elif checkpoint is not None:
                out.print(
                    f"chain verified from the checkpoint at event {checkpoint.seq} (signed by "
                    f"{signer}; events up to {checkpoint.seq} pruned): {len(events)} event(s), "
                    "hashes intact"
                )
            else:
                out.print(f"chain verified: {len(events)} event(s), hashes intact")
    if problems:
        raise typer.Exit(1)
