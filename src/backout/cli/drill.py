"""``backout drill MODEL``: a rehearsed incident, and the list of past ones.

For the on-call team: a fault is injected through the running gateway, the policy is left
to recover, and the time to detect and to recover is measured and kept.
"""

from __future__ import annotations

from typing import Annotated

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
    if history:
        past = list_drills(s.store(), model)
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
    result = run_drill(s.store(), s.registry(), model, parse_fault(fault), actor=s.actor, after=wait,
                       timeout=limit, release=release, on_progress=None if json else err.print)  # fmt: skip
    if json:
        print_json(result.to_dict())
    else:
        out.print(
            f"drill {result.id} ({result.fault} on {model}@{result.release}): {result.outcome}; "
            f"time to detect {_secs(result.time_to_detect)}, time to recover {_secs(result.time_to_recover)}, "
            f"{result.affected} request(s) affected, completion criteria "
            + ("held" if result.completion_held else "NOT met")
        )
    if not result.completion_held:
        raise typer.Exit(1)


def _secs(v: float | None) -> str:
    return "-" if v is None else f"{v:.1f} s"
