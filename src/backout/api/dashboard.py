"""The live dashboard: ``/dashboard``, server-rendered pages with a little JavaScript.

For the people running an incident. A token pasted into the login form is kept in an
HttpOnly cookie (never shown back, never readable by scripts); every page and the stream
check it like any API call, so a person sees only the models they may read and only the
buttons their role allows. Pages:

* ``/dashboard`` — every model: phase, weights, known-good releases, pins, public status;
* ``/dashboard/models/{model}`` — one model: each judge's evidence, weights and charts
  updating every second over server-sent events (``.../stream``), the decision timeline,
  triggers, drills, consumers and compatibility, and the action buttons (each asks for
  confirmation naming what will happen, then calls the control API);
* ``/dashboard/incidents/{id}`` — an incident's timeline, a link to its report, and the
  incident commander's update form.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any
from urllib.parse import parse_qs

import orjson
from anyio import to_thread
from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.security import HTTPAuthorizationCredentials
from sse_starlette.sse import EventSourceResponse

from backout.api.auth import COOKIE, Principal, authorize, current_principal
from backout.api.dashboard_data import change_marker, model_live, model_page, overview
from backout.api.pages import fragment, page
from backout.api.roles import Right
from backout.api.state import ApiState, api_state
from backout.errors import BackoutError, Unauthenticated

__all__ = ["routes"]

routes = APIRouter(prefix="/dashboard", tags=["dashboard"], include_in_schema=False)
State = Annotated[ApiState, Depends(api_state)]
COOKIE_MAX_AGE = 12 * 3600
TICK_S = 0.2  # how often a stream looks for a new decision
FULL_S = 1.0  # and sends the evidence anyway
OVERVIEW_S = 5.0  # and the overview's rows (weights, public status) anyway


def _viewer(request: Request, st: ApiState) -> Principal | None:
    """The person behind the cookie (or a bearer token, for scripts), or None: the page then
    sends them to log in."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    creds = (
        HTTPAuthorizationCredentials(scheme="Bearer", credentials=token.strip())
        if scheme.lower() == "bearer" and token.strip()
        else None
    )
    if creds is None and not request.cookies.get(COOKIE):
        return None
    try:
        return current_principal(request, creds, st)
    except Unauthenticated:
        return None


def _login_redirect() -> RedirectResponse:
    return RedirectResponse("/dashboard/login", status_code=303)


@routes.get("/login", response_class=HTMLResponse)
def login_form(request: Request) -> HTMLResponse:
    return page("login.html", error=None)


@routes.post("/login", response_class=HTMLResponse)
async def login(request: Request, st: State) -> Response:
    """Check the pasted token like any API call; keep it in an HttpOnly cookie."""
    form = parse_qs((await request.body())[:16384].decode("utf-8", "replace"))
    token = (form.get("token") or [""])[0].strip()
    try:
        creds = HTTPAuthorizationCredentials(scheme="Bearer", credentials=token)
        await to_thread.run_sync(current_principal, request, creds, st)  # 401 unless valid
    except Unauthenticated as exc:
        return page("login.html", status_code=401, error=exc.message)
    response = RedirectResponse("/dashboard", status_code=303)
    response.set_cookie(COOKIE, token, max_age=COOKIE_MAX_AGE, httponly=True, samesite="strict",
                        secure=request.url.scheme == "https", path="/")  # fmt: skip
    return response


@routes.post("/logout")
def logout() -> RedirectResponse:
    response = _login_redirect()
    response.delete_cookie(COOKIE, path="/")
    return response


@routes.get("", response_class=HTMLResponse)
def models(request: Request, st: State) -> Response:
    who = _viewer(request, st)
    if who is None:
        return _login_redirect()
    return page("dashboard.html", who=who, rows=overview(st, who))


