"""OIDC bearer tokens: JWTs verified against a JWKS, a claim mapped to roles.

For the control API behind a company's identity provider. :class:`OidcConfig` (a YAML or
JSON file given to ``backout api --oidc FILE``) names the issuer, the audience, where the
JWKS is (a file path or an HTTP(S) URL), the claim that carries groups, and which grants
each group value gives::

    issuer: https://login.example.com/
    audience: backout
    jwks: https://login.example.com/.well-known/jwks.json
    claim: groups
    name_claim: email
    roles:
      sre: ["responder:*"]
      ml-iris: ["releaser:iris*", "viewer:*"]

:class:`OidcVerifier` checks the signature (PyJWT), expiry, issuer and audience; a key id
it does not know makes it fetch the JWKS again (at most every ``refresh_s`` seconds).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import jwt
from pydantic import BaseModel, ConfigDict, Field

from backout.api.roles import Grant, parse_grant
from backout.errors import BackoutError, ConfigError, Unauthenticated

__all__ = ["OidcConfig", "OidcIdentity", "OidcVerifier", "load_oidc_config"]


class OidcConfig(BaseModel):
    """Where tokens come from and what their groups are allowed."""

    model_config = ConfigDict(extra="forbid")

    issuer: str
    audience: str
    jwks: str  # a file path or an http(s) URL
    claim: str = "groups"
    name_claim: str = "sub"
    roles: dict[str, list[str]] = Field(default_factory=dict)
    algorithms: list[str] = Field(default_factory=lambda: ["RS256", "ES256"])
    refresh_s: float = Field(default=300.0, ge=0)
    leeway_s: float = Field(default=30.0, ge=0)

    def grants_for(self, values: list[str]) -> tuple[Grant, ...]:
        """The grants the claim's values give, in the mapping's order."""
        out: list[Grant] = []
        for value in values:
            for spec in self.roles.get(value, []):
                out.append(parse_grant(spec))
        return tuple(dict.fromkeys(out))


def load_oidc_config(path: Path) -> OidcConfig:
    """Read an OIDC config file (YAML or JSON), refused in one line when malformed."""
    import yaml
    from pydantic import ValidationError

    from backout.configfile import read_text_file

    text = read_text_file(path, what="OIDC config file", limit=1 << 20)
    try:
        doc = yaml.safe_load(text)
        cfg = OidcConfig.model_validate(doc)
        for group, specs in cfg.roles.items():
            for spec in specs:
                try:
                    parse_grant(spec)
                except ConfigError as exc:
                    raise ConfigError(
                        f"OIDC config {str(path)!r}: roles.{group}: {exc.message}"
                    ) from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"OIDC config {str(path)!r} is not valid YAML: {exc}") from exc
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(top)"
        raise ConfigError(f"OIDC config {str(path)!r}: {where}: {first['msg']}") from exc
    return cfg


@dataclass(frozen=True, slots=True)
class OidcIdentity:
    """Who a verified JWT says the caller is."""

    subject: str
    name: str
    grants: tuple[Grant, ...]


class OidcVerifier:
    """Verifies bearer JWTs against the configured JWKS (cached, refetched on a new key id)."""

    def __init__(self, config: OidcConfig, *, client: httpx.Client | None = None) -> None:
        self.config = config
        self._client = client
        self._lock = threading.Lock()
        self._keys: jwt.PyJWKSet | None = None
        self._fetched_at = 0.0

    def _load(self) -> jwt.PyJWKSet:
        src = self.config.jwks
        try:
            if src.startswith(("http://", "https://")):
                client = self._client or httpx.Client(timeout=5.0)
                try:
                    resp = client.get(src)
                    resp.raise_for_status()
                    data: Any = resp.json()
                finally:
                    if self._client is None:
                        client.close()
            else:
                import orjson

                data = orjson.loads(Path(src).read_bytes())
            return jwt.PyJWKSet.from_dict(data)
        except (httpx.HTTPError, OSError, ValueError, jwt.PyJWTError) as exc:
            # Not the caller's fault, but answered as 401 all the same: no key, no identity.
            raise Unauthenticated(
                f"the identity provider's keys (JWKS) cannot be read: {type(exc).__name__}"
            ) from exc

    def _key(self, kid: str | None) -> Any:
        with self._lock:
            now = time.monotonic()
            stale = now - self._fetched_at > self.config.refresh_s
            if self._keys is None or stale:
                self._keys, self._fetched_at = self._load(), now
            found = _find(self._keys, kid)
            if found is None and now - self._fetched_at > 1.0:
                # A key id we do not know: the provider may have rotated its keys.
                self._keys, self._fetched_at = self._load(), now
                found = _find(self._keys, kid)
        if found is None:
            raise Unauthenticated(
                f"the JWT's key id {kid!r} is not in the identity provider's JWKS"
            )
        return found.key

    def verify(self, token: str) -> OidcIdentity:
        """The identity in ``token``, or :class:`Unauthenticated` saying what failed."""
        cfg = self.config
        try:
            header = jwt.get_unverified_header(token)
            key = self._key(header.get("kid"))
            claims = jwt.decode(
                token, key, algorithms=cfg.algorithms, audience=cfg.audience, issuer=cfg.issuer,
                leeway=cfg.leeway_s, options={"require": ["exp", "iss", "aud", "sub"]},
            )  # fmt: skip
        except BackoutError:
            raise
        except jwt.ExpiredSignatureError:
            raise Unauthenticated("the JWT has expired: sign in again") from None
        except jwt.PyJWTError as exc:
            raise Unauthenticated(f"the JWT was refused: {exc}") from None
        raw = claims.get(cfg.claim, [])
        values = (
            [raw] if isinstance(raw, str) else [str(v) for v in raw if isinstance(v, str | int)]
        )
        grants = cfg.grants_for(values)
        sub = str(claims["sub"])
        name = str(claims.get(cfg.name_claim) or sub)
        return OidcIdentity(subject=sub, name=name, grants=grants)


def _find(keys: jwt.PyJWKSet, kid: str | None) -> jwt.PyJWK | None:
    for k in keys.keys:
        if kid is None or k.key_id == kid:
            return k
    return None
