"""What the HTML pages share: one Jinja2 environment (autoescaped), headers, static files.

For :mod:`backout.api.status_page` and :mod:`backout.api.dashboard`. Every value a template
shows is escaped by Jinja2's autoescape; the pages' scripts set text with ``textContent``
only, and the Content-Security-Policy allows scripts from this origin alone.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi.responses import HTMLResponse
from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.staticfiles import StaticFiles

__all__ = ["HEADERS", "env", "fragment", "page", "static_files"]

env = Environment(
    loader=PackageLoader("backout.api", "templates"),
    autoescape=select_autoescape(["html", "xml"], default=True),
    trim_blocks=True,
    lstrip_blocks=True,
)


def _when(at: float | None) -> str:
    if at is None:
        return "-"
    return f"{datetime.fromtimestamp(at, UTC):%Y-%m-%d %H:%M:%S} UTC"


env.filters["when"] = _when

# No inline script, no framing, no sniffing: a hostile name in the store stays text.
HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self' "
    "'unsafe-inline'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; "
    "form-action 'self'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


def page(template: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    """Render ``template`` with ``context`` (escaped) as an HTML response."""
    html = env.get_template(template).render(**context)
    return HTMLResponse(html, status_code=status_code, headers=HEADERS)


def fragment(template: str, **context: Any) -> str:
    """Render a part of a page (escaped like a page), for a stream to send."""
    return env.get_template(template).render(**context)


def static_files() -> StaticFiles:
    """The pages' scripts and style, served under ``/static``."""
    return StaticFiles(packages=[("backout.api", "static")])
