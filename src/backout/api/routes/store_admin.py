"""Store-wide admin routes: trusted signing keys, retention, and reports by incident id.

Keys (the ``keys`` right) and retention (the ``retention`` right) concern the store as a
whole, so only a grant on every model holds them. ``/reports/{incident}`` serves
``backout report INCIDENT``, whose argument names no model: the incident is looked up
first and the ``read`` right checked on its model; an incident of a model out of the
caller's scope answers 404, as one that does not exist, so that ids do not tell.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Query
from pydantic import BaseModel, Field

from backout.api.auth import Principal, current_principal, require
from backout.api.roles import Right
from backout.api.routes.common import ModelName, router
from backout.api.state import ApiState, api_state
from backout.errors import NotFound, ValidationError

__all__ = ["routes"]

routes = router("admin")
State = Annotated[ApiState, Depends(api_state)]
KeysAdmin = Annotated[Principal, Depends(require(Right.KEYS))]
RetentionAdmin = Annotated[Principal, Depends(require(Right.RETENTION))]


class KeyBody(BaseModel):
    """A public key to trust: its name, and its 32 bytes in hex."""

    name: str = Field(min_length=1, max_length=128)
    public_key: str = Field(pattern=r"^[0-9a-fA-F]{64}$", description="Ed25519 public key, hex")


class RetentionBody(BaseModel):
    """How long to keep each kind ('14d', '36h', 'forever'); the ones left out stay."""

    telemetry: str | None = Field(default=None, max_length=64)
    captures: str | None = Field(default=None, max_length=64)
    events: str | None = Field(default=None, max_length=64)
    outbox: str | None = Field(default=None, max_length=64)


class PruneBody(BaseModel):
    """Prune now; ``dry_run`` only counts."""

    dry_run: bool = False


@routes.get("/keys", summary="The trusted signing keys")
def list_keys(principal: KeysAdmin, st: State,
              removed: Annotated[bool, Query()] = False) -> list[dict[str, Any]]:  # fmt: skip
    from backout.registry.signing import Keyring

    return [k.to_dict() for k in Keyring(st.store).list(include_removed=removed)]


@routes.post("/keys", summary="Trust a public key", status_code=201)
def add_key(body: KeyBody, principal: KeysAdmin, st: State) -> dict[str, Any]:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    from backout.registry.signing import Keyring

    try:
        key = Ed25519PublicKey.from_public_bytes(bytes.fromhex(body.public_key))
    except ValueError as exc:
        raise ValidationError(f"public_key is not an Ed25519 public key: {exc}") from exc
    return Keyring(st.store).add(body.name, key, actor=principal.name).to_dict()


@routes.delete("/keys/{key}", summary="Stop trusting a key (by name or id)")
def remove_key(key: str, principal: KeysAdmin, st: State,
               reason: Annotated[str, Query(max_length=2000)] = "") -> dict[str, Any]:  # fmt: skip
    from backout.registry.signing import Keyring

    return Keyring(st.store).remove(key, actor=principal.name, reason=reason).to_dict()


@routes.get("/retention", summary="How long each kind of data is kept")
def get_retention(principal: RetentionAdmin, st: State) -> dict[str, str]:
    from backout.store import retention

    with st.store.read() as conn:
        return retention.read(conn).to_dict()


@routes.put("/retention", summary="Change how long kinds of data are kept")
def set_retention(body: RetentionBody, principal: RetentionAdmin, st: State) -> dict[str, str]:
    from backout.errors import ConfigError
    from backout.store import retention

    given = body.model_dump(exclude_none=True)
    changes = {k: retention.parse_keep(k, v) for k, v in given.items()}
    if not changes:
        raise ConfigError(
            "nothing to set: give at least one of --telemetry, --captures, --events, --outbox"
        )
    return retention.write(st.store, actor=principal.name, **changes).to_dict()


@routes.post("/retention/prune", summary="Remove what is past its retention now")
def prune(principal: RetentionAdmin, st: State, body: PruneBody | None = None) -> dict[str, Any]:
    from backout.store import retention

    dry_run = body.dry_run if body is not None else False
    return retention.prune_all(st.store, actor=principal.name, dry_run=dry_run).to_dict()


def _bundle(st: ApiState, incident: int) -> dict[str, Any]:
    from backout.reports.builder import build_report
    from backout.reports.writer import render_html, render_markdown

    report = build_report(st.store, incident)
    return {"report": report.to_dict(), "html": render_html(report),
            "markdown": render_markdown(report)}  # fmt: skip


@routes.get("/reports/{incident}", summary="An incident's report by id: JSON, HTML and Markdown")
def report_by_id(incident: int, st: State,
                 principal: Annotated[Principal, Depends(current_principal)]) -> dict[str, Any]:  # fmt: skip
    from backout.reports.builder import incident_model

    model = incident_model(st.store, incident)
    if model is None or not principal.can(Right.READ, model):
        raise NotFound(
            f"incident {incident} does not exist: find one with `backout report MODEL --last`"
        )
    return _bundle(st, incident)


@routes.get("/models/{model}/report", summary="The model's newest incident's report")
def latest_report(model: ModelName, st: State,
                  principal: Annotated[Principal, Depends(require(Right.READ))]) -> dict[str, Any]:  # fmt: skip
    from backout.reports.builder import latest_incident

    return _bundle(st, latest_incident(st.store, model))
