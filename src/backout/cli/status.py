"""``backout status`` and ``backout history``: the live state and the audit log.

For anyone watching a model: ``status`` shows each model's route table, its running
operation with the last gate, and each release's traffic over a recent window;
``history`` lists the audit events and can verify their hash chain. Releases marked bad
are listed with their evidence, whether or not they take traffic.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from backout.cli.output import JsonOpt, err, out, print_json, settings, short
from backout.cli.release import bad_line


def status(
    ctx: typer.Context,
    model: Annotated[str | None, typer.Argument(help="Only this model.")] = None,
    window: Annotated[
        float, typer.Option(min=1, help="Seconds of telemetry to summarise (at least 1).")
    ] = 60.0,
    json: JsonOpt = False,
) -> None:
    """Live state: route table, and each release's traffic over the last WINDOW seconds."""
    from backout.control.status import model_status, store_round_trip

    s = settings(ctx)
    store_doc: dict[str, Any] | None = None  # measured here, from this host, when local
    if (remote := s.remote()) is not None:
        got = remote.get(f"/models/{model}/status" if model else "/status", window=window)
        docs = [got] if model else got
    else:
        models = [model] if model else s.deployments().models()
        store_doc = store_round_trip(s.store())
        docs = [
            model_status(s.store(), s.controller(), m, window=window) | {"store": store_doc}
            for m in models
        ]
    leader = docs[0]["controller"] if docs else None
    if json:
        print_json(docs if model is None else docs[0])
        return
    if store_doc is not None and store_doc["slow"]:
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
        runbook = d.get("runbook") or {}
        if runbook.get("warning"):
            out.print(f"[yellow]warning[/yellow]: {escape(runbook['warning'])}", markup=True)
        if d.get("incident"):
            inc = d["incident"]
            who = runbook.get("incident_commander")
            out.print(
                f"incident {inc['id']}: {inc['status']}"
                + (f" (incident commander: {escape(who)})" if who else ""),
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
        for line in _trouble(d):
            out.print(line, markup=False)
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
        for mark in d["bad"]:
            out.print(f"{d['model']}@{mark['version']} is marked bad: {bad_line(mark)}")
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
        trouble = d.get("router_trouble") or {}
        if trouble.get("error") and not d["router"]["error"]:
            out.print(_router_line(trouble))
        if d["notices"]["pending"]:
            out.print(_notices_line(d["notices"]))
    if leader is not None or any(d["operation"] for d in docs):
        out.print(_leader_line(leader))


def _leader_line(leader: dict[str, Any] | None) -> str:
    """Who leads the controllers, or that none does (then no operation moves)."""
    if leader is None:
        return (
            "controller: none has run on this store; operations do not move until one runs "
            "(`backout serve`)"
        )
    if leader["live"]:
        since = leader["leading_for_s"]
        return (
            f"controller: {leader['holder']} leads (lease generation {leader['generation']}"
            + (f", for {since:.0f} s" if since is not None else "")
            + ")"
        )
    return (
        f"controller: none leads; the lease of {leader['holder']} ran out "
        f"{-leader['expires_in_s']:.1f} s ago (operations move again once a controller runs)"
    )


def _trouble(doc: dict[str, Any]) -> list[str]:
    """Lines for an external router or telemetry source that is not what it should be."""
    lines = []
    r, t = doc["router"], doc["telemetry"]
    if r["error"]:
        lines.append(f"router {r['kind']}: ERROR {r['error']} (traffic holds still)")
    elif r["kind"] != "gateway" and not r["verified"]:
        served = r["served"]
        what = ", ".join(f"{v} {w:g}%" for v, w in sorted(served.items())) if served else "nothing"
        lines.append(f"router {r['kind']}: serves {what}, not the committed table yet")
    elif r["kind"] != "gateway":
        lines.append(f"router {r['kind']}: serves the committed table (verified)")
    if t["error"]:
        lines.append(f"telemetry {t['kind']}: ERROR {t['error']} (nothing is decided)")
    return lines


def _store_line(doc: dict[str, Any]) -> str:
    return (
        f"store slow: one round trip took {doc['round_trip_ms']:,.0f} ms (over "
        f"{doc['slow_above_ms']:g} ms); the gateway keeps serving what it has, the "
        "controller's steps and every command wait for the store"
    )


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
    from datetime import datetime

    from backout.control.status import history as read_history

    s = settings(ctx)
    if (remote := s.remote()) is not None:
        doc = remote.get(f"/models/{model}/history" if model else "/history", limit=limit)
        if verify:  # the chain is the whole log's
            doc["chain"] = remote.get("/history", verify="true", limit=1)["chain"]
    else:
        doc = read_history(s.store(), model, verify=verify, limit=limit)
    chain = doc.get("chain", {})
    problems = chain.get("problems", [])
    if json:
        print_json(doc)
    else:
        t = Table(box=None, header_style="bold")
        for col in ("#", "at (UTC)", "model", "event", "actor", "reason"):
            t.add_column(col)
        for e in doc["events"]:
            t.add_row(
                str(e["seq"]),
                f"{datetime.fromisoformat(e['at']):%Y-%m-%d %H:%M:%S}",
                e["model"] or "",
                e["kind"],
                e["actor"],
                short(e["reason"], 60),
            )
        out.print(t)
        if verify:
            n = len(doc["events"])
            checkpoint = chain.get("checkpoint")
            if problems:
                for p in problems:
                    err.print(f"event {p['seq']}: {p['problem']}")
            elif checkpoint is not None:
                out.print(
                    f"chain verified from the checkpoint at event {checkpoint['seq']} (signed by "
                    f"{checkpoint['signer']}; events up to {checkpoint['seq']} pruned): {n} event(s), "
                    "hashes intact"
                )
            else:
                out.print(f"chain verified: {n} event(s), hashes intact")
    if problems:
        raise typer.Exit(1)
