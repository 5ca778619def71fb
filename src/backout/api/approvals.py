"""Approvals: actions a model's policy says wait for an approver, and the actions themselves.

For the operation routes: :func:`needs_approval` says whether (and why) an action asked
through the API must wait (``approval`` in the policy: the start of a rollout, a promotion
to 100%, a rollback to a release that is not known-good). :func:`ask` records the request;
an approver — never the person who asked — decides it with :func:`decide`, which then runs
the action exactly as asked, in the asker's name. :func:`run` is the one place an action
is dispatched to the controller, whether it waited or not.
"""

from __future__ import annotations

import time
from typing import Any

import sqlalchemy as sa

from backout.api.auth import Principal
from backout.api.state import ApiState
from backout.control.controller import Controller
from backout.control.notify import Notice, NoticeKind
from backout.control.operations import Operation
from backout.errors import BackoutError, Conflict, Forbidden, NotFound
from backout.store import audit, schema

__all__ = ["ACTIONS", "ask", "decide", "get", "list_approvals", "needs_approval", "run"]

A = schema.approvals
ACTIONS = ("deploy", "promote", "rollback")


def needs_approval(ctl: Controller, model: str, action: str, params: dict[str, Any]) -> str:
    """Which rule of ``model``'s policy makes ``action`` wait for an approver ("" if none)."""
    rules = ctl.policy_for(model).approval
    if action == "deploy" and rules.rollout:
        return "the policy's approval.rollout: the start of a rollout needs an approver"
    if action == "promote" and rules.promote:
        return "the policy's approval.promote: a promotion to 100% needs an approver"
    if action == "rollback" and rules.rollback_not_known_good and not params.get("known_good"):
        return (
            "the policy's approval.rollback_not_known_good: a rollback to a release that is "
            "not known-good needs an approver"
        )
    return ""


def run(ctl: Controller, model: str, action: str, params: dict[str, Any], actor: str) -> Operation:
    """Run ``action`` on ``model`` with ``params``, in ``actor``'s name."""
    reason = str(params.get("reason", ""))
    if action == "deploy":
        return ctl.deploy(model, str(params["version"]), actor=actor, reason=reason,
                          override_bad=bool(params.get("override_bad")))  # fmt: skip
    if action == "promote":
        return ctl.promote(model, actor=actor, reason=reason)
    if action == "rollback":
        mode = params.get("mode")
        return ctl.rollback(model, actor=actor, to=params.get("to"), reason=reason,
                            emergency=None if mode is None else mode == "emergency")  # fmt: skip
    raise NotFound(f"unknown action {action!r}: one of {', '.join(ACTIONS)}")


def _doc(r: Any) -> dict[str, Any]:
    return {
        "id": r.id, "model": r.model, "action": r.action, "params": r.params, "why": r.why,
        "requested_by": r.requested_by, "requested_at": r.requested_at, "status": r.status,
        "decided_by": r.decided_by, "decided_at": r.decided_at, "result": r.result,
    }  # fmt: skip


def ask(st: ApiState, model: str, action: str, params: dict[str, Any], why: str,
        principal: Principal) -> dict[str, Any]:  # fmt: skip
    """Record a request for approval and tell the model's people; the action waits."""
    now = time.time()
    ctl = st.controller
    policy = ctl.policy_for(model)
    with st.store.write() as conn:
        new_id = conn.execute(
            A.insert().values(model=model, action=action, params=params, why=why,
                              requested_by=principal.name, requested_at=now, status="pending")
        ).inserted_primary_key[0]  # type: ignore[index]  # fmt: skip
        text = f"{principal.name} asks to {action} {model} ({_describe(action, params)}): {why}"
        audit.append(conn, "approval.requested", model=model, actor=principal.name, reason=text,
                     data={"approval": new_id, "action": action, "params": params,
                           "via": principal.via})  # fmt: skip
        ctl.send(model, policy, Notice(kind=NoticeKind.APPROVAL, model=model,
                                       title=f"{model}: {action} waits for an approver", text=text,
                                       fields={"approval": new_id, "asked_by": principal.name}),
                 conn=conn)  # fmt: skip
        row = conn.execute(sa.select(A).where(A.c.id == new_id)).one()
    return _doc(row)


def _describe(action: str, params: dict[str, Any]) -> str:
    shown = {k: v for k, v in params.items() if k not in ("reason", "known_good") and v is not None}
    return ", ".join(f"{k}={v}" for k, v in shown.items()) or "as the policy says"


def get(st: ApiState, model: str, approval_id: int) -> dict[str, Any]:
    """One approval request of ``model``."""
    with st.store.read() as conn:
        row = conn.execute(sa.select(A).where(A.c.id == approval_id, A.c.model == model)).first()
    if row is None:
        raise NotFound(f"{model} has no approval request {approval_id}")
    return _doc(row)


def list_approvals(st: ApiState, models: list[str] | None = None, *,
                   status: str | None = None) -> list[dict[str, Any]]:  # fmt: skip
    """Approval requests, newest first: of ``models`` (None: all), of one status."""
    q = sa.select(A).order_by(A.c.id.desc())
    if models is not None:
        q = q.where(A.c.model.in_(models))
    if status is not None:
        q = q.where(A.c.status == status)
    with st.store.read() as conn:
        return [_doc(r) for r in conn.execute(q.limit(1000))]


def decide(st: ApiState, model: str, approval_id: int, principal: Principal, *,
           approve: bool, reason: str = "") -> dict[str, Any]:  # fmt: skip
    """Approve (and run) or deny a pending request; never by the person who asked."""
    req = get(st, model, approval_id)
    if req["status"] != "pending":
        raise Conflict(f"approval request {approval_id} of {model} is {req['status']} already "
                       f"(by {req['decided_by']})")  # fmt: skip
    if req["requested_by"] == principal.name:
        with st.store.write() as conn:
            audit.append(conn, "access.denied", model=model, actor=principal.name,
                         reason=f"{principal.name} tried to decide their own approval request {approval_id}",
                         data={"right": "approve", "via": principal.via, "approval": approval_id})  # fmt: skip
        raise Forbidden(f"{principal.name} asked for approval request {approval_id}: an approver "
                        "never approves their own request; ask another approver", right="approve")  # fmt: skip
    verb = "approved" if approve else "denied"
    now = time.time()
    with st.store.write() as conn:
        claimed = conn.execute(
            A.update().where(A.c.id == approval_id, A.c.status == "pending")
            .values(status=verb, decided_by=principal.name, decided_at=now)
        ).rowcount  # fmt: skip
        if not claimed:
            raise Conflict(f"approval request {approval_id} of {model} was decided meanwhile")
        audit.append(conn, f"approval.{verb}", model=model, actor=principal.name,
                     reason=f"{verb} {req['action']} of {model} asked by {req['requested_by']}"
                     + (f": {reason}" if reason else ""),
                     data={"approval": approval_id, "via": principal.via})  # fmt: skip
    if not approve:
        return get(st, model, approval_id)
    try:
        op = run(st.controller, model, req["action"], req["params"], req["requested_by"])
    except BackoutError as exc:
        # Approved, but the store moved on since it was asked: the refusal is the answer.
        with st.store.write() as conn:
            conn.execute(A.update().where(A.c.id == approval_id)
                         .values(status="failed", result={"error": exc.message}))  # fmt: skip
        raise
    with st.store.write() as conn:
        conn.execute(A.update().where(A.c.id == approval_id)
                     .values(result={"operation": op.id}))  # fmt: skip
    return get(st, model, approval_id) | {"operation": op.to_dict()}
