"""API tokens: created once, stored only as a hash, listed and revoked by an admin.

A token reads ``bko_<id>_<secret>``: ``id`` (8 hex digits) is public and names the token in
lists, events and errors; the store keeps only the SHA-256 of ``secret`` (32 random bytes),
so a copy of the store gives no one a working token. The whole token is shown once, when it
is created. :func:`lookup` finds a token by its id and checks the secret in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from backout.api.roles import Grant
from backout.errors import ConfigError, NotFound, Unauthenticated
from backout.store import Store, audit, schema

__all__ = ["PREFIX", "IssuedToken", "TokenInfo", "create", "list_tokens", "lookup", "revoke"]

PREFIX = "bko_"
_SHAPE = re.compile(r"^bko_([0-9a-f]{8})_([A-Za-z0-9_\-]{20,100})$")


@dataclass(frozen=True, slots=True)
class TokenInfo:
    """A stored token, without its secret."""

    id: str
    name: str
    grants: tuple[Grant, ...]
    created_at: float
    created_by: str
    expires_at: float | None = None
    revoked_at: float | None = None
    revoked_by: str | None = None

    def status(self, now: float) -> str:
        """``active``, ``expired`` or ``revoked``."""
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and now >= self.expires_at:
            return "expired"
        return "active"

    def to_dict(self, now: float | None = None) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "grants": [g.to_dict() for g in self.grants],
            "created_at": self.created_at,
            "created_by": self.created_by,
            "expires_at": self.expires_at,
            "revoked_at": self.revoked_at,
            "revoked_by": self.revoked_by,
            "status": self.status(time.time() if now is None else now),
        }


@dataclass(frozen=True, slots=True)
class IssuedToken:
    """A token just created: the only time its secret exists outside the caller's hands."""

    info: TokenInfo
    token: str = field(repr=False)


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _info(r: Any) -> TokenInfo:
    return TokenInfo(
        id=r.id, name=r.name, grants=tuple(Grant.from_dict(g) for g in r.grants),
        created_at=r.created_at, created_by=r.created_by, expires_at=r.expires_at,
        revoked_at=r.revoked_at, revoked_by=r.revoked_by,
    )  # fmt: skip


def create(store: Store, grants: Sequence[Grant], *, actor: str, name: str = "",
           expires_in: float | None = None, now: float | None = None) -> IssuedToken:  # fmt: skip
    """Create a token with ``grants``, valid for ``expires_in`` seconds (None: until revoked)."""
    if not grants:
        raise ConfigError("a token needs at least one role: --role viewer|responder|...")
    if expires_in is not None and expires_in <= 0:
        raise ConfigError(f"a token's lifetime must be positive, not {expires_in:g} s")
    name = name.strip()
    if len(name) > 128:
        raise ConfigError("a token's name is at most 128 characters")
    t = time.time() if now is None else now
    token_id, secret = secrets.token_hex(4), secrets.token_urlsafe(32)
    name = name or f"token-{token_id}"
    info = TokenInfo(token_id, name, tuple(grants), t, actor,
                     None if expires_in is None else t + expires_in)  # fmt: skip
    with store.write() as conn:
        conn.execute(
            schema.api_tokens.insert().values(
                id=token_id, name=name, secret_sha256=_digest(secret),
                grants=[g.to_dict() for g in grants], created_at=t, created_by=actor,
                expires_at=info.expires_at,
            )
        )  # fmt: skip
        audit.append(conn, "token.created", model=None, actor=actor,
                     reason=f"token {token_id} ({name}): {', '.join(map(str, grants))}",
                     data={"id": token_id, "name": name, "grants": [g.to_dict() for g in grants],
                           "expires_at": info.expires_at})  # fmt: skip
    return IssuedToken(info, f"{PREFIX}{token_id}_{secret}")


def list_tokens(store: Store) -> list[TokenInfo]:
    """Every token ever created, newest first (secrets are never stored)."""
    T = schema.api_tokens
    with store.read() as conn:
        rows = conn.execute(sa.select(T).order_by(T.c.created_at.desc(), T.c.id)).all()
    return [_info(r) for r in rows]


def revoke(store: Store, token_id: str, *, actor: str, now: float | None = None) -> TokenInfo:
    """Revoke a token at once; revoking a revoked token again changes nothing."""
    T = schema.api_tokens
    t = time.time() if now is None else now
    with store.write() as conn:
        row = conn.execute(sa.select(T).where(T.c.id == token_id)).first()
        if row is None:
            raise NotFound(f"no token {token_id!r}: `backout token list` shows their ids")
        if row.revoked_at is None:
            conn.execute(
                T.update().where(T.c.id == token_id).values(revoked_at=t, revoked_by=actor)
            )
            audit.append(conn, "token.revoked", model=None, actor=actor,
                         reason=f"token {token_id} ({row.name}) revoked", data={"id": token_id})  # fmt: skip
            row = conn.execute(sa.select(T).where(T.c.id == token_id)).first()
    return _info(row)


def token_id_of(token: str) -> str | None:
    """The public id of a token-shaped string, or None."""
    m = _SHAPE.match(token)
    return m.group(1) if m else None


def lookup(store: Store, token: str, *, now: float | None = None) -> TokenInfo:
    """The active token ``token`` is, or :class:`Unauthenticated` (never repeating it)."""
    m = _SHAPE.match(token)
    if m is None:
        raise Unauthenticated("the bearer token is not a backout token (bko_...) nor a valid JWT")
    token_id, secret = m.groups()
    T = schema.api_tokens
    with store.read() as conn:
        row = conn.execute(sa.select(T).where(T.c.id == token_id)).first()
    # Compared in constant time, and the same answer for an unknown id and a wrong secret.
    if row is None or not hmac.compare_digest(row.secret_sha256, _digest(secret)):
        raise Unauthenticated(f"unknown token {token_id}: ask an admin for a valid one")
    info = _info(row)
    status = info.status(time.time() if now is None else now)
    if status != "active":
        raise Unauthenticated(
            f"token {token_id} ({info.name}) is {status}: ask an admin for a new one"
        )
    return info
