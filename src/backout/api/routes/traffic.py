"""Traffic routes: a model's route table, read, and set by hand.

Setting traffic is the releaser's right (``traffic``; a responder with break-glass), the
same call as ``backout traffic``: weights in percent, an optional shadow and pins.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Request
from pydantic import BaseModel, Field

from backout.api.auth import Principal, authorize, current_principal, record_bypass, require
from backout.api.roles import Right
from backout.api.routes.common import Action, ModelName, break_glass_of, router
from backout.api.state import ApiState, api_state

__all__ = ["routes"]

routes = router("traffic")
State = Annotated[ApiState, Depends(api_state)]


class Shadow(BaseModel):
    """A release that gets a copy of ``percent`` of the requests (its answers are dropped)."""

    version: str = Field(min_length=1, max_length=128)
    percent: float = Field(ge=0, le=100)


class TrafficBody(Action):
    """A new route table: percent per release (summing to 100), a shadow, pins."""

    weights: dict[str, float] = Field(min_length=1, max_length=64)
    shadow: Shadow | None = None
    pins: dict[str, str] | None = Field(default=None, max_length=10_000)
    force: bool = False  # pause a running operation instead of refusing


def _shown(table: Any) -> dict[str, Any]:
    """The route table as ``backout traffic --json`` prints it, with its one-line form."""
    from backout.traffic.deployments import describe

    doc: dict[str, Any] = table.to_dict()
    return doc | {"weights": {v: w / 100 for v, w in table.weights.items()},
                              "routes": describe(table)}  # fmt: skip


@routes.get("/models/{model}/traffic", summary="A model's route table")
def show(model: ModelName, st: State,
         principal: Annotated[Principal, Depends(require(Right.READ))]) -> dict[str, Any]:  # fmt: skip
    return _shown(st.controller.deployments.require(model))


@routes.put("/models/{model}/traffic", summary="Set a model's traffic by hand")
def set_traffic(model: ModelName, body: TrafficBody, request: Request, st: State,
                principal: Annotated[Principal, Depends(current_principal)]) -> dict[str, Any]:  # fmt: skip
    bypass = authorize(request, principal, Right.TRAFFIC, model, break_glass=break_glass_of(body))
    shadow = (body.shadow.version, body.shadow.percent) if body.shadow else None
    table = st.controller.set_traffic(model, body.weights, shadow=shadow, pins=body.pins,
                                      actor=principal.name, reason=body.reason, force=body.force)  # fmt: skip
    if bypass:
        shown = " ".join(f"{v}={w:g}" for v, w in body.weights.items())
        record_bypass(request, principal, Right.TRAFFIC, model, body.reason, f"set traffic {shown}")
    return _shown(table)
