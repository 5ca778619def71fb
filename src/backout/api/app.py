"""The control API's application: :func:`create_app`, its routers and its error handling.

The interface, for everyone who builds on it (the dashboard, the status page, the CLI's
remote mode)::

    from backout.api.app import create_app
    app = create_app(store_url, artifacts=Path(...), oidc=OidcConfig(...) or None)

* Every route is under ``/api/v1`` (:data:`PREFIX`); the OpenAPI document is
  ``/api/v1/openapi.json``. A layer that adds routes appends its ``APIRouter`` to
  :data:`ROUTERS` (mounted under the prefix) or to :data:`ROOT_ROUTERS` (mounted as they
  are: ``/dashboard``, ``/status``) before calling :func:`create_app`, or includes them on
  the app it returns.
* Every error is JSON, ``{"error": {"code": "release-not-found", "message": "one line",
  "retriable": false}}``, never a traceback: :class:`~backout.errors.BackoutError`
  subclasses map to 4xx (a failing dependency of the action — the store, a router, the
  telemetry — is 424 with ``retriable: true``, because a 5xx would say the API itself is
  broken), bad input to 422 naming the field, 401 and 403 from :mod:`backout.api.auth`.
  Anything else is logged with its traceback and answered 500 with one line.
* In a route: ``principal: Principal = Depends(require(Right.ROLLBACK))`` checks the right
  on the route's ``{model}``; ``Depends(current_principal)`` only authenticates;
  :func:`backout.api.auth.authorize` checks a right decided in the route.
  ``st: ApiState = Depends(api_state)`` gives the store, registry and controller. The
  audit actor of every action is ``principal.name``.
* :mod:`backout.api.roles` is the role table (:data:`~backout.api.roles.ROLES`); use
  ``principal.can(Right.X, model)`` to decide which actions to show.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from backout.api.attempts import Attempts
from backout.api.oidc import OidcConfig, OidcVerifier
from backout.api.site import mount_pages
from backout.api.state import ApiState
from backout.errors import BackoutError, Forbidden
from backout.redaction import install_log_redaction, redact_text

__all__ = [
    "PREFIX",
    "ROOT_ROUTERS",
    "ROUTERS",
    "app_from_env",
    "create_app",
    "error_body",
    "error_code",
]

log = logging.getLogger("backout.api")

PREFIX = "/api/v1"
ROUTERS: list[APIRouter] = []  # mounted under PREFIX, in order
ROOT_ROUTERS: list[APIRouter] = []  # mounted at the root (pages: dashboard, status)


def error_code(exc: BaseException) -> str:
    """``ReleaseNotFound`` → ``release-not-found``: the error's class, as a stable code."""
    name = type(exc).__name__
    return "".join("-" + c.lower() if c.isupper() and i else c.lower() for i, c in enumerate(name))


def error_body(code: str, message: str, **extra: Any) -> dict[str, Any]:
    """The JSON of every error: one line a person can act on."""
    line = " ".join(redact_text(message).split())
    return {"error": {"code": code, "message": line, **extra}}


def status_of(exc: BackoutError) -> int:
    """The HTTP status of a domain error in the control API: always a 4xx."""
    if exc.http_status < 500:
        return exc.http_status
    # The store, a router, the telemetry or a runtime failed: the action could not be done,
    # and may be retried; IntegrityError (stored bytes broken) is a conflict with the store.
    return 424 if exc.retriable or exc.http_status in (502, 503, 504) else 409


def _field_error(exc: RequestValidationError) -> str:
    errs = exc.errors()
    if not errs:
        return "the request is not valid"
    first = errs[0]
    if tuple(first.get("loc", ())) == ("path", "model"):
        from backout.registry.manifest import check_model_name

        try:
            check_model_name(str(first.get("input", "")))
        except BackoutError as exc:
            return exc.message
    where = ".".join(str(p) for p in first.get("loc", ()) if p != "body") or "the request"
    more = f" (and {len(errs) - 1} more problem(s))" if len(errs) > 1 else ""
    return f"{where}: {first.get('msg', 'invalid')}{more}"


