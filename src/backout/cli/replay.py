"""``backout replay MODEL@VERSION``: captured production requests, replayed against a release.

For the releaser who wants proof before traffic moves: the replay's errors, contract
violations, agreement, accuracy, latency and throughput, compared with the release's
envelope and the limits of the model's policy.
"""

from __future__ import annotations

import time
from typing import Annotated

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from backout.cli.output import JsonOpt, err, out, print_json, settings
from backout.errors import ConfigError


def _since(value: str | None) -> float | None:
    if value is None:
        return None
    from backout.control.policy import parse_duration

    try:
        return time.time() - parse_duration(value)
    except ValueError as exc:
        raise ConfigError(f"--since {value!r} is not a duration such as 10m or 2h") from exc


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

    s = settings(ctx)
    model, version = parse_ref(ref)
    if (remote := s.remote()) is not None:  # replayed where the captures and artifacts are
        if url is not None:
            raise ConfigError("--url replays through a gateway from here: drop --server to use it")
        ago = None if since is None else time.time() - (_since(since) or 0.0)
        d = remote.post(f"/models/{model}/replay",
                        {"version": version, "since_s": ago, "limit": limit})  # fmt: skip
    else:
        require_captures(s.store(), model)
        policy = s.controller().policy_for(model).replay
        limits = Limits(max_error_rate=policy.max_error_rate, max_latency_ratio=policy.max_latency_ratio,
                        min_agreement=policy.min_agreement)  # fmt: skip
        with Progress(
            TextColumn("replaying {task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
            console=err, transient=True, disable=json,
        ) as progress:  # fmt: skip
            task = progress.add_task(ref, total=None)
            d = run_replay(
                s.store(), s.registry(), s.registry().blobs, ref, since=_since(since), limit=limit, url=url,
                limits=limits, progress=lambda done, total: progress.update(task, completed=done, total=total),
            ).to_dict()  # fmt: skip
    if json:
        print_json(d)
    else:
        t = Table(box=None, show_header=False)
        t.add_column(style="bold")
        t.add_column()
        env = d["envelope"] or {}
        rows = [
            ("replayed", f"{d['replayed']:,} of {d['captured']:,} captured ({d['skipped']} unreadable, skipped)"),
            ("failed", f"{d['errors']} errors, {d['rejected']} rejected as bad input"),
            ("contract", f"{d['contract_violations']} answers broke the output contract"),
            ("agreement", "-" if d["agreement"] is None else f"{d['agreement']:.1%} with the live answers"),
            ("accuracy", "-" if d["accuracy"] is None else f"{d['accuracy']:.1%} on {d['labelled']} labelled"),
            ("latency", f"p50 {_ms(d['p50_ms'])}, p99 {_ms(d['p99_ms'])}"
                        + (f" (envelope p99 {_ms(env.get('p99_ms'))})" if env else " (no envelope recorded)")),
            ("throughput", f"{d['throughput_rps']:,.0f} requests/s"),
        ]  # fmt: skip
        for k, v in rows:
            t.add_row(k, v)
        out.print(t)
        out.print(("[green]within envelope[/green]" if d["within_envelope"] else "[red]outside envelope[/red]: ")
                  + escape("; ".join(d["findings"])), markup=True)  # fmt: skip
    if not d["within_envelope"]:
        raise typer.Exit(1)


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f} ms"
