"""Command line for compatibility and proof: consumers, compat, replay.

Mounted on the main ``backout`` app by :mod:`backout.cli.app`.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from backout.cli.app import JsonOpt, _print_json, _settings, app, err, out
from backout.errors import ConfigError

consumers_app = typer.Typer(
    help="Register the consumers of a model: what they send and read.", no_args_is_help=True
)
app.add_typer(consumers_app, name="consumers")


@consumers_app.command("add")
def consumers_add(
    ctx: typer.Context,
    file: Annotated[
        Path, typer.Argument(help="Consumer contract (YAML): name, model, sends, reads.")
    ],
    json: JsonOpt = False,
) -> None:
    """Register (or update) a consumer from its contract file."""
    from backout.proof.consumers import load_consumer_file, register_consumer

    s = _settings(ctx)
    consumer = load_consumer_file(file)
    created = register_consumer(s.store(), consumer, actor=s.actor)
    if json:
        _print_json({"created": created, **consumer.to_dict()})
    else:
        out.print(
            f"consumer {consumer.name} of {consumer.model} {'registered' if created else 'updated'}"
        )


@consumers_app.command("list")
def consumers_list(
    ctx: typer.Context,
    model: Annotated[str, typer.Argument(help="Model name.")],
    json: JsonOpt = False,
) -> None:
    """List a model's consumers with the fields they send and read."""
    from backout.proof.consumers import list_consumers

    consumers = list_consumers(_settings(ctx).store(), model)
    if json:
        _print_json([c.to_dict() for c in consumers])
        return
    if not consumers:
        out.print(f"{model} has no registered consumers: add one with `backout consumers add FILE`")
        return
    t = Table(box=None, header_style="bold")
    for col in ("consumer", "owner", "sends", "reads"):
        t.add_column(col)
    for c in consumers:
        t.add_row(c.name, c.owner or "-", ", ".join(c.sends) or "-", ", ".join(c.reads) or "-")
    out.print(t)


@consumers_app.command("remove")
def consumers_remove(
    ctx: typer.Context,
    model: Annotated[str, typer.Argument(help="Model name.")],
    name: Annotated[str, typer.Argument(help="Consumer name.")],
) -> None:
    """Remove a registered consumer."""
    from backout.proof.consumers import remove_consumer

    s = _settings(ctx)
    remove_consumer(s.store(), model, name, actor=s.actor)
    out.print(f"consumer {name} of {model} removed")


@app.command()
def compat(
    ctx: typer.Context,
    live: Annotated[str, typer.Argument(help="MODEL@A: the release that takes traffic now.")],
    target: Annotated[str, typer.Argument(help="MODEL@B: the release that would take it.")],
    json: JsonOpt = False,
) -> None:
    """Can B take A's live traffic? Field by field, against every registered consumer.

    Exit 0 when compatible, 1 when anything breaks.
    """
    from backout.control.preflight import compat_report
    from backout.proof.compat import COLUMNS
    from backout.registry.manifest import parse_ref

    s = _settings(ctx)
    (model, a), (model_b, b) = parse_ref(live), parse_ref(target)
    if model != model_b:
        raise ConfigError(f"{live} and {target} are releases of different models")
    report = compat_report(s.store(), s.registry(), model, a, b)
    if json:
        _print_json(report.to_dict())
    else:
        out.print(report.summary())
        rows = report.rows()
        if rows:
            t = Table(box=None, header_style="bold")
            for col in COLUMNS:
                t.add_column(col)
            for row in rows:
                t.add_row(*row)
            out.print(t)
    if not report.compatible:
        raise typer.Exit(1)


def _since(value: str | None) -> float | None:
    if value is None:
        return None
    from backout.control.policy import parse_duration

    try:
        return time.time() - parse_duration(value)
    except ValueError as exc:
        raise ConfigError(f"--since {value!r} is not a duration such as 10m or 2h") from exc


@app.command()
def replay(
    ctx: typer.Context,
    ref: Annotated[str, typer.Argument(help="MODEL@VERSION to replay captured traffic against.")],
    since: Annotated[
        str | None, typer.Option(help="Only requests captured this recently (e.g. 10m).")
    ] = None,
    limit: Annotated[
        int | None, typer.Option(min=1, help="At most this many requests (newest).")
    ] = None,
    url: Annotated[
        str | None, typer.Option(help="Replay through a running gateway instead of in-process.")
    ] = None,
    json: JsonOpt = False,
) -> None:
    """Replay captured production requests against a release and compare with its envelope.

    Exit 1 when the release falls outside its envelope by more than the policy allows.
    """
    from backout.proof.replay import Limits, require_captures
    from backout.proof.replay import replay as run_replay
    from backout.registry.manifest import parse_ref

    s = _settings(ctx)
    model, _ = parse_ref(ref)
    require_captures(s.store(), model)
    policy = s.controller().policy_for(model).replay
    limits = Limits(max_error_rate=policy.max_error_rate, max_latency_ratio=policy.max_latency_ratio,
                    min_agreement=policy.min_agreement)  # fmt: skip
    with Progress(
        TextColumn("replaying {task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
        console=err, transient=True, disable=json,
    ) as progress:  # fmt: skip
        task = progress.add_task(ref, total=None)
        report = run_replay(
            s.store(), s.registry(), s.registry().blobs, ref, since=_since(since), limit=limit, url=url,
            limits=limits, progress=lambda done, total: progress.update(task, completed=done, total=total),
        )  # fmt: skip
    if json:
        _print_json(report.to_dict())
    else:
        d = report.to_dict()
        t = Table(box=None, show_header=False)
        t.add_column(style="bold")
        t.add_column()
        env = d["envelope"] or {}
        rows = [
            ("replayed", f"{report.replayed:,} of {report.captured:,} captured ({report.skipped} unreadable, skipped)"),
            ("failed", f"{report.errors} errors, {report.rejected} rejected as bad input"),
            ("contract", f"{report.contract_violations} answers broke the output contract"),
            ("agreement", "-" if report.agreement is None else f"{report.agreement:.1%} with the live answers"),
            ("accuracy", "-" if report.accuracy is None else f"{report.accuracy:.1%} on {report.labelled} labelled"),
            ("latency", f"p50 {_ms(d['p50_ms'])}, p99 {_ms(d['p99_ms'])}"
                        + (f" (envelope p99 {_ms(env.get('p99_ms'))})" if env else " (no envelope recorded)")),
            ("throughput", f"{report.throughput_rps:,.0f} requests/s"),
        ]  # fmt: skip
        for k, v in rows:
            t.add_row(k, v)
        out.print(t)
        out.print(("[green]within envelope[/green]" if report.within_envelope else "[red]outside envelope[/red]: ")
                  + "; ".join(report.judge()))  # fmt: skip
    if not report.within_envelope:
        raise typer.Exit(1)


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f} ms"


@app.command()
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

    s = _settings(ctx)
    if history:
        past = list_drills(s.store(), model)
        if json:
            _print_json(past)
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
        _print_json(result.to_dict())
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


@app.command()
def demo(
    keep: Annotated[
        bool, typer.Option("--keep", help="Leave the gateway running afterwards.")
    ] = False,
    home: Annotated[Path, typer.Option(help="Workspace for the demo (wiped first).")] = Path(
        ".backout/demo"
    ),
) -> None:
    """Run the whole story on the embedded default: rollout, a caught regression, a refused
    breaking release, a drill, and an incident report."""
    from backout.cli.demo_runner import run_demo

    raise typer.Exit(run_demo(out, home, keep=keep))
