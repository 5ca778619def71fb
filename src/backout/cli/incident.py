"""``backout incident``: the incidents the status page shows, and an incident commander's updates.

Registered on the ``backout`` app by :mod:`backout.cli.main` with one line::

    app.add_typer(incident_app, name="incident")
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

import typer
from rich.table import Table

from backout.cli.output import JsonOpt, out, print_json, settings, short

incident_app = typer.Typer(
    help="Incidents: opened by rollbacks; an incident commander adds public updates.",
    no_args_is_help=True,
)

STATUSES = "investigating, identified, monitoring or resolved"


def _when(at: float) -> str:
    return f"{datetime.fromtimestamp(at, UTC):%Y-%m-%d %H:%M:%S}"


@incident_app.command("update")
def update(
    ctx: typer.Context,
    model: Annotated[str, typer.Argument(help="The model whose open incident to update.")],
    status: Annotated[str, typer.Option("--status", help=f"The new status: {STATUSES}.")],
    message: Annotated[str, typer.Option("--message", help="What the public should know.")],
    json: JsonOpt = False,
) -> None:
    """Add an update, in your words, to MODEL's open incident (``resolved`` closes it)."""
    from backout.control.incidents import Incidents

    s = settings(ctx)
    remote = s.remote()
    if remote is not None:  # --server: the control API checks the caller's right
        doc = remote.post(
            f"/models/{model}/incident/updates", {"status": status, "message": message}
        )
    else:
        doc = Incidents(s.store()).add_update(model, status, message, actor=s.actor).to_dict()
    if json:
        print_json(doc)
        return
    out.print(f"incident {doc['id']} ({model}): {doc['status']} — {short(message, 70)}")


@incident_app.command("list")
def list_incidents(
    ctx: typer.Context,
    model: Annotated[str | None, typer.Argument(help="Only this model's incidents.")] = None,
    open_only: Annotated[bool, typer.Option("--open", help="Only open incidents.")] = False,
    json: JsonOpt = False,
) -> None:
    """Incidents, newest first."""
    from backout.control.incidents import Incidents

    s = settings(ctx)
    if (remote := s.remote()) is not None:  # only the models the caller may read
        found = remote.get("/incidents", model=model, open="true" if open_only else None)
    else:
        found = [i.to_dict() for i in Incidents(s.store()).list(model, open_only=open_only)]
    if json:
        print_json(found)
        return
    t = Table(box=None, header_style="bold")
    for col in ("#", "model", "status", "opened (UTC)", "operation", "latest update"):
        t.add_column(col)
    for i in found:
        latest = i["updates"][-1]["message"] if i["updates"] else ""
        t.add_row(str(i["id"]), i["model"], i["status"], _when(i["opened_at"]),
                  str(i["operation"] or "-"), short(latest, 50))  # fmt: skip
    out.print(t)


@incident_app.command("show")
def show(
    ctx: typer.Context,
    incident_id: Annotated[int, typer.Argument(metavar="INCIDENT", help="The incident's id.")],
    json: JsonOpt = False,
) -> None:
    """One incident's timeline: every update, automatic or by a person."""
    from backout.control.incidents import Incidents

    s = settings(ctx)
    if (remote := s.remote()) is not None:
        doc = remote.get(f"/incidents/{incident_id}")
    else:
        doc = Incidents(s.store()).get(incident_id).to_dict()
    if json:
        print_json(doc)
        return
    out.print(f"incident {doc['id']} ({doc['model']}): {doc['status']} — {doc['title']}",
              markup=False)  # fmt: skip
    for u in doc["updates"]:
        who = "automatic" if u["automatic"] else u["actor"]
        out.print(f"  {_when(u['at'])}  {u['status']:<13} {u['message']}  ({who})", markup=False)
