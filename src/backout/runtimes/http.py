"""HTTP upstream runtime: forward to another model server speaking the Open Inference Protocol.

For releases served elsewhere (KServe, Triton, MLServer, Seldon): the gateway keeps routing,
telemetry and rollback, the upstream keeps the model. Requests go to
``POST {url}/v2/models/{model}[/versions/{model_version}]/infer`` with JSON tensors, over one
pooled :class:`httpx.AsyncClient` per loaded release.

``runtime.options``:

* ``url`` (required) — the upstream's base URL;
* ``model`` — its model name (default: the release's model); ``model_version`` — optional;
* ``timeout_s`` (default 10) — the whole request, connect to last byte;
  ``connect_timeout_s`` (default 2) — connecting;
* ``max_connections`` (default 64) — the pool size;
* ``inputs`` / ``outputs`` — tensor names; when both are given the upstream's metadata
  (``GET {url}/v2/models/{model}``) is not fetched at load, otherwise it is and a release
  whose upstream does not answer is not loaded;
* ``feature_names``, ``classes`` — as for the other runtimes.

Failures while predicting: no answer in time → :class:`UpstreamTimeout` (gateway: 504);
unreachable or a 5xx → :class:`UpstreamError` (502); a 400 or 422 — the upstream rejecting the
inputs — → :class:`~backout.errors.ValidationError` (422), with the upstream's message.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

import httpx
import numpy as np
import orjson

from backout.errors import UpstreamError, UpstreamTimeout, ValidationError
from backout.redaction import redact_text, redact_url
from backout.runtimes.base import LoadContext, gather_matrix
from backout.runtimes.tensors import DATATYPES, decode_tensors, encode_tensors

_JSON = {"content-type": "application/json"}
_MAX_METADATA_BYTES = 1 << 20


class HttpPredictor:
    """A release served by an upstream Open Inference Protocol server."""

    def __init__(
        self,
        ref: str,
        client: httpx.AsyncClient,
        infer_path: str,
        input_names: list[str],
        output_names: list[str],
        input_dtypes: Mapping[str, np.dtype[Any]],
        feature_names: list[str] | None,
        classes: list[str] | None,
    ) -> None:
        self.ref = ref
        self.client = client
        self.infer_path = infer_path
        # Shown in errors, so redacted: an upstream URL may carry a token.
        self.url = redact_url(f"{str(client.base_url).rstrip('/')}{infer_path}")
        self.input_names = input_names
        self.output_names = output_names
        self.feature_names = feature_names
        self.classes = classes
        self._dtypes = dict(input_dtypes)

    def _tensors(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        if len(self.input_names) == 1:
            name = self.input_names[0]
            arrays = {name: gather_matrix(self.ref, inputs, name, self.feature_names)}
        else:
            arrays = dict(inputs)
        # Strict servers (Triton) refuse FP64 for an FP32 input: send what the upstream declared.
        for name, dtype in self._dtypes.items():
            x = arrays.get(name)
            if x is not None and x.dtype != dtype:
                arrays[name] = x.astype(dtype)
        return arrays

    async def infer(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        body = orjson.dumps({"inputs": encode_tensors(self._tensors(inputs))})
        url = self.url
        try:
            # httpx bounds each connect and read; this bounds the whole request, so an
            # upstream that trickles its answer cannot hold a request past timeout_s.
            async with asyncio.timeout(_timeout_s(self.client)):
                resp = await self.client.post(self.infer_path, content=body, headers=_JSON)
        except (httpx.TimeoutException, TimeoutError) as exc:
            raise UpstreamTimeout(
                f"{self.ref}: upstream {url} did not answer within "
                f"{_timeout_s(self.client)} s ({type(exc).__name__}); check the upstream or raise "
                "runtime.options.timeout_s"
            ) from exc
        except httpx.TransportError as exc:
            raise UpstreamError(
                f"{self.ref}: upstream {url} cannot be reached "
                f"({type(exc).__name__}: {redact_text(str(exc))})"
            ) from exc
        if resp.status_code != 200:
            message = _error_text(resp)
            if resp.status_code in (400, 422):
                raise ValidationError(f"{self.ref}: upstream rejected the inputs: {message}")
            raise UpstreamError(
                f"{self.ref}: upstream {url} answered {resp.status_code}: {message}"
            )
        try:
            payload = orjson.loads(resp.content)
            return decode_tensors(payload["outputs"], what="outputs")
        except (orjson.JSONDecodeError, KeyError, TypeError, ValidationError) as exc:
            raise UpstreamError(
                f"{self.ref}: upstream {url} sent an answer that is not an Open Inference "
                f"Protocol response: {exc}"
            ) from exc

    def memory_bytes(self) -> int:
        # The model's memory is the upstream's; this process holds only a connection pool.
        return 0

    async def aclose(self) -> None:
        await self.client.aclose()


def _timeout_s(client: httpx.AsyncClient) -> float | None:
    return client.timeout.read


def _error_text(resp: httpx.Response, content: bytes | None = None) -> str:
    # The protocol's error body is {"error": "..."}; anything else is shown truncated.
    raw = resp.content if content is None else content
    try:
        body = orjson.loads(raw)
        if isinstance(body, dict) and isinstance(body.get("error"), str):
            return redact_text(str(body["error"]))
    except orjson.JSONDecodeError:
        pass
    return redact_text(raw[:200].decode("utf-8", "replace")) or resp.reason_phrase


def _names(ctx: LoadContext, key: str) -> list[str] | None:
    value = ctx.options.get(key)
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ctx.fail(f"runtime.options.{key} is {value!r}", "give a list of strings")
    return list(value)


def _metadata(ctx: LoadContext, base: str, path: str, timeout: httpx.Timeout) -> dict[str, Any]:
    url = redact_url(f"{base}{path}")
    total = timeout.read or 10.0
    deadline = time.monotonic() + total
    try:
        with httpx.Client(timeout=timeout) as client, client.stream("GET", f"{base}{path}") as resp:
            body = bytearray()
            for chunk in resp.iter_bytes():
                body += chunk
                if time.monotonic() > deadline:  # the whole answer, not each read, is bounded
                    raise httpx.ReadTimeout(f"no whole answer within {total:g} s")
                if len(body) > _MAX_METADATA_BYTES:
                    raise httpx.DecodingError(f"metadata larger than {_MAX_METADATA_BYTES:,} bytes")
            content = bytes(body)
    except httpx.HTTPError as exc:
        raise ctx.fail(
            f"its upstream {url} cannot be reached ({type(exc).__name__}: {redact_text(str(exc))})",
            "start the upstream, fix runtime.options.url, or give runtime.options.inputs and "
            "outputs to skip the metadata check",
        ) from exc
    if resp.status_code != 200:
        raise ctx.fail(
            f"its upstream answered {resp.status_code} for {url}: {_error_text(resp, content)}",
            "check runtime.options.model (and model_version) against the upstream's models",
        )
    try:
        meta = orjson.loads(content)
    except orjson.JSONDecodeError as exc:
        raise ctx.fail(f"{url} did not return JSON", "point url at an OIP server") from exc
    if not isinstance(meta, dict):
        raise ctx.fail(f"{url} returned {type(meta).__name__}", "point url at an OIP server")
    return meta


def load(ctx: LoadContext) -> HttpPredictor:
    """Create the pooled client and learn the upstream model's tensor names."""
    base = ctx.option_str("url").rstrip("/")
    if not base.startswith(("http://", "https://")):
        raise ctx.fail(f"runtime.options.url is {base!r}", "give an http:// or https:// URL")
    model = quote(ctx.option_str("model", ctx.manifest.model), safe="")
    version = ctx.options.get("model_version")
    path = f"/v2/models/{model}" + (f"/versions/{quote(str(version), safe='')}" if version else "")
    timeout = httpx.Timeout(
        ctx.option_float("timeout_s", 10.0), connect=ctx.option_float("connect_timeout_s", 2.0)
    )
    max_conn = ctx.options.get("max_connections", 64)
    if not isinstance(max_conn, int) or isinstance(max_conn, bool) or max_conn < 1:
        raise ctx.fail(f"runtime.options.max_connections is {max_conn!r}", "give an integer >= 1")
    inputs, outputs = _names(ctx, "inputs"), _names(ctx, "outputs")
    dtypes: dict[str, np.dtype[Any]] = {}
    if inputs is None or outputs is None:
        connect = min(ctx.option_float("connect_timeout_s", 2.0), ctx.timeout_s)
        meta = _metadata(ctx, base, path, httpx.Timeout(ctx.timeout_s, connect=connect))
        try:
            declared_in = [(t["name"], t.get("datatype")) for t in meta["inputs"]]
            declared_out = [t["name"] for t in meta["outputs"]]
        except (KeyError, TypeError) as exc:
            raise ctx.fail(
                f"the upstream's metadata lacks input or output tensors ({exc!r})",
                "give runtime.options.inputs and outputs",
            ) from exc
        inputs = inputs or [str(n) for n, _ in declared_in]
        outputs = outputs or [str(n) for n in declared_out]
        dtypes = {str(n): DATATYPES[d] for n, d in declared_in if d in DATATYPES and d != "BYTES"}
    client = httpx.AsyncClient(
        base_url=base,
        timeout=timeout,
        limits=httpx.Limits(max_connections=max_conn, max_keepalive_connections=max_conn),
    )
    return HttpPredictor(
        ctx.ref,
        client,
        f"{path}/infer",
        inputs,
        outputs,
        dtypes,
        _names(ctx, "feature_names"),
        _names(ctx, "classes"),
    )