@routes.get("/stream")
async def models_stream(request: Request, st: State) -> EventSourceResponse:
    """Server-sent events for the overview: its rows (HTML, rendered and escaped here like
    the page itself) at once when a decision lands, else every ``OVERVIEW_S`` seconds."""
    who = await to_thread.run_sync(_viewer, request, st)
    if who is None:
        raise Unauthenticated("log in at /dashboard/login")
    principal = who

    def rows() -> str:
        return fragment("_models_rows.html", rows=overview(st, principal))

    async def events() -> AsyncIterator[dict[str, Any]]:
        seen: tuple[int, float] | None = None
        sent_at = 0.0
        while not await request.is_disconnected():
            marker = await to_thread.run_sync(change_marker, st.store)
            if marker != seen or time.monotonic() - sent_at >= OVERVIEW_S:
                html = await to_thread.run_sync(rows)
                seen, sent_at = marker, time.monotonic()
                yield {"event": "rows", "data": html}
            await asyncio.sleep(TICK_S)

    return EventSourceResponse(events(), ping=15, headers={"Cache-Control": "no-store"})


def _checked(request: Request, st: ApiState, model: str) -> Principal | None:
    who = _viewer(request, st)
    if who is not None:
        authorize(request, who, Right.READ, model)
        st.controller.deployments.require(model)
    return who


@routes.get("/models/{model}", response_class=HTMLResponse)
def model_view(model: str, request: Request, st: State) -> Response:
    try:
        who = _checked(request, st, model)
    except BackoutError as exc:
        return page("error.html", status_code=exc.http_status if exc.http_status < 500 else 424,
                    message=exc.message)  # fmt: skip
    if who is None:
        return _login_redirect()
    doc = model_page(st, who, model)
    return page("model.html", who=who, d=doc, initial=orjson.dumps(doc).decode())


@routes.get("/models/{model}/live")
def model_json(model: str, request: Request, st: State) -> JSONResponse:
    """The live view once, as JSON (what the stream sends each second)."""
    who = _checked(request, st, model)
    if who is None:
        raise Unauthenticated("log in at /dashboard/login")
    return JSONResponse(model_live(st, who, model))


@routes.get("/models/{model}/stream")
async def model_stream(model: str, request: Request, st: State) -> EventSourceResponse:
    """Server-sent events: the live view at once when a decision lands, else every second."""
    who = await to_thread.run_sync(_checked, request, st, model)
    if who is None:
        raise Unauthenticated("log in at /dashboard/login")
    principal = who

    async def events() -> AsyncIterator[dict[str, Any]]:
        seen: tuple[int, float] | None = None
        sent_at = 0.0
        while not await request.is_disconnected():
            marker = await to_thread.run_sync(change_marker, st.store)
            if marker != seen or time.monotonic() - sent_at >= FULL_S:
                doc = await to_thread.run_sync(lambda: model_live(st, principal, model))
                seen, sent_at = marker, time.monotonic()
                yield {"event": "live", "data": orjson.dumps(doc).decode()}
            await asyncio.sleep(TICK_S)

    return EventSourceResponse(events(), ping=15, headers={"Cache-Control": "no-store"})


@routes.get("/incidents/{incident_id}", response_class=HTMLResponse)
def incident_view(incident_id: int, request: Request, st: State) -> Response:
    from backout.api.incident_routes import may_update
    from backout.control.incidents import Incidents

    who = _viewer(request, st)
    if who is None:
        return _login_redirect()
    try:
        incident = Incidents(st.store).get(incident_id)
        authorize(request, who, Right.READ, incident.model)
    except BackoutError as exc:
        return page("error.html", status_code=exc.http_status if exc.http_status < 500 else 424,
                    message=exc.message)  # fmt: skip
    report = (
        f"/api/v1/models/{incident.model}/incidents/{incident.operation_id}/report.html"
        if incident.operation_id is not None
        else None
    )
    return page("incident.html", who=who, i=incident, report=report,
                can_update=may_update(who, st, incident.model))  # fmt: skip
