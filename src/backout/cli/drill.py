"""``backout drill MODEL``: a rehearsed incident, and the list of past ones.

For the on-call team: a fault is injected through the running gateway, the policy is left
to recover, and the time to detect and to recover is measured and kept.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table

from backout.cli.output import JsonOpt, err, out, print_json, settings
from backout.errors import ConfigError


def drill(
    ctx: typer.Context,
    model: Annotated[str, typer.Argument(help="Model whose live release gets the fault.")],
    fault: Annotated[
        str | None, typer.Option(help="latency=+200ms | errors=5% | nan=1% | crash")
    ] = None,
    after: Annotated[str, typer.Option(help="Wait this long before injecting (e.g. 30s).")] = "0s",
    timeout: Annotated[
        str, typer.Option(help="Give up (and lift the fault) after this long.")
    ] = "3m",
    release: Annotated[
        str | None, typer.Option(help="Fault this release instead of the one with most traffic.")
    ] = None,
    history: Annotated[
        bool, typer.Option("--history", help="List past drills of MODEL instead of running one.")
    ] = False,
    json: JsonOpt = False,
) -> None:
    """Rehearse an incident: inject a fault through the gateway and measure recovery.

    Needs `backout serve` running with traffic. Exit 1 unless the policy recovered fully.
    """
    from backout.control.drills import list_drills, run_drill
    from backout.control.policy import parse_duration
    from backout.traffic.faults import parse_fault

    s = settings(ctx)
    remote = s.remote()
    if history:
        past = remote.get(f"/models/{model}/drills") if remote else list_drills(s.store(), model)
        if json:
            print_json(past)
            return
        if not past:
            out.print(
                f"no drills of {model} yet: run one with `backout drill {model} --fault errors=5%`"
            )
            return
        t = Table(box=None, header_style="bold")
        for col in ("drill", "fault", "release", "outcome", "detect", "recover", "affected"):
            t.add_column(col)
        for d in past:
            t.add_row(str(d["id"]), d.get("fault", ""), d.get("release", ""), d.get("outcome", ""),
                      _secs(d.get("time_to_detect_s")), _secs(d.get("time_to_recover_s")),
                      str(d.get("requests_affected", "")))  # fmt: skip
        out.print(t)
        return
    if fault is None:
        raise ConfigError(
            "say which fault to inject: --fault latency=+200ms | errors=5% | nan=1% | crash"
        )
    try:
        wait, limit = parse_duration(after), parse_duration(timeout)
    except ValueError as exc:
        raise ConfigError(f"--after/--timeout: {exc}") from exc
    if remote is not None:
        doc = _remote_drill(remote, model, fault, wait, limit, release, quiet=json)
    else:
        doc = run_drill(s.store(), s.registry(), model, parse_fault(fault), actor=s.actor, after=wait,
                        timeout=limit, release=release,
                        on_progress=None if json else err.print).to_dict()  # fmt: skip
    if json:
        print_json(doc)
    else:
        out.print(
            f"drill {doc['id']} ({doc['fault']} on {model}@{doc['release']}): {doc['outcome']}; "
            f"time to detect {_secs(doc['time_to_detect_s'])}, time to recover {_secs(doc['time_to_recover_s'])}, "
            f"{doc['requests_affected']} request(s) affected, completion criteria "
            + ("held" if doc["completion_held"] else "NOT met")
        )
    if not doc["completion_held"]:
        raise typer.Exit(1)


def _remote_drill(remote: Any, model: str, fault: str, wait: float, limit: float,
                  release: str | None, *, quiet: bool) -> dict[str, Any]:  # fmt: skip
    """A drill through the control API: the API runs it on; this waits for its result."""
    import time

    from backout.errors import BackoutError

    before = {d["id"] for d in remote.get(f"/models/{model}/drills")}
    remote.post(f"/models/{model}/drills", {"fault": fault, "after_s": wait, "timeout_s": limit,
                                            "release": release})  # fmt: skip
    if not quiet:
        err.print(f"drill of {model} started on the server; waiting for its result")
    deadline = time.monotonic() + wait + limit + 60
    while time.monotonic() < deadline:
        for d in remote.get(f"/models/{model}/drills"):
            if d["id"] not in before and "outcome" in d:
                return dict(d)
        time.sleep(1.0)
    raise BackoutError(
        f"the drill of {model} gave no result in time: see `backout drill {model} --history`"
    )


def _secs(v: float | None) -> str:
    return "-" if v is None else f"{v:.1f} s"
