"""Who is calling, and whether they may: principals, and the checks every route makes.

For the route modules (and the dashboard): :func:`current_principal` is a FastAPI
dependency that turns the ``Authorization: Bearer ...`` header (or the ``backout_token``
cookie, for a browser) into a :class:`Principal` — an API token of the store, or a JWT
verified by the configured OIDC provider — and answers 401 otherwise. ``require(right)``
is a dependency that also checks ``right`` on the route's ``{model}`` path parameter (or on
the store as a whole when the route has none) and answers 403 naming the missing right.
:func:`authorize` is the same check for a route that decides the right from its body
(break-glass, a rollback to a release that is not known-good).

Every refusal is recorded in the audit log (``access.denied``, ``access.unauthenticated``)
with the actor, the right, the model and the route; a token's secret never is. Repeats
of the same refusal are summed into one event per minute (:mod:`backout.api.attempts`), so
that a client without credentials cannot flood the hash-chained log.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any, NoReturn

from fastapi import Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from backout.api import tokens
from backout.api.attempts import Attempts
from backout.api.readcache import generation
from backout.api.roles import BREAK_GLASS, Grant, Right, Role
from backout.api.state import ApiState, api_state, state_of
from backout.errors import Forbidden, Unauthenticated
from backout.store import audit

__all__ = [
    "BreakGlass",
    "Principal",
    "authenticated",
    "authorize",
    "current_principal",
    "deny",
    "record_bypass",
    "require",
]

log = logging.getLogger("backout.api")

COOKIE = "backout_token"
_bearer = HTTPBearer(auto_error=False, description="A backout API token (bko_...) or an OIDC JWT.")


@dataclass(frozen=True, slots=True)
class Principal:
    """A caller: its name (the actor in the audit log), its grants, and how it proved it."""

    name: str
    grants: tuple[Grant, ...]
    via: str  # "token:<id>" or "oidc:<subject>"

    def can(self, right: Right, model: str | None = None) -> bool:
        """Whether some grant gives ``right`` on ``model`` (None: the store as a whole)."""
        return any(g.allows(right, model) for g in self.grants)

    def has_role(self, role: Role, model: str | None) -> bool:
        """Whether a grant of ``role`` reaches ``model``."""
        return any(g.role == role and g.covers(model) for g in self.grants)

    def can_break_glass(self, right: Right, model: str | None) -> bool:
        """Whether a responder of ``model`` may take ``right`` with break-glass."""
        return right in BREAK_GLASS and model is not None and self.has_role(Role.RESPONDER, model)

    def readable(self, models: list[str]) -> list[str]:
        """The models of ``models`` this principal may read."""
        return [m for m in models if self.can(Right.READ, m)]

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "via": self.via, "grants": [g.to_dict() for g in self.grants]}


@dataclass(frozen=True, slots=True)
class BreakGlass:
    """A responder's request to use a releaser's right once, and why."""

    reason: str


def _record(st: ApiState, kind: str, key: tuple[Any, ...], source: str, model: str | None,
            actor: str, reason: str, data: dict[str, Any]) -> None:  # fmt: skip
    if st.attempts is None:
        st.attempts = Attempts(st.store)
    st.attempts.record(kind, key, source=source, model=model, actor=actor, reason=reason,
                       data=data)  # fmt: skip


def _client(request: Request) -> str:
    return request.client.host if request.client is not None else "unknown"


def _route_of(request: Request) -> str:
    """The route's pattern (``/api/v1/models/{model}/status``), not the path a client chose."""
    route = request.scope.get("route")
    return f"{request.method} {getattr(route, 'path', request.url.path)}"


def _unauthenticated(request: Request, st: ApiState, why: str, message: str,
                     **data: Any) -> None:  # fmt: skip
    route = f"{request.method} {request.url.path}"
    source = _client(request)
    _record(st, "access.unauthenticated", (source, why), source, None, "anonymous",
            f"{route}: {message}", {"route": route, **data})  # fmt: skip


def current_principal(
    request: Request,
    creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    st: Annotated[ApiState, Depends(api_state)],
) -> Principal:
    """The caller, from its bearer token (or cookie); 401 when there is none or it is refused.

    An API token once found is kept for a few seconds, for as long as the store's
    generation stays (a revocation writes an event): a read does not look it up again."""
    token = creds.credentials if creds is not None else request.cookies.get(COOKIE)
    if not token:
        _unauthenticated(request, st, "none", "no credentials")
        raise Unauthenticated(
            "no credentials: send 'Authorization: Bearer TOKEN' (create one with `backout token create`)"
        )
    try:
        if token.startswith(tokens.PREFIX) or st.oidc is None:
            gen = generation(request, st.store)
            key = _key(token)
            info = st.tokens.get(key, gen)
            if info is None or info.status(time.time()) != "active":
                info = st.tokens.put(key, gen, tokens.lookup(st.store, token))
            principal = Principal(info.name, info.grants, f"token:{info.id}")
        else:
            ident = st.oidc.verify(token)
            principal = Principal(ident.name, ident.grants, f"oidc:{ident.subject}")
    except Unauthenticated as exc:
        tid = tokens.token_id_of(token)
        kind = "token" if token.startswith(tokens.PREFIX) else "jwt"
        _unauthenticated(request, st, kind, exc.message, **({"token_id": tid} if tid else {}))
        raise
    request.state.principal = principal
    return principal


