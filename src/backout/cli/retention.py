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

    s = settings(ctx)
    if (remote := s.remote()) is not None:
        doc = remote.get("/retention")
    else:
        with s.store().read() as conn:
            doc = retention.read(conn).to_dict()
    if json:
        print_json(doc)
        return
    t = Table(box=None, header_style="bold")
    t.add_column("kind")
    t.add_column("kept for")
    for kind, keep in doc.items():
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
    if (remote := s.remote()) is not None:  # checked here too, for the same one line
        doc = remote.put("/retention", {k: v for k, v in given.items() if v is not None})
    else:
        doc = retention.write(s.store(), actor=s.actor, **changes).to_dict()
    if json:
        print_json(doc)
    else:
        out.print("retention: " + ", ".join(f"{k} {v}" for k, v in doc.items()))


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
    from backout.errors import ConfigError
    from backout.registry.signing import load_private_key
    from backout.store import retention

    s = settings(ctx)
    if (remote := s.remote()) is not None:
        if key is not None:  # a private key never leaves this machine
            raise ConfigError(
                "--key signs where the store is: run `backout retention prune --key` there, "
                "or leave --key out to sign with the store's own checkpoint key"
            )
        doc = remote.post("/retention/prune", {"dry_run": dry_run})
    else:
        signer = load_private_key(key) if key is not None else None
        doc = retention.prune_all(
            s.store(), signer=signer, actor=s.actor, dry_run=dry_run
        ).to_dict()
    if json:
        print_json(doc)
        return
    verb = "would remove" if dry_run else "removed"
    counts = ", ".join(f"{doc[k]:,} {k}" for k in retention.KINDS)
    line = f"{verb} {counts}"
    if doc["checkpoint"] is not None:
        line += (
            f"; events now verify from the signed checkpoint at event {doc['checkpoint']['seq']}"
        )
    out.print(line)
