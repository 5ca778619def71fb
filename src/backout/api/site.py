"""The people's side of the API process: the status page, the dashboard and incident routes.

:func:`mount_pages` adds them to the app :func:`backout.api.app.create_app` builds (one
line there): ``/status`` (public), ``/dashboard`` (login with a token), ``/static``, and the
incident routes under ``/api/v1``.
"""

from __future__ import annotations

from fastapi import FastAPI

__all__ = ["mount_pages"]


def mount_pages(app: FastAPI, prefix: str) -> None:
    """Mount the status page, the dashboard, their static files and the incident routes."""
    from backout.api import dashboard, incident_routes, status_page
    from backout.api.pages import static_files

    app.include_router(status_page.routes)
    app.include_router(dashboard.routes)
    app.include_router(incident_routes.routes, prefix=prefix)
    app.mount("/static", static_files(), name="static")
