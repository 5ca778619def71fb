"""Command line for retention: show and set how long data is kept, and prune now.

Mounted on the ``backout`` app by :mod:`backout.cli.main` as ``backout retention``. The
controller of ``backout serve`` prunes on its own, hourly; ``prune`` does it at once (all of
it, batch after batch), optionally signing the event log's checkpoint with an admin's key.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from backout.cli.output import JsonOpt, out, print_json, settings

retention_app = typer.Typer(
    help="How long telemetry, captures, events and notifications are kept; prune now.",
    no_args_is_help=True,
)

_KEEP = "How long to keep them: e.g. 14d, 36h, or 'forever'."


@retention_app.command("show")
def retention_show(ctx: typer.Context, json: JsonOpt = False) -> None:
    """The retention settings."""
    from backout.store import retention

    with settings(ctx).store().read() as conn:
        current = retention.read(conn)
    if json:
        print_json(current.to_dict())
        return
    t = Table(box=None, header_style="bold")
    t.add_column("kind")
    t.add_column("kept for")
    for kind, keep in current.to_dict().items():
        t.add_row(kind, keep)
    out.print(t)


@retention_app.command("set")
def retention_set(
    ctx: typer.Context,
    telemetry: Annotated[str | None, typer.Option(help=f"Telemetry batches. {_KEEP}")] = None,
    captures: Annotated[str | None, typer.Option(help=f"Captured requests. {_KEEP}")] = None,
    events: Annotated[str | None, typer.Option(help=f"Audit events. {_KEEP}")] = None,
    outbox: Annotated[str | None, typer.Option(help=f"Sent notifications. {_KEEP}")] = None,
    json: JsonOpt = False,
) -> None:
    """Change how long each kind of data is kept; the others stay as they are."""
    from backout.errors import ConfigError
    from backout.store import retention

    given = {"telemetry": telemetry, "captures": captures, "events": events, "outbox": outbox}
    changes = {k: retention.parse_keep(k, v) for k, v in given.items() if v is not None}
    if not changes:
        raise ConfigError(
            "nothing to set: give at least one of --telemetry, --captures, --events, --outbox"
        )
    s = settings(ctx)
    current = retention.write(s.store(), actor=s.actor, **changes)
    if json:
        print_json(current.to_dict())
    else:
        out.print("retention: " + ", ".join(f"{k} {v}" for k, v in current.to_dict().items()))


@retention_app.command("prune")
def retention_prune(
    ctx: typer.Context,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Count, remove nothing.")] = False,
    key: Annotated[
        Path | None,
        typer.Option("--key", help="Sign the event checkpoint with this trusted private key."),
    ] = None,
    json: JsonOpt = False,
) -> None:
    """Remove what is past its retention now; events leave a signed checkpoint."""
    from backout.registry.signing import load_private_key
    from backout.store import retention

    s = settings(ctx)
    signer = load_private_key(key) if key is not None else None
    total = retention.PruneReport(dry_run=dry_run)
    while True:
        report = retention.prune(s.store(), signer=signer, actor=s.actor, dry_run=dry_run)
        for kind in retention.KINDS:
            setattr(total, kind, getattr(total, kind) + getattr(report, kind))
        total.checkpoint = report.checkpoint or total.checkpoint
        total.settings = report.settings
        if not report.more or dry_run:
            total.more = report.more
            break
    if json:
        print_json(total.to_dict())
        return
    verb = "would remove" if dry_run else "removed"
    counts = ", ".join(f"{getattr(total, k):,} {k}" for k in retention.KINDS)
    line = f"{verb} {counts}"
    if total.checkpoint is not None:
        line += f"; events now verify from the signed checkpoint at event {total.checkpoint.seq}"
    out.print(line)
