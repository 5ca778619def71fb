"""Operation routes: deploy, rollback, promote, abort, pause, resume, approve, freeze, unfreeze.

Each is one call into the controller (the same call the command line makes), in the
caller's name. The right it needs is in :mod:`backout.api.roles`; a rollback to a release
that is not known-good needs ``deploy``; a responder may take a releaser's right with
``break_glass: true`` and a reason (recorded as a bypass and notified). What the model's
policy says needs approval answers 202 with the waiting request instead of running.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import Depends, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from backout.api import approvals
from backout.api.auth import (
    Principal,
    authorize,
    current_principal,
    deny,
    record_bypass,
    require,
)
from backout.api.roles import Right
from backout.api.routes.common import Action, ModelName, Reason, break_glass_of, router
from backout.api.state import ApiState, api_state
from backout.control.phases import Phase
from backout.errors import Conflict

__all__ = ["routes"]

routes = router("operations")
Caller = Annotated[Principal, Depends(current_principal)]
State = Annotated[ApiState, Depends(api_state)]
_WAITING: dict[int | str, dict[str, Any]] = {
    202: {"description": "The policy says this needs an approver: the waiting request"}
}


class DeployBody(Action):
    """Start a gated rollout of a release (on a model with nothing live: make it live)."""

    version: str = Field(min_length=1, max_length=128)
    policy: str | None = Field(default=None, max_length=1 << 20, description="Policy YAML")
    override_bad: bool = Field(
        default=False, description="Deploy a release marked bad anyway (needs a reason; audited)"
    )


class RollbackBody(Action):
    """Roll back to ``to`` (default: the policy's target, usually the last known-good)."""

    to: str | None = Field(default=None, min_length=1, max_length=128)
    mode: Literal["emergency", "staged"] | None = None  # None: the policy's mode


class FreezeBody(BaseModel):
    """Why traffic must halt (or why it is safe to move it again)."""

    reason: str = Field(min_length=1, max_length=2000)


def _finish(request: Request, principal: Principal, model: ModelName, right: Right, bypass: bool,
            reason: str, what: str) -> None:  # fmt: skip
    if bypass:
        record_bypass(request, principal, right, model, reason, what)


def _start(request: Request, principal: Principal, st: ApiState, model: ModelName, action: str,
           right: Right, params: dict[str, Any], body: Action, what: str) -> Any:  # fmt: skip
    """Run ``action`` now, or ask for approval when the policy says it waits."""
    bypass = authorize(request, principal, right, model, break_glass=break_glass_of(body))
    why = approvals.needs_approval(st.controller, model, action, params)
    if why:
        doc = approvals.ask(st, model, action, params, why, principal)
        _finish(request, principal, model, right, bypass, body.reason, f"asked to {what}")
        return JSONResponse({"approval": doc}, status_code=202)
    op = approvals.run(st.controller, model, action, params, principal.name)
    _finish(request, principal, model, right, bypass, body.reason, what)
    return op.to_dict()


@routes.post(
    "/models/{model}/deploy", summary="Roll a release out in gated steps", responses=_WAITING
)
def deploy(
    model: ModelName, body: DeployBody, request: Request, principal: Caller, st: State
) -> Any:
    if body.policy is not None:
        from backout.control.policy import parse_policy

        authorize(request, principal, Right.POLICIES, model)
        authorize(request, principal, Right.DEPLOY, model, break_glass=break_glass_of(body))
        st.controller.set_policy(
            model, parse_policy(body.policy), source="api", actor=principal.name
        )
    params = {"version": body.version, "reason": body.reason, "override_bad": body.override_bad}
    return _start(request, principal, st, model, "deploy", Right.DEPLOY, params, body,
                  f"deploy {model}@{body.version}")  # fmt: skip


@routes.post("/models/{model}/rollback", summary="Roll back to a known-good release, then verify it",
             responses=_WAITING)  # fmt: skip
def rollback(model: ModelName, request: Request, principal: Caller, st: State,
             body: RollbackBody | None = None) -> Any:  # fmt: skip
    body = body or RollbackBody()
    # A rollback is the responder's (to known-good) or the releaser's: first either right.
    if not (principal.can(Right.DEPLOY, model) or principal.can(Right.ROLLBACK, model)):
        # The refusal names the right this rollback needs, when the caller may see why.
        needed = Right.ROLLBACK
        if principal.can(Right.READ, model) and not _known_good_target(st, model, body.to):
            needed = Right.DEPLOY
        authorize(request, principal, needed, model, break_glass=break_glass_of(body))
    known_good = _known_good_target(st, model, body.to)
    right = Right.ROLLBACK if known_good else Right.DEPLOY
    if right == Right.ROLLBACK and not principal.can(Right.ROLLBACK, model):
        right = Right.DEPLOY  # a releaser rolling back: its own right
    params = {"to": body.to, "mode": body.mode, "reason": body.reason, "known_good": known_good}
    return _start(request, principal, st, model, "rollback", right, params, body,
                  f"roll {model} back to {body.to or 'its policy target'}")  # fmt: skip


def _known_good_target(st: ApiState, model: ModelName, to: str | None) -> bool:
    """Whether the rollback goes to a known-good release (not quarantined)."""
    if to is None:
        target = st.controller.policy_for(model).rollback.target
        if target == "last-known-good":
            return True  # the controller finds one, or refuses
        to = str(target)
    rel = st.registry.get(f"{model}@{to}")
    return rel.known_good and not rel.quarantined


@routes.post(
    "/models/{model}/promote", summary="Skip a rollout's remaining steps", responses=_WAITING
)
def promote(model: ModelName, request: Request, principal: Caller, st: State,
            body: Action | None = None) -> Any:  # fmt: skip
    body = body or Action()
    return _start(request, principal, st, model, "promote", Right.PROMOTE,
                  {"reason": body.reason}, body, f"promote {model}")  # fmt: skip


@routes.post("/models/{model}/abort", summary="Stop the rollout or rollback")
def abort(model: ModelName, principal: Annotated[Principal, Depends(require(Right.ABORT))], st: State,
          body: Reason | None = None) -> dict[str, Any]:  # fmt: skip
    op = st.controller.abort(model, actor=principal.name, reason=(body or Reason()).reason)
    return op.to_dict()


@routes.post("/models/{model}/pause", summary="Hold the rollout or rollback where it is")
def pause(model: ModelName, principal: Annotated[Principal, Depends(require(Right.PAUSE))], st: State,
          body: Reason | None = None) -> dict[str, Any]:  # fmt: skip
    op = st.controller.pause(model, actor=principal.name, reason=(body or Reason()).reason)
    return op.to_dict()


@routes.post(
    "/models/{model}/resume", summary="Resume a paused operation (or approve a waiting step)"
)
def resume(model: ModelName, request: Request, principal: Caller, st: State,
           body: Action | None = None) -> dict[str, Any]:  # fmt: skip
    body = body or Action()
    op = st.controller.active(model)
    if op is not None and op.phase == Phase.AWAITING_APPROVAL:
        return approve_step(model, request, principal, st, body)
    # Resuming a held rollout moves traffic forward: the releaser's right (or break-glass).
    right = Right.DEPLOY if op is not None and op.kind == "rollout" else Right.PAUSE
    bypass = authorize(request, principal, right, model, break_glass=break_glass_of(body))
    resumed = st.controller.resume(model, actor=principal.name, reason=body.reason)
    _finish(
        request, principal, model, right, bypass, body.reason, f"resume {model}'s {resumed.kind}"
    )
    return resumed.to_dict()


@routes.post("/models/{model}/approve", summary="Approve the step a gate left to a person")
def approve_step(model: ModelName, request: Request, principal: Caller, st: State,
                 body: Reason | None = None) -> dict[str, Any]:  # fmt: skip
    authorize(request, principal, Right.APPROVE, model)
    op = st.controller.active(model)
    if op is None or op.phase != Phase.AWAITING_APPROVAL:
        raise Conflict(f"{model} has no step awaiting approval"
                       + (f" ({op.kind} is {op.phase.value})" if op else ""))  # fmt: skip
    if op.actor == principal.name:
        deny(request, principal, Right.APPROVE, model, f"{principal.name} started this {op.kind}: "
             "an approver never approves their own request; ask another approver")  # fmt: skip
    return st.controller.resume(
        model, actor=principal.name, reason=(body or Reason()).reason
    ).to_dict()


@routes.post("/models/{model}/freeze", summary="Halt every traffic change of a model")
def freeze(model: ModelName, body: FreezeBody, st: State,
           principal: Annotated[Principal, Depends(require(Right.FREEZE))]) -> dict[str, Any]:  # fmt: skip
    st.controller.freeze_by_hand(model, actor=principal.name, reason=body.reason)
    return {"model": model, "frozen": st.controller.frozen(model)}


@routes.post("/models/{model}/unfreeze", summary="Lift a freeze")
def unfreeze(model: ModelName, body: FreezeBody, st: State,
             principal: Annotated[Principal, Depends(require(Right.FREEZE))]) -> dict[str, Any]:  # fmt: skip
    st.controller.unfreeze(model, actor=principal.name, reason=body.reason)
    return {"model": model, "frozen": None, "hint": st.controller.split_hint(model)}


# -- approval requests ----------------------------------------------------------------------


@routes.get("/approvals", summary="Approval requests of the models the caller may read")
def approvals_all(principal: Caller, st: State, status: Literal["pending", "approved", "denied", "failed"] | None = None) -> list[dict[str, Any]]:  # fmt: skip
    docs = approvals.list_approvals(st, None, status=status)
    return [d for d in docs if principal.can(Right.READ, d["model"])]


@routes.get("/models/{model}/approvals", summary="One model's approval requests")
def approvals_of(model: ModelName, st: State, principal: Annotated[Principal, Depends(require(Right.READ))],
                 status: Literal["pending", "approved", "denied", "failed"] | None = None) -> list[dict[str, Any]]:  # fmt: skip
    return approvals.list_approvals(st, [model], status=status)


@routes.post(
    "/models/{model}/approvals/{approval_id}/approve", summary="Approve (and run) a request"
)
def approve(model: ModelName, approval_id: int, st: State,
            principal: Annotated[Principal, Depends(require(Right.APPROVE))],
            body: Reason | None = None) -> dict[str, Any]:  # fmt: skip
    return approvals.decide(st, model, approval_id, principal, approve=True,
                            reason=(body or Reason()).reason)  # fmt: skip


@routes.post("/models/{model}/approvals/{approval_id}/deny", summary="Deny a request")
def deny_request(model: ModelName, approval_id: int, st: State,
         principal: Annotated[Principal, Depends(require(Right.APPROVE))],
         body: Reason | None = None) -> dict[str, Any]:  # fmt: skip
    return approvals.decide(st, model, approval_id, principal, approve=False,
                            reason=(body or Reason()).reason)  # fmt: skip
