"""What every request of the control API shares: the store, registry and controller.

For the route modules and :mod:`backout.api.auth`: :func:`create_app` builds one
:class:`ApiState` and keeps it on ``app.state.backout``; :func:`api_state` finds it from a
request (a FastAPI dependency).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastapi import Request

from backout.api.readcache import ReadCache
from backout.control.controller import Controller
from backout.registry.releases import Registry
from backout.store import Store

if TYPE_CHECKING:
    from backout.api.attempts import Attempts
    from backout.api.oidc import OidcVerifier

__all__ = ["ApiState", "api_state", "state_of"]


@dataclass
class ApiState:
    """The collaborators of one API process."""

    store: Store
    registry: Registry
    controller: Controller
    artifacts: Path
    reports_dir: Path
    oidc: OidcVerifier | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # for the layers mounted on the app
    attempts: Attempts | None = None  # refused attempts, audited at a bounded rate
    # Reads already answered, valid at the store generation they were made at: token
    # lookups (a revocation writes an event, so it counts at once) and status documents
    # (a second at most behind the telemetry); see backout.api.readcache.
    tokens: ReadCache[Any] = field(default_factory=lambda: ReadCache(ttl=10.0))
    views: ReadCache[Any] = field(default_factory=lambda: ReadCache(ttl=1.0, size=256))


def state_of(request: Request) -> ApiState:
    """The API's state, from the app the request reached."""
    st = request.app.state.backout
    assert isinstance(st, ApiState)
    return st


async def api_state(request: Request) -> ApiState:
    """:func:`state_of` as a dependency (async: FastAPI runs it on the event loop instead of
    sending it to a worker thread, one thread hop fewer per request)."""
    return state_of(request)