def install_error_handlers(app: FastAPI) -> None:
    """JSON errors, one line each, for every way a request can fail."""

    @app.exception_handler(BackoutError)
    async def domain(request: Request, exc: BackoutError) -> JSONResponse:
        extra: dict[str, Any] = {"retriable": exc.retriable}
        if isinstance(exc, Forbidden) and exc.right:
            extra["right"] = exc.right
        headers = {"WWW-Authenticate": "Bearer"} if exc.http_status == 401 else None
        return JSONResponse(error_body(error_code(exc), exc.message, **extra),
                            status_code=status_of(exc), headers=headers)  # fmt: skip

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse(error_body("invalid-request", _field_error(exc)), status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = exc.detail if isinstance(exc.detail, str) else "request refused"
        if exc.status_code == 404 and message == "Not Found":
            message = f"no route {request.method} {request.url.path}: see {PREFIX}/openapi.json"
        elif exc.status_code == 405:
            message = f"{request.method} is not allowed on {request.url.path}"
        return JSONResponse(error_body(f"http-{exc.status_code}", message),
                            status_code=exc.status_code, headers=exc.headers)  # fmt: skip

    app.add_middleware(CatchAll)


class CatchAll:
    """Answers an unexpected exception with one line of JSON (500), and logs its traceback.

    Starlette's own handler for ``Exception`` answers and then re-raises into the server;
    this one ends it here, so the server's log has one entry, from backout, redacted."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def sending(message: Any) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, sending)
        except Exception as exc:
            method, path = scope.get("method", "?"), scope.get("path", "?")
            log.exception("unexpected error answering %s %s", method, path)
            if started:
                return
            resp = JSONResponse(
                error_body("internal", f"unexpected {type(exc).__name__} while answering {method} "
                           f"{path}: this is a bug in backout; the API's log has the details"),
                status_code=500,
            )  # fmt: skip
            await resp(scope, receive, send)


def create_app(
    store_url: str,
    *,
    artifacts: Path | None = None,
    reports_dir: Path | None = None,
    oidc: OidcConfig | None = None,
    prober: Any = None,
    routers: list[APIRouter] | None = None,
) -> FastAPI:
    """The control API over the store at ``store_url`` (which must exist).

    ``artifacts``: the artifact folder (default: ``$BACKOUT_ARTIFACTS`` or
    ``.backout/artifacts``); ``reports_dir``: where incident reports are written;
    ``oidc``: accept JWTs from this identity provider besides API tokens; ``prober``: the
    load-and-answer check of releases (tests pass an in-memory one); ``routers``: more
    routers to mount under the prefix.
    """
    import os

    from backout.api import routes
    from backout.control.controller import Controller
    from backout.registry.artifacts import LocalBlobStore
    from backout.registry.releases import Registry
    from backout.store import open_store

    install_log_redaction()
    home = Path(os.environ.get("BACKOUT_HOME", ".backout"))
    root = artifacts or Path(os.environ.get("BACKOUT_ARTIFACTS") or home / "artifacts")
    store = open_store(store_url)
    registry = Registry(store, LocalBlobStore(root))
    controller = Controller(store, registry, actor="api", prober=prober)
    state = ApiState(store=store, registry=registry, controller=controller, artifacts=root,
                     reports_dir=reports_dir or home / "reports",
                     oidc=OidcVerifier(oidc) if oidc is not None else None)  # fmt: skip

    attempts = state.attempts = Attempts(store)

    async def flush_attempts() -> None:  # the summaries of refused attempts, as windows end
        while True:
            await asyncio.sleep(5.0)
            try:
                await run_in_threadpool(attempts.flush)
            except Exception:  # a failed summary is retried on the next round
                log.exception("could not write the summary of refused attempts")

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        flusher = asyncio.create_task(flush_attempts())
        yield
        flusher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await flusher
        attempts.flush(everything=True)
        controller.close()
        store.dispose()

    app = FastAPI(
        title="backout control API",
        version="1",
        description="Releases, traffic, rollouts and rollbacks of machine-learning models, "
        "for people with roles: viewer, responder, releaser, approver, admin.",
        openapi_url=f"{PREFIX}/openapi.json",
        docs_url=f"{PREFIX}/docs",
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.backout = state
    install_error_handlers(app)
    for router in [*routes.ROUTERS, *ROUTERS, *(routers or [])]:
        app.include_router(router, prefix=PREFIX)
    for router in ROOT_ROUTERS:
        app.include_router(router)
    mount_pages(app, PREFIX)  # the status page, the dashboard and the incident routes
    return app


def app_from_env() -> FastAPI:
    """The app for a process started by ``backout serve``: settings from the environment
    (``BACKOUT_STORE``, ``BACKOUT_ARTIFACTS``, ``BACKOUT_OIDC``: an OIDC config file)."""
    import os

    from backout.api.oidc import load_oidc_config

    oidc_file = os.environ.get("BACKOUT_OIDC")
    return create_app(
        os.environ.get("BACKOUT_STORE", ""),
        artifacts=Path(os.environ["BACKOUT_ARTIFACTS"])
        if os.environ.get("BACKOUT_ARTIFACTS")
        else None,
        oidc=load_oidc_config(Path(oidc_file)) if oidc_file else None,
    )
