"""The data path's HTTP interface as an OpenAPI document: the Open Inference Protocol (v2)
routes the gateway answers, and its JSON ``predict`` routes.

For callers who generate clients, and for the tests that check every answer of the
gateway against it. The gateway's errors are ``{"error": "one line"}``, as the protocol
says; 500 is a release that raised while predicting (counted as its error), 502/504 an HTTP
upstream that failed or timed out, and 503 a release not loaded (yet) here.
"""

from __future__ import annotations

from typing import Any

__all__ = ["openapi"]

_ERROR = {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}}
_MODEL = {"name": "model", "in": "path", "required": True,
          "schema": {"type": "string", "pattern": "^[a-z0-9][a-z0-9_-]{0,62}$"}}  # fmt: skip
_VERSION = {"name": "version", "in": "path", "required": True,
            "schema": {"type": "string", "maxLength": 128}}  # fmt: skip
_KEY = {"name": "X-Routing-Key", "in": "header", "required": False,
        "schema": {"type": "string", "maxLength": 256}}  # fmt: skip
_TENSOR = {
    "type": "object",
    "required": ["name", "shape", "datatype", "data"],
    "properties": {
        "name": {"type": "string"},
        "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}},
        "datatype": {"type": "string"},
        "parameters": {"type": "object"},
        "data": {"type": "array"},
    },
}


def _errors(*codes: int) -> dict[str, Any]:
    return {str(c): {"description": "An error, on one line",
                     "content": {"application/json": {"schema": _ERROR}}} for c in codes}  # fmt: skip


def _json(schema: dict[str, Any], description: str = "OK") -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _infer(params: list[dict[str, Any]]) -> dict[str, Any]:
    request = {"type": "object", "required": ["inputs"], "properties": {
        "id": {"type": "string"}, "parameters": {"type": "object"},
        "inputs": {"type": "array", "items": _TENSOR},
        "outputs": {"type": "array", "items": {"type": "object"}}}}  # fmt: skip
    answer = {"type": "object", "required": ["model_name", "outputs"], "properties": {
        "model_name": {"type": "string"}, "model_version": {"type": "string"},
        "id": {"type": "string"}, "outputs": {"type": "array", "items": _TENSOR}}}  # fmt: skip
    return {"post": {
        "summary": "Open Inference Protocol: infer", "parameters": [*params, _KEY],
        "requestBody": {"required": True, "content": {"application/json": {"schema": request}}},
        "responses": {"200": _json(answer), **_errors(400, 404, 409, 413, 415, 422, 429, 500, 502, 503, 504)},
    }}  # fmt: skip


def _predict(params: list[dict[str, Any]]) -> dict[str, Any]:
    request = {"type": "object", "required": ["instances"],
               "properties": {"instances": {"type": "array"}}}  # fmt: skip
    answer = {"type": "object", "required": ["predictions"],
              "properties": {"predictions": {"type": "array"}, "model": {"type": "string"},
                             "version": {"type": "string"}}}  # fmt: skip
    return {"post": {
        "summary": "Predict (JSON instances)", "parameters": [*params, _KEY],
        "requestBody": {"required": True, "content": {"application/json": {"schema": request}}},
        "responses": {"200": _json(answer), **_errors(400, 404, 409, 413, 415, 422, 429, 500, 502, 503, 504)},
    }}  # fmt: skip


def _get(
    summary: str, params: list[dict[str, Any]], schema: dict[str, Any], *codes: int
) -> dict[str, Any]:
    return {"get": {"summary": summary, "parameters": params,
                    "responses": {"200": _json(schema), **_errors(*codes)}}}  # fmt: skip


def openapi() -> dict[str, Any]:
    """The document: OpenAPI 3.1, every data-path route."""
    meta = {"type": "object", "required": ["name"], "properties": {
        "name": {"type": "string"}, "versions": {"type": "array", "items": {"type": "string"}},
        "platform": {"type": "string"}, "inputs": {"type": "array"}, "outputs": {"type": "array"}}}  # fmt: skip
    ready = {"type": "object", "required": ["ready"], "properties": {"ready": {"type": "boolean"}}}
    live = {"type": "object", "required": ["live"], "properties": {"live": {"type": "boolean"}}}
    m, mv = [_MODEL], [_MODEL, _VERSION]
    return {
        "openapi": "3.1.0",
        "info": {"title": "backout gateway (data path)", "version": "2"},
        "paths": {
            "/v2/health/live": _get("Liveness", [], live),
            "/v2/health/ready": _get("Readiness: every live release loaded", [], ready, 503),
            "/v2/models/{model}": _get("Model metadata", m, meta, 404, 503),
            "/v2/models/{model}/ready": _get("Model readiness", m, ready, 404, 503),
            "/v2/models/{model}/versions/{version}": _get(
                "Release metadata", mv, meta, 404, 409, 422, 503
            ),
            "/v2/models/{model}/versions/{version}/ready": _get(
                "Release readiness", mv, ready, 404, 409, 422, 503
            ),
            "/v2/models/{model}/infer": _infer(m),
            "/v2/models/{model}/versions/{version}/infer": _infer(mv),
            "/models/{model}/predict": _predict(m),
            "/models/{model}/versions/{version}/predict": _predict(mv),
        },
    }
