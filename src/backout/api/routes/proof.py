"""Proof routes: consumers, compatibility, replay, drills.

Reading them is ``read``; registering consumers ``consumers`` (admin); a replay ``replay``;
a drill ``drill`` (responder). The same calls as ``backout consumers|compat|replay|drill``.
"""

from __future__ import annotations

import threading
from typing import Annotated, Any

from fastapi import Depends, Query
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from backout.api.auth import Principal, require
from backout.api.roles import Right
from backout.api.routes.common import ModelName, router
from backout.api.state import ApiState, api_state
from backout.errors import ValidationError

__all__ = ["routes"]

routes = router("proof")
State = Annotated[ApiState, Depends(api_state)]
Reader = Annotated[Principal, Depends(require(Right.READ))]


class ConsumerBody(BaseModel):
    """A consumer's contract, as its YAML file says (name, sends, reads, owner)."""

    contract: str = Field(min_length=1, max_length=1 << 20, description="The contract's YAML")


class ReplayBody(BaseModel):
    """Replay captured requests against a release."""

    version: str = Field(min_length=1, max_length=128)
    since_s: float | None = Field(default=None, gt=0)
    limit: int | None = Field(default=None, ge=1, le=100_000)


class DrillBody(BaseModel):
    """A rehearsed incident: the fault to inject through the running gateway."""

    fault: str = Field(
        min_length=1, max_length=64, description="latency=+200ms | errors=5% | nan=1% | crash"
    )
    after_s: float = Field(default=0.0, ge=0, le=3600)
    timeout_s: float = Field(default=180.0, gt=0, le=3600)
    release: str | None = Field(default=None, min_length=1, max_length=128)


@routes.get("/models/{model}/consumers", summary="A model's registered consumers")
def consumers(model: ModelName, principal: Reader, st: State) -> list[dict[str, Any]]:
    from backout.proof.consumers import list_consumers

    return [c.to_dict() for c in list_consumers(st.store, model)]


@routes.post("/models/{model}/consumers", summary="Register (or update) a consumer")
def add_consumer(model: ModelName, body: ConsumerBody, st: State,
                 principal: Annotated[Principal, Depends(require(Right.CONSUMERS))]) -> dict[str, Any]:  # fmt: skip
    from backout.proof.consumers import parse_consumer_yaml, register_consumer

    consumer = parse_consumer_yaml(body.contract, source="the request")
    if consumer.model != model:
        raise ValidationError(f"the contract is for model {consumer.model!r}, not {model!r}")
    created = register_consumer(st.store, consumer, actor=principal.name)
    return {"created": created, **consumer.to_dict()}


@routes.delete("/models/{model}/consumers/{name}", summary="Remove a consumer")
def remove_consumer(model: ModelName, name: str, st: State,
                    principal: Annotated[Principal, Depends(require(Right.CONSUMERS))]) -> dict[str, Any]:  # fmt: skip
    from backout.proof.consumers import remove_consumer as remove

    remove(st.store, model, name, actor=principal.name)
    return {"removed": name, "model": model}


@routes.get("/models/{model}/compat", summary="Can release B take release A's live traffic?")
def compat(model: ModelName, principal: Reader, st: State,
           live: Annotated[str, Query(min_length=1, max_length=128)],
           target: Annotated[str, Query(min_length=1, max_length=128)]) -> dict[str, Any]:  # fmt: skip
    from backout.control.preflight import compat_report

    return compat_report(st.store, st.registry, model, live, target).to_dict()


@routes.post("/models/{model}/replay", summary="Replay captured requests against a release")
def replay(model: ModelName, body: ReplayBody, st: State,
           principal: Annotated[Principal, Depends(require(Right.REPLAY))]) -> dict[str, Any]:  # fmt: skip
    import time

    from backout.proof.replay import Limits, require_captures
    from backout.proof.replay import replay as run_replay

    require_captures(st.store, model)
    policy = st.controller.policy_for(model).replay
    limits = Limits(max_error_rate=policy.max_error_rate, max_latency_ratio=policy.max_latency_ratio,
                    min_agreement=policy.min_agreement)  # fmt: skip
    since = time.time() - body.since_s if body.since_s else None
    report = run_replay(st.store, st.registry, st.registry.blobs, f"{model}@{body.version}",
                        since=since, limit=body.limit, limits=limits)  # fmt: skip
    return report.to_dict()


@routes.get("/models/{model}/drills", summary="A model's past drills, newest first")
def drills(model: ModelName, principal: Reader, st: State) -> list[dict[str, Any]]:
    from backout.control.drills import list_drills

    return list_drills(st.store, model)


@routes.post("/models/{model}/drills", summary="Start a drill (it runs on; its result is kept)",
             status_code=202)  # fmt: skip
def drill(model: ModelName, body: DrillBody, st: State,
          principal: Annotated[Principal, Depends(require(Right.DRILL))]) -> Any:  # fmt: skip
    from backout.control.drills import run_drill
    from backout.traffic.faults import parse_fault

    fault = parse_fault(body.fault)  # bad input is refused now, not in the background
    st.controller.deployments.require(model)
    if body.release is not None:
        st.registry.get(f"{model}@{body.release}")

    def go() -> None:
        try:
            run_drill(st.store, st.registry, model, fault, actor=principal.name, after=body.after_s,
                      timeout=body.timeout_s, release=body.release, on_progress=None)  # fmt: skip
        except Exception:  # recorded by the drill itself where it can; never kills the API
            import logging

            logging.getLogger("backout.api").exception("drill of %s failed", model)

    threading.Thread(target=go, name=f"backout-drill-{model}", daemon=True).start()
    return JSONResponse({"model": model, "fault": body.fault, "started": True,
                         "history": f"/api/v1/models/{model}/drills"}, status_code=202)  # fmt: skip
