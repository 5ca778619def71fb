"""Admin routes: API tokens, and a model's policy.

Tokens are the store's (the ``tokens`` right, on every model): created (the token is in
the answer, once), listed (never with a secret) and revoked. A policy is read by every
reader of its model (secrets redacted) and set with the ``policies`` right.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends
from pydantic import BaseModel, Field

from backout.api import tokens
from backout.api.auth import Principal, require
from backout.api.roles import Right, Role, make_grant
from backout.api.routes.common import ModelName, router
from backout.api.state import ApiState, api_state
from backout.redaction import redact

__all__ = ["routes"]

routes = router("admin")
State = Annotated[ApiState, Depends(api_state)]
Admin = Annotated[Principal, Depends(require(Right.TOKENS))]


class GrantBody(BaseModel):
    """One role on the models matching ``models`` (glob patterns)."""

    role: Role
    models: list[str] = Field(default_factory=lambda: ["*"], min_length=1, max_length=64)


class TokenBody(BaseModel):
    """A token to create: its name, its grants, how long it lives."""

    name: str = Field(default="", max_length=128)
    grants: list[GrantBody] = Field(min_length=1, max_length=32)
    expires_in_s: float | None = Field(default=None, gt=0, le=10 * 365 * 86400)


class PolicyBody(BaseModel):
    """A policy, as its YAML file says."""

    policy: str = Field(min_length=1, max_length=1 << 20, description="The policy's YAML")


@routes.get("/tokens", summary="Every API token (never a secret)")
def list_tokens(principal: Admin, st: State) -> list[dict[str, Any]]:
    return [t.to_dict() for t in tokens.list_tokens(st.store)]


@routes.post("/tokens", summary="Create a token: the answer holds it, once", status_code=201)
def create_token(body: TokenBody, principal: Admin, st: State) -> dict[str, Any]:
    grants = [make_grant(g.role.value, g.models) for g in body.grants]
    issued = tokens.create(st.store, grants, actor=principal.name, name=body.name,
                           expires_in=body.expires_in_s)  # fmt: skip
    return issued.info.to_dict() | {"token": issued.token}


@routes.delete("/tokens/{token_id}", summary="Revoke a token at once")
def revoke_token(token_id: str, principal: Admin, st: State) -> dict[str, Any]:
    return tokens.revoke(st.store, token_id, actor=principal.name).to_dict()


@routes.get("/models/{model}/policy", summary="The policy a model runs by (secrets redacted)")
def get_policy(model: ModelName, st: State,
               principal: Annotated[Principal, Depends(require(Right.READ))]) -> dict[str, Any]:  # fmt: skip
    return redact(st.controller.policy_for(model).model_dump(mode="json"))  # type: ignore[no-any-return]


@routes.put("/models/{model}/policy", summary="Set a model's policy")
def set_policy(model: ModelName, body: PolicyBody, st: State,
               principal: Annotated[Principal, Depends(require(Right.POLICIES))]) -> dict[str, Any]:  # fmt: skip
    from backout.control.policy import parse_policy

    policy = parse_policy(body.policy)
    st.controller.set_policy(model, policy, source="api", actor=principal.name)
    return redact(policy.model_dump(mode="json"))  # type: ignore[no-any-return]
