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

    s = settings(ctx)
    if not last and not target.isdigit():
        raise ConfigError(
            f"{target!r} is not an incident id: give one (`backout report 12`) or name the "
            f"model with --last (`backout report {target} --last`)"
        )
    folder = out if out is not None else s.home() / "reports"
    if (remote := s.remote()) is not None:
        bundle = remote.get(f"/models/{target}/report" if last else f"/reports/{int(target)}")
        doc = bundle["report"]
        folder.mkdir(parents=True, exist_ok=True)
        html, md = folder / f"incident-{doc['id']}.html", folder / f"incident-{doc['id']}.md"
        html.write_text(bundle["html"], encoding="utf-8")
        md.write_text(bundle["markdown"], encoding="utf-8")
    else:
        from backout.reports.builder import build_report, latest_incident
        from backout.reports.writer import write_report

        incident = latest_incident(s.store(), target) if last else int(target)
        report = build_report(s.store(), incident)
        html, md = write_report(report, folder)
        doc = report.to_dict()
    if json:
        print_json({"html": str(html), "markdown": str(md), "report": doc})
        return
    console.print(
        f"[bold]incident {doc['id']}[/bold]: {doc['model']} {doc['from_version']} → "
        f"{doc['target']}, {doc['outcome']} ({doc['mode']})",
        markup=True,
    )
    console.print(f"  trigger            {doc['trigger']['summary']}", markup=False)
    console.print(f"  time to detect     {text.duration(doc['time_to_detect'])}")
    console.print(f"  time to recover    {text.duration(doc['time_to_recover'])}")
    console.print(f"  time to verified   {text.duration(doc['time_to_verified'])}")
    console.print(
        f"  requests           {doc['requests_affected']:,} affected, "
        f"{doc['requests_failed']:,} failed"
    )
    console.print(f"report: {html}\nsummary: {md}", markup=False)
