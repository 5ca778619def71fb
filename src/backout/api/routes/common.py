"""What the route modules share: the error body's schema, and the responses every route
may give besides its own.

For :mod:`backout.api.routes`: each router is made with :func:`router`, so that its
OpenAPI lists the JSON error of 401, 403, 404, 409, 422 and 424 for every operation.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path
from pydantic import BaseModel, Field

from backout.api.auth import BreakGlass
from backout.errors import ValidationError
from backout.registry.manifest import MODEL_NAME

__all__ = ["Action", "ErrorBody", "ErrorDetail", "ModelName", "Reason", "break_glass_of", "router"]


class ErrorDetail(BaseModel):
    """One error: a stable code, and one line a person can act on."""

    code: str
    message: str
    retriable: bool = False
    right: str | None = None


class ErrorBody(BaseModel):
    """The body of every error answer."""

    error: ErrorDetail


# A model's name in a path, checked before any route runs (lower case, digits, '_', '-').
ModelName = Annotated[str, Path(pattern=MODEL_NAME.pattern, description="A model's name")]

_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorBody, "description": "Bad input"},
    401: {"model": ErrorBody, "description": "No token, or an unknown, revoked or expired one"},
    403: {
        "model": ErrorBody,
        "description": "The role lacks the right, or the model is out of scope",
    },
    404: {"model": ErrorBody, "description": "No such model, release, incident or token"},
    409: {"model": ErrorBody, "description": "The request contradicts what the store holds"},
    422: {"model": ErrorBody, "description": "A value breaks the rules"},
    424: {"model": ErrorBody, "description": "The store, a router or the telemetry failed: retry"},
}


# For routes that answer HTML or text: their errors are JSON all the same.
JSON_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"description": spec["description"],
           "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}}
    for code, spec in _ERRORS.items()
}  # fmt: skip


def router(tag: str) -> APIRouter:
    """A router whose operations document every error answer."""
    return APIRouter(tags=[tag], responses=_ERRORS)


class Reason(BaseModel):
    """Why, for the audit log."""

    reason: str = Field(default="", max_length=2000)


class Action(Reason):
    """An action a responder may take with break-glass (a releaser's right), with a reason."""

    break_glass: bool = False


def break_glass_of(body: Action | None) -> BreakGlass | None:
    """The break-glass ``body`` asks for, or None; refused without a reason."""
    if body is None or not body.break_glass:
        return None
    if not body.reason.strip():
        raise ValidationError(
            "break_glass needs a reason: say why, for the audit log and the on-call"
        )
    return BreakGlass(body.reason)
