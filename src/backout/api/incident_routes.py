"""Incident routes of the control API: the incidents the status page shows (listed, one
with its timeline, a model's open one), and an incident commander's update to it.

For the dashboard's incident view and ``backout incident`` against a server (an incident's
report is at ``/models/{model}/incidents/{operation}/report.html``). Reading needs
the ``read`` right on the model. An update is for the incident commander: the policy's
commander on duty, or anyone with the ``rollback`` right on the model (the responders who
run the incident); the update is recorded under the caller's name.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Query, Request
from pydantic import BaseModel, Field

from backout.api.auth import Principal, authorize, current_principal, require
from backout.api.readcache import cached
from backout.api.roles import Right
from backout.api.routes.common import router
from backout.api.state import ApiState, api_state

__all__ = ["IncidentUpdate", "may_update", "routes"]

routes = router("incidents")
Reader = Annotated[Principal, Depends(require(Right.READ))]
State = Annotated[ApiState, Depends(api_state)]


class IncidentUpdate(BaseModel):
    """An incident commander's update: the new status and what the public should know."""

    status: str = Field(description="investigating, identified, monitoring or resolved")
    message: str = Field(min_length=1, max_length=2000)


def may_update(principal: Principal, st: ApiState, model: str) -> bool:
    """Whether ``principal`` may add updates to ``model``'s incidents."""
    if principal.can(Right.ROLLBACK, model):
        return True
    on_duty = st.controller.policy_for(model).incident_commander.on_duty(st.controller.clock())
    return on_duty is not None and on_duty == principal.name and principal.can(Right.READ, model)


@routes.get("/incidents", summary="Incidents of the models the caller may read, newest first")
def list_incidents(
    request: Request, principal: Annotated[Principal, Depends(current_principal)], st: State,
    model: Annotated[str | None, Query(max_length=128)] = None,
    open_only: Annotated[bool, Query(alias="open")] = False,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
) -> list[dict[str, Any]]:  # fmt: skip
    from backout.control.incidents import Incidents

    if model is not None:
        authorize(request, principal, Right.READ, model)
    found = Incidents(st.store).list(model, limit=limit, open_only=open_only)
    return [i.to_dict() for i in found if principal.can(Right.READ, i.model)]


@routes.get("/incidents/{incident_id}", summary="One incident's timeline")
def show_incident(
    request: Request, incident_id: int, st: State,
    principal: Annotated[Principal, Depends(current_principal)],
) -> dict[str, Any]:  # fmt: skip
    from backout.control.incidents import Incidents

    incident = Incidents(st.store).get(incident_id)
    authorize(request, principal, Right.READ, incident.model)
    return incident.to_dict()


@routes.get("/models/{model}/incident", summary="The model's open incident (null when none)")
async def open_incident(
    request: Request, model: str, principal: Reader, st: State
) -> dict[str, Any] | None:
    from backout.control.incidents import Incidents

    def current() -> tuple[dict[str, Any] | None]:
        incident = Incidents(st.store).current(model)
        return (incident.to_dict() if incident is not None else None,)

    # Kept while the store's generation stays (as the status view is; see readcache).
    held = await cached(request, st.store, st.views, ("incident", model), current)
    return held[0]  # type: ignore[no-any-return]


@routes.post("/models/{model}/incident/updates", summary="Add an update to the open incident")
def add_update(
    model: str, body: IncidentUpdate, request: Request,
    principal: Annotated[Principal, Depends(current_principal)], st: State,
) -> dict[str, Any]:  # fmt: skip
    from backout.control.incidents import Incidents

    if not may_update(principal, st, model):
        authorize(request, principal, Right.ROLLBACK, model)  # refuses, audited, naming it
    return Incidents(st.store).add_update(model, body.status, body.message,
                                          actor=principal.name).to_dict()  # fmt: skip
