"""Release routes: list, show, verify, register (files uploaded as base64), mark known-good,
mark and clear bad, quarantine, delete.

The same registry calls as ``backout release ...``; registering needs ``register``, marking
known-good ``approve``, marking bad ``rollback`` or ``approve``, clearing a bad mark
``approve``, quarantining ``quarantine``.
"""

from __future__ import annotations

import base64
import binascii
import tempfile
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, Query, Request
from pydantic import BaseModel, Field

from backout.api.auth import Principal, authorize, current_principal, record_bypass, require
from backout.api.roles import Right
from backout.api.routes.common import Action, ModelName, Reason, break_glass_of, router
from backout.api.state import ApiState, api_state
from backout.errors import ArtifactError
from backout.registry.manifest import Contract, Lineage, RollbackPlan, Runtime, RuntimeKind

__all__ = ["routes"]

routes = router("releases")
State = Annotated[ApiState, Depends(api_state)]
Reader = Annotated[Principal, Depends(require(Right.READ))]
MAX_UPLOAD = 256 << 20  # bytes of all artifacts of one release


class ArtifactFile(BaseModel):
    """One file of a release, its bytes in base64."""

    path: str = Field(min_length=1, max_length=255, pattern=r"^[A-Za-z0-9._\-]+$")
    content_b64: str = Field(max_length=MAX_UPLOAD * 4 // 3 + 4)


class RegisterBody(Action):
    """A release to register: its files and what the manifest says about it."""

    artifacts: list[ArtifactFile] = Field(min_length=1, max_length=64)
    runtime: RuntimeKind = RuntimeKind.SKLEARN
    runtime_options: dict[str, str] = Field(default_factory=dict)
    contract: Contract | None = None
    config: dict[str, Any] | None = None
    changelog: str = Field(default="", max_length=20_000)
    rollback_plan: str = Field(default="", max_length=20_000)
    rollback_target: str | None = Field(default=None, max_length=128)
    owner: str = Field(default="", max_length=256)
    lineage: Lineage = Field(default_factory=Lineage)


class SignatureBody(BaseModel):
    """A signature over the release's manifest digest, made with a trusted key's private half."""

    key_id: str = Field(min_length=1, max_length=16)
    signature: str = Field(pattern=r"^[0-9a-f]{128}$", description="64 bytes, hex")


class MarkBody(Reason):
    """Mark a release known-good (a rollback point), or with ``unmark`` remove the mark."""

    unmark: bool = False


class QuarantineBody(Reason):
    """Bar a release from all traffic, or with ``lift`` allow it again."""

    lift: bool = False


@routes.get("/releases", summary="Releases of the models the caller may read, newest first")
def list_all(
    principal: Annotated[Principal, Depends(current_principal)], st: State,
    known_good: bool | None = None, owner: Annotated[str | None, Query(max_length=256)] = None,
    limit: Annotated[int | None, Query(ge=1, le=10_000)] = None,
) -> list[dict[str, Any]]:  # fmt: skip
    rels = st.registry.list(None, owner=owner, known_good=known_good or None)
    shown = [r.to_dict() for r in rels if principal.can(Right.READ, r.model)]
    return shown[:limit] if limit else shown


@routes.get("/models/{model}/releases", summary="One model's releases, newest first")
def list_model(
    model: ModelName, principal: Reader, st: State, known_good: bool | None = None,
    owner: Annotated[str | None, Query(max_length=256)] = None,
    limit: Annotated[int | None, Query(ge=1, le=10_000)] = None,
) -> list[dict[str, Any]]:  # fmt: skip
    rels = st.registry.list(model, owner=owner, known_good=known_good or None, limit=limit)
    return [r.to_dict() for r in rels]


@routes.get("/models/{model}/releases/{version}", summary="One release, with its known-good marks")
def show(model: ModelName, version: str, principal: Reader, st: State) -> dict[str, Any]:
    ref = f"{model}@{version}"
    rel = st.registry.get(ref)
    return {**rel.to_dict(), "marks": [m.to_dict() for m in st.registry.marks(ref)]}


@routes.get(
    "/models/{model}/releases/{version}/verify", summary="Re-hash a release, check its signature"
)
def verify(model: ModelName, version: str, principal: Reader, st: State) -> dict[str, Any]:
    from backout.registry.signing import check_release, signature_required

    report = st.registry.verify(f"{model}@{version}")
    with st.store.read() as conn:
        check = check_release(conn, report.ref)
        required = signature_required(conn, model)
    sig_ok = check.ok or (check.status == "unsigned" and not required)
    return {**report.to_dict(), "ok": report.ok and sig_ok,
            "signature": {**check.to_dict(), "required": required}}  # fmt: skip


@routes.put("/models/{model}/releases/{version}", summary="Register a release from its files")
def register(model: ModelName, version: str, body: RegisterBody, request: Request, st: State,
             principal: Annotated[Principal, Depends(current_principal)]) -> dict[str, Any]:  # fmt: skip
    bypass = authorize(request, principal, Right.REGISTER, model, break_glass=break_glass_of(body))
    total = 0
    with tempfile.TemporaryDirectory(prefix="backout-upload-") as tmp:
        paths: list[Path] = []
        for art in body.artifacts:
            try:
                data = base64.b64decode(art.content_b64, validate=True)
            except (binascii.Error, ValueError) as exc:
                raise ArtifactError(f"artifact {art.path!r}: content_b64 is not base64") from exc
            total += len(data)
            if total > MAX_UPLOAD:
                raise ArtifactError(
                    f"the artifacts exceed {MAX_UPLOAD >> 20} MiB: register from the command line"
                )
            p = Path(tmp) / art.path
            if p.exists() or art.path in (".", ".."):
                raise ArtifactError(
                    f"artifact path {art.path!r} is given twice or is not a file name"
                )
            p.write_bytes(data)
            paths.append(p)
        result = st.registry.register(
            model, version, paths, runtime=Runtime(kind=body.runtime, options=body.runtime_options),
            contract=body.contract, config=body.config, changelog=body.changelog,
            rollback_plan=RollbackPlan(text=body.rollback_plan, target=body.rollback_target),
            lineage=body.lineage, owner=body.owner, actor=principal.name,
        )  # fmt: skip
    if bypass:
        record_bypass(
            request, principal, Right.REGISTER, model, body.reason, f"register {model}@{version}"
        )
    return {"created": result.created, **result.release.to_dict()}


@routes.post(
    "/models/{model}/releases/{version}/signatures", summary="Add a signature made elsewhere"
)
def sign(model: ModelName, version: str, body: SignatureBody, st: State,
         principal: Annotated[Principal, Depends(require(Right.REGISTER))]) -> dict[str, Any]:  # fmt: skip
    from backout.registry.signing import add_signature

    check = add_signature(st.store, f"{model}@{version}", body.key_id, body.signature,
                          actor=principal.name)  # fmt: skip
    return check.to_dict()


@routes.post("/models/{model}/releases/{version}/mark-good", summary="Mark (or unmark) known-good")
def mark_good(model: ModelName, version: str, st: State,
              principal: Annotated[Principal, Depends(require(Right.APPROVE))],
              body: MarkBody | None = None) -> dict[str, Any]:  # fmt: skip
    body = body or MarkBody()
    rel = st.controller.mark_good(f"{model}@{version}", actor=principal.name, reason=body.reason,
                                  good=not body.unmark)  # fmt: skip
    return rel.to_dict()


@routes.post("/models/{model}/releases/{version}/quarantine", summary="Bar a release from traffic")
def quarantine(model: ModelName, version: str, st: State,
               principal: Annotated[Principal, Depends(require(Right.QUARANTINE))],
               body: QuarantineBody | None = None) -> dict[str, Any]:  # fmt: skip
    body = body or QuarantineBody()
    rel = st.registry.quarantine(f"{model}@{version}", actor=principal.name, reason=body.reason,
                                 lift=body.lift)  # fmt: skip
    return rel.to_dict()


@routes.delete("/models/{model}/releases/{version}", summary="Delete a release that never served")
def delete(model: ModelName, version: str, st: State,
           principal: Annotated[Principal, Depends(require(Right.REGISTER))],
           reason: Annotated[str, Query(min_length=1, max_length=2000)]) -> dict[str, Any]:  # fmt: skip
    st.registry.delete(f"{model}@{version}", actor=principal.name, reason=reason)
    return {"deleted": f"{model}@{version}"}


@routes.post("/models/{model}/releases/{version}/mark-bad", summary="Mark a release bad")
def mark_bad(model: ModelName, version: str, body: Reason, request: Request, st: State,
             principal: Annotated[Principal, Depends(current_principal)]) -> dict[str, Any]:  # fmt: skip
    # A restriction, not a risk: whoever may roll back (a responder, in the incident) or
    # approve may say a release must not be a rollback target; clearing it is an approver's.
    if not principal.can(Right.APPROVE, model):
        authorize(request, principal, Right.ROLLBACK, model)
    return st.registry.mark_bad(f"{model}@{version}", actor=principal.name,
                                reason=body.reason).to_dict()  # fmt: skip


@routes.post("/models/{model}/releases/{version}/clear-bad", summary="Lift a release's bad mark")
def clear_bad(model: ModelName, version: str, body: Reason, st: State,
              principal: Annotated[Principal, Depends(require(Right.APPROVE))]) -> dict[str, Any]:  # fmt: skip
    return st.registry.clear_bad(f"{model}@{version}", actor=principal.name,
                                 reason=body.reason).to_dict()  # fmt: skip
