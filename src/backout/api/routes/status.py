"""Reading routes: who am I, status, history (the audit log), operations, incidents.

For every role (the ``read`` right on the model); lists show only the models the caller
may read.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Query, Request

from backout.api.auth import Principal, authorize, current_principal, require
from backout.api.readcache import cached
from backout.api.roles import ROLES, Right
from backout.api.routes.common import ModelName, router
from backout.api.state import ApiState, api_state

__all__ = ["routes"]

routes = router("status")
Reader = Annotated[Principal, Depends(require(Right.READ))]
State = Annotated[ApiState, Depends(api_state)]


@routes.get("/whoami", summary="The caller: name, grants and rights")
def whoami(principal: Annotated[Principal, Depends(current_principal)]) -> dict[str, Any]:
    rights = sorted({r.value for g in principal.grants for r in ROLES[g.role]})
    return principal.to_dict() | {"rights": rights}


@routes.get("/status", summary="Every model's live state (those the caller may read)")
def status_all(
    principal: Annotated[Principal, Depends(current_principal)], st: State,
    window: Annotated[float, Query(ge=1, le=86400)] = 60.0,
) -> list[dict[str, Any]]:  # fmt: skip
    from backout.control.status import model_status

    models = principal.readable(st.controller.deployments.models())
    return [model_status(st.store, st.controller, m, window=window) for m in models]


@routes.get("/models/{model}/status", summary="One model's live state")
async def status_one(
    request: Request, model: ModelName, principal: Reader, st: State,
    window: Annotated[float, Query(ge=1, le=86400)] = 60.0,
) -> dict[str, Any]:  # fmt: skip
    from backout.control.status import model_status

    # Kept while the store's generation stays and for a second (the telemetry's own pace),
    # then refreshed by one reader while the others answer with it for 3 s more: many
    # readers polling one model cost one computation a second, and a read answered from
    # the cache never leaves the event loop.
    doc: dict[str, Any] = await cached(
        request, st.store, st.views, ("status", model, window),
        lambda: model_status(st.store, st.controller, model, window=window),
    )  # fmt: skip
    return doc


@routes.get("/history", summary="The whole audit log (needs read on every model)")
def history_all(
    request: Request, principal: Annotated[Principal, Depends(current_principal)], st: State,
    verify: bool = False, limit: Annotated[int | None, Query(ge=1, le=100_000)] = None,
) -> dict[str, Any]:  # fmt: skip
    from backout.control.status import history

    # Store-wide events (tokens, keys) are not any one model's: the whole log is for
    # readers of every model; others read their models' logs at /models/{model}/history.
    authorize(request, principal, Right.READ, None)
    return history(st.store, None, verify=verify, limit=limit)


@routes.get("/models/{model}/history", summary="One model's audit events")
def history_one(
    model: ModelName, principal: Reader, st: State,
    limit: Annotated[int | None, Query(ge=1, le=100_000)] = None,
) -> dict[str, Any]:  # fmt: skip
    from backout.control.status import history

    return history(st.store, model, limit=limit)


@routes.get("/models/{model}/operations", summary="One model's operations, newest first")
def operations(
    model: ModelName, principal: Reader, st: State, limit: Annotated[int, Query(ge=1, le=1000)] = 20
) -> list[dict[str, Any]]:
    return [op.to_dict() for op in st.controller.operations(model, limit=limit)]