def _key(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


async def authenticated(
    request: Request,
    creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    st: Annotated[ApiState, Depends(api_state)],
) -> Principal:
    """:func:`current_principal`, answered on the event loop when it can be: an API token
    already found, on a SQLite store (whose generation is a read of a local file, cheaper
    than the two thread switches of sending it to a worker, which on a busy host cost more
    than the read). Anything else — a token to look up, a JWT, a refusal to record, a
    store across the network — goes to a worker thread as before."""
    token = creds.credentials if creds is not None else request.cookies.get(COOKIE)
    if token and token.startswith(tokens.PREFIX) and st.store.is_sqlite:
        info = st.tokens.get(_key(token), generation(request, st.store))
        if info is not None and info.status(time.time()) == "active":
            principal = Principal(info.name, info.grants, f"token:{info.id}")
            request.state.principal = principal
            return principal
    found: Principal = await run_in_threadpool(current_principal, request, creds, st)
    return found


def authorize(request: Request, principal: Principal, right: Right, model: str | None, *,
              break_glass: BreakGlass | None = None) -> bool:  # fmt: skip
    """Check ``right`` on ``model`` for ``principal``; 403 naming the missing right otherwise.

    Returns True when the right was taken with break-glass (the caller then records the
    bypass with :func:`record_bypass` once the action is done). Refusals are audited.
    """
    if principal.can(right, model):
        return False
    if break_glass is not None and principal.can_break_glass(right, model):
        return True
    where = f"on {model}" if model is not None else "on the whole store (a grant on '*')"
    roles = ", ".join(map(str, principal.grants)) or "no roles"
    hint = (
        "; a responder may use it with break_glass and a reason"
        if right in BREAK_GLASS and model is not None
        else ""
    )
    deny(request, principal, right, model,
         f"{principal.name} ({roles}) lacks the {right.value!r} right {where}{hint}",
         break_glass=break_glass is not None)  # fmt: skip


def deny(request: Request, principal: Principal, right: Right, model: str | None, message: str,
         **data: Any) -> NoReturn:  # fmt: skip
    """Record a refused attempt in the audit log, then answer 403 with ``message``."""
    route = f"{request.method} {request.url.path}"
    _record(state_of(request), "access.denied", (principal.name, _route_of(request), right.value, model),
            principal.name, model, principal.name, f"{route}: {message}",
            {"route": route, "right": right.value, "via": principal.via, **data})  # fmt: skip
    raise Forbidden(message, right=right.value)


def record_bypass(request: Request, principal: Principal, right: Right, model: str,
                  reason: str, what: str) -> None:  # fmt: skip
    """Record a break-glass use as a bypass and notify the model's owners and approvers."""
    from backout.control.notify import Notice, NoticeKind, Severity

    st = state_of(request)
    ctl = st.controller
    policy = ctl.policy_for(model)
    text = f"{principal.name} used break-glass for {right.value!r} on {model}: {what}; reason: {reason}"
    with st.store.write() as conn:
        audit.append(conn, "access.bypass", model=model, actor=principal.name, reason=text,
                     data={"right": right.value, "via": principal.via, "what": what,
                           "reason": reason, "break_glass": True,
                           "notified": list(policy.owners)})  # fmt: skip
        # To the policy's webhooks, and to its first escalation contact: the people on call.
        first = policy.escalation.contacts[:1]
        notice = Notice(kind=NoticeKind.BYPASS, model=model, title=f"break-glass on {model}",
                        text=text, severity=Severity.WARNING,
                        fields={"actor": principal.name, "right": right.value},
                        to=tuple(c.webhook for c in first if c.webhook),
                        mail=tuple(c.email for c in first if c.email))  # fmt: skip
        ctl.send(model, policy, notice, conn=conn)


def require(right: Right) -> Callable[..., Awaitable[Principal]]:
    """A dependency: the caller, once it holds ``right`` on the route's ``{model}``."""

    async def dependency(
        request: Request, principal: Annotated[Principal, Depends(authenticated)]
    ) -> Principal:
        # On the event loop when the right is held (no thread hop for a check in memory);
        # a refusal writes to the audit log, so it goes to a worker thread.
        model = request.path_params.get("model")
        if not principal.can(right, model):
            await run_in_threadpool(authorize, request, principal, right, model)
        return principal

    dependency.__name__ = f"require_{right.value}"
    return dependency
