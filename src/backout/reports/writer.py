"""Writing an incident report to disk: the HTML page and the Markdown summary.

For the ``backout report`` command and the demo, and for anyone who holds an
:class:`~backout.reports.model.IncidentReport`: :func:`render_html` makes one
self-contained page (inline CSS, plots embedded as SVG, nothing fetched),
:func:`render_markdown` a short summary for a chat or a ticket, and :func:`write_report`
puts both in a folder. It sits above the renderers, which import only the model.
"""

from __future__ import annotations

from pathlib import Path

from backout.redaction import redact_text
from backout.reports.html import render
from backout.reports.markdown import markdown
from backout.reports.model import IncidentReport

__all__ = ["DEFAULT_FOLDER", "render_html", "render_markdown", "write_report"]

DEFAULT_FOLDER = Path(".backout/reports")


def render_html(report: IncidentReport) -> str:
    """One self-contained HTML page: inline CSS, plots embedded, nothing fetched.

    Like every output, it passes the one redaction: no webhook path, password or token.
    """
    return redact_text(render(report))


def render_markdown(report: IncidentReport) -> str:
    """A short Markdown summary: what happened, the numbers, the decisions, the questions."""
    return redact_text(markdown(report))


def write_report(report: IncidentReport, folder: Path = DEFAULT_FOLDER) -> tuple[Path, Path]:
    """Write ``incident-<id>.html`` and ``incident-<id>.md`` into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    html = folder / f"incident-{report.id}.html"
    md = folder / f"incident-{report.id}.md"
    html.write_text(render_html(report), encoding="utf-8")
    md.write_text(render_markdown(report), encoding="utf-8")
    return html, md
