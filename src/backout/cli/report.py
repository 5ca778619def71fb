"""``backout report INCIDENT`` and ``backout report MODEL --last``.

Registered on the ``backout`` app by :mod:`backout.cli.main` with one line::

    app.command("report")(report_command)
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from backout.cli.output import JsonOpt, print_json, settings
from backout.cli.output import out as console
from backout.errors import ConfigError


def report_command(
    ctx: typer.Context,
    target: Annotated[
        str,
        typer.Argument(metavar="INCIDENT|MODEL", help="An incident id, or a model with --last."),
    ],
    last: Annotated[bool, typer.Option("--last", help="The model's newest incident.")] = False,
    out: Annotated[
        Path | None,
        typer.Option("--out", help="Folder for the report (default: .backout/reports)."),
    ] = None,
    json: JsonOpt = False,
) -> None:
    """Write an incident report: a self-contained HTML page and a Markdown summary."""
    from backout.reports import markdown as text
    from backout.reports.builder import build_report, latest_incident
    from backout.reports.writer import write_report

    s = settings(ctx)
    if last:
        incident = latest_incident(s.store(), target)
    elif target.isdigit():
        incident = int(target)
    else:
        raise ConfigError(
            f"{target!r} is not an incident id: give one (`backout report 12`) or name the "
            f"model with --last (`backout report {target} --last`)"
        )
    report = build_report(s.store(), incident)
    html, md = write_report(report, out if out is not None else s.home() / "reports")
    if json:
        print_json({"html": str(html), "markdown": str(md), "report": report.to_dict()})
        return
    console.print(
        f"[bold]incident {report.id}[/bold]: {report.model} {report.from_version} → "
        f"{report.target}, {report.outcome} ({report.mode})",
        markup=True,
    )
    console.print(f"  trigger            {report.trigger.summary}", markup=False)
    console.print(f"  time to detect     {text.duration(report.time_to_detect)}")
    console.print(f"  time to recover    {text.duration(report.time_to_recover)}")
    console.print(f"  time to verified   {text.duration(report.time_to_verified)}")
    console.print(
        f"  requests           {report.requests_affected:,} affected, "
        f"{report.requests_failed:,} failed"
    )
    console.print(f"report: {html}\nsummary: {md}", markup=False)
