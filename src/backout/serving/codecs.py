"""Codecs: the bodies of the gateway's inference routes, in and out.

For the request path (:mod:`backout.serving.pipeline`): reading a body within the size
limit; decoding the JSON route's ``{"instances": [...]}`` or ``{"inputs": {...}}`` and the
Open Inference Protocol's JSON and binary tensor forms into input tensors; and encoding the
answers in the same forms. Tensor conversion itself is :mod:`backout.runtimes.tensors`; this
module adds the HTTP side: status codes, media types, and :class:`HTTPError`, the error
answer every route raises, with the exception handlers the app registers to answer it and
any domain error.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive

from backout.errors import BackoutError, ValidationError
from backout.runtimes.tensors import (
    BINARY_HEADER,
    check_kinds,
    decode_binary_request,
    decode_tensors,
    encode_binary_response,
    encode_tensors,
    json_to_inputs,
    wants_binary,
)
from backout.serving.pool import Loaded
from backout.telemetry.batches import ClientErrorKind, ErrorKind


class HTTPError(Exception):
    """An error answer, raised inside a request and turned into a response in one place.

    :func:`http_error_response`, the app's handler for it, answers ``{"error": message}``
    with ``status``. An inference request adds its ``request_id`` (to the body as well)
    and its ``headers`` before it lets the error go. ``kind`` is how the release's
    telemetry counts the error: a 4xx is the caller's fault (a :class:`ClientErrorKind`,
    by default from the status, see :func:`client_kind`), a 5xx the release's (an
    :class:`ErrorKind`, by default ``model``).
    """

    def __init__(
        self, status: int, message: str, kind: ErrorKind | ClientErrorKind | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.kind = kind
        self.request_id: str | None = None
        self.headers: Mapping[str, str] | None = None


def json_response(
    data: Any, status: int = 200, headers: Mapping[str, str] | None = None
) -> Response:
    """``data`` as a JSON response (NumPy values included)."""
    return Response(
        orjson.dumps(data, option=orjson.OPT_SERIALIZE_NUMPY),
        status_code=status,
        headers=headers,
        media_type="application/json",
    )


def client_kind(exc: HTTPError) -> ClientErrorKind:
    """How a 4xx answer counts: its own kind, else by status (413 too large, 400 malformed,
    404 and 409 not served, any other 4xx bad input)."""
    if isinstance(exc.kind, ClientErrorKind):
        return exc.kind
    if exc.status == 413:
        return ClientErrorKind.TOO_LARGE
    if exc.status in (404, 409):
        return ClientErrorKind.NOT_SERVED
    return ClientErrorKind.MALFORMED if exc.status == 400 else ClientErrorKind.INPUT


def release_kind(exc: HTTPError) -> ErrorKind:
    """How a 5xx answer counts against the release: its own kind, else ``model``."""
    return exc.kind if isinstance(exc.kind, ErrorKind) else ErrorKind.MODEL


async def http_error_response(request: Request, exc: Exception) -> Response:
    """The app's answer to an :class:`HTTPError` raised by any route."""
    assert isinstance(exc, HTTPError)
    body = {"error": exc.message}
    if exc.request_id is not None:
        body["request_id"] = exc.request_id
    return json_response(body, status=exc.status, headers=exc.headers)


async def domain_error_response(request: Request, exc: Exception) -> Response:
    """The app's answer to a domain error a route let through: its message and ``http_status``."""
    assert isinstance(exc, BackoutError)
    return json_response({"error": exc.message}, status=exc.http_status)


# -- requests --------------------------------------------------------------------------------


async def read_body(receive: Receive, declared: str | None, limit: int) -> bytes:
    """The whole request body; 413 past ``limit`` bytes (declared or sent), 400 on a disconnect."""
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise HTTPError(413, f"request body is {int(declared):,} bytes; the limit is {limit:,}")
    # Straight from the ASGI receive channel: Request.stream() wraps every message in an
    # async generator, which costs more than the small body it carries.
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise HTTPError(
                400,
                "the client disconnected before sending the whole body",
                ClientErrorKind.DISCONNECTED,
            )
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise HTTPError(413, f"request body exceeds the limit of {limit:,} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def parse_object(raw: bytes) -> dict[str, Any]:
    """A JSON object body; 400 when it is malformed or not an object."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise HTTPError(400, f"malformed JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise HTTPError(400, f"the body must be a JSON object, not {type(body).__name__}")
    return body


def decode_inputs(body: dict[str, Any], entry: Loaded, *, oip: bool) -> dict[str, np.ndarray]:
    """The input tensors of a JSON body for ``entry``, checked against its input contract."""
    p = entry.predictor
    instances = None if oip else body.get("instances")
    if entry.input_validator is not None and isinstance(instances, list):
        violations = entry.input_validator.check_batch(instances)
        if violations:
            v = violations[0]
            raise HTTPError(
                422,
                f"input breaks the contract of {entry.release.ref}: {v}",
                ClientErrorKind.INPUT,
            )
    try:
        if oip:
            if "inputs" not in body:
                raise ValidationError('the body must have "inputs": a list of tensors')
            inputs = decode_tensors(body["inputs"])
        else:
            inputs = json_to_inputs(body, p.input_names, p.feature_names)
    except ValidationError as exc:
        raise HTTPError(
            exc.http_status if exc.http_status < 500 else 400,
            exc.message,
            ClientErrorKind.INPUT,
        ) from exc
    return inputs


def check_datatypes(ref: str, inputs: Mapping[str, np.ndarray], kinds: Mapping[str, str]) -> None:
    """422 when a tensor carries values of a kind its release's contract does not take,
    such as a BYTES tensor for a numeric input: the caller's error, never the model's."""
    try:
        check_kinds(ref, inputs, kinds)
    except ValidationError as exc:
        raise HTTPError(422, exc.message, ClientErrorKind.INPUT) from exc


def decode_binary(raw: bytes, json_length: str) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The JSON header and input tensors of an Open Inference Protocol binary request."""
    try:
        return decode_binary_request(raw, json_length)
    except ValidationError as exc:
        raise HTTPError(400, exc.message, ClientErrorKind.MALFORMED) from exc


# -- answers ---------------------------------------------------------------------------------


def json_answer(
    model: str, version: str, predictions: list[Any], headers: Mapping[str, str]
) -> Response:
    """The JSON route's answer: ``{"predictions": [...], "model": ..., "version": ...}``."""
    doc = {"predictions": predictions, "model": model, "version": version}
    return json_response(doc, headers=headers)


def oip_answer(
    model: str,
    version: str,
    request_id: str,
    body: Mapping[str, Any],
    outputs: Mapping[str, np.ndarray],
    headers: dict[str, str],
) -> Response:
    """The Open Inference Protocol answer: the outputs the request asked for, each in JSON
    or binary form as it asked."""
    wanted = {o.get("name") for o in body.get("outputs") or [] if isinstance(o, dict)}
    sent = {k: v for k, v in outputs.items() if not wanted or k in wanted}
    head = {"model_name": model, "model_version": version, "id": body.get("id") or request_id}
    binary = {k for k in sent if wants_binary(body, k)}
    if binary:
        data, json_len = encode_binary_response(head, sent, binary)
        headers[BINARY_HEADER] = str(json_len)
        return Response(data, headers=headers, media_type="application/octet-stream")
    return json_response({**head, "outputs": encode_tensors(sent)}, headers=headers)
