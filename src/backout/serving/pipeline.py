"""The request path: what the gateway does with one inference request, start to answer.

For the gateway's inference routes (:mod:`backout.serving.app` routes them here): pick the
release from the route table (a version in the path or header pins it, a routing key keeps
it sticky, else the weights decide), take its predictor from the warm pool, decode the
body, call the runtime within the timeout (or the drill's injected fault), refuse answers
that are not finite or break the output contract, then record: the release's telemetry
batch, the capture sample, a shadow copy, Prometheus and the access log. A request keeps the
predictor it chose until it answers, so a route switch never fails or moves it.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from typing import Any

import numpy as np
import orjson
from starlette.requests import Request
from starlette.responses import Response

from backout.errors import BackoutError, ValidationError
from backout.runtimes import ModelError, UpstreamError, UpstreamTimeout
from backout.runtimes.tensors import BINARY_HEADER, NUMERIC_KINDS, outputs_to_predictions
from backout.serving.capture import DEFAULT_CAPTURE, CaptureBuffer, captured_request
from backout.serving.codecs import (
    HTTPError,
    check_datatypes,
    client_kind,
    decode_binary,
    decode_inputs,
    json_answer,
    oip_answer,
    parse_object,
    read_body,
    release_kind,
)
from backout.serving.pool import Loaded, WarmPool
from backout.serving.shadow import Mirror
from backout.serving.telemetry import AccessLog, Metrics, Recorder, correlation, output_labels
from backout.telemetry.batches import ClientErrorKind, ErrorKind
from backout.traffic import routes as routing
from backout.traffic.deployments import LiveState

access_log = logging.getLogger("backout.access")

PIN_HEADER = "x-backout-version"
KEY_HEADER = "x-backout-key"
WORKER_HEADER = "x-backout-worker"  # which worker answered: shows each worker's switch
STOOD_IN_HEADER = "x-backout-stood-in-for"  # the routed release that could not answer
# The request headers an inference route reads (ASGI gives names in lower case).
JSON_ROUTE_HEADERS = frozenset(
    h.encode() for h in ("traceparent", "x-request-id", PIN_HEADER, KEY_HEADER, "content-length")
)
OIP_ROUTE_HEADERS = JSON_ROUTE_HEADERS | {BINARY_HEADER.encode()}


class Pipeline:
    """One worker's request path over the route state it currently serves.

    ``live`` is replaced whole when the worker applies a new route state; a request reads it
    when it starts and keeps the release it chose.
    """

    def __init__(
        self,
        pool: WarmPool,
        recorder: Recorder,
        captures: CaptureBuffer,
        metrics: Metrics,
        access: AccessLog | None,
        mirror: Mirror,
        *,
        worker_id: str,
        max_body_bytes: int,
        predict_timeout_s: float,
    ) -> None:
        self.pool = pool
        self.recorder = recorder
        self.captures = captures
        self.metrics = metrics
        self.access = access
        self.mirror = mirror
        self.worker_id = worker_id
        self.max_body_bytes = max_body_bytes
        self.predict_timeout_s = predict_timeout_s
        self.live = LiveState(generation=-1, tables={}, quarantined={}, known_good={})

    async def json_predict(self, request: Request) -> Response:
        return await self.serve(request, oip=False)

    async def oip_infer(self, request: Request) -> Response:
        return await self.serve(request, oip=True)

    async def serve(self, request: Request, *, oip: bool) -> Response:
        """Answer one inference request on the JSON route or the Open Inference Protocol."""
        t0 = time.perf_counter()
        names = OIP_ROUTE_HEADERS if oip else JSON_ROUTE_HEADERS
        # One pass over the raw headers for the few this route reads; Starlette's Headers
        # scans the whole list again on every lookup.
        hdr = {
            k.decode("latin-1"): v.decode("latin-1")
            for k, v in request.scope["headers"]
            if k in names
        }
        rid, trace_headers = correlation(hdr)
        model = request.path_params["model"]
        version: str | None = None
        entry: Loaded | None = None  # set once a loaded release took the request: it counts
        stood_in: str | None = None  # the release that could not answer, when another did
        failure: HTTPError | None = None
        try:
            table = self.table(model)
            pinned = request.path_params.get("version") or hdr.get(PIN_HEADER)
            version = routing.choose(table, key=hdr.get(KEY_HEADER), pinned=pinned)
            entry = self.pool.entries.get((model, version))
            if entry is None:  # the slow path: only when a routed release is not loaded here
                # A key pinned in the route table is as pinned as a version in the request.
                held = pinned is not None or hdr.get(KEY_HEADER) in table.pins
                entry = self.stand_in(model, version, table, pinned=held, t0=t0)
                stood_in, version = version, entry.release.version
            raw = await read_body(request.receive, hdr.get("content-length"), self.max_body_bytes)
            binary_len = hdr.get(BINARY_HEADER) if oip else None
            body: dict[str, Any]
            if binary_len is None:
                body = parse_object(raw)
                inputs = decode_inputs(body, entry, oip=oip)
            else:
                body, inputs = decode_binary(raw, binary_len)
            if entry.input_kinds:  # a numeric input sent strings is the caller's error
                for arr in inputs.values():
                    if arr.dtype.kind not in NUMERIC_KINDS:
                        check_datatypes(entry.release.ref, inputs, entry.input_kinds)
                        break
            fault = self.live.faults.get((model, version)) if self.live.faults else None
            if fault is not None and fault.active(time.time()):
                outputs = await self._faulty_infer(entry, inputs, fault)
            else:
                outputs = await self._infer(entry, inputs)
            predictions = self._check_outputs(entry, outputs)
            headers = {
                "x-request-id": rid,
                "x-backout-release": f"{model}@{version}",
                WORKER_HEADER: self.worker_id,
                **trace_headers,
            }
            if stood_in is not None:
                headers[STOOD_IN_HEADER] = f"{model}@{stood_in}"
            # Encoded before it is counted: an answer that cannot be sent is the release's error.
            response = self._answer(entry, oip, rid, body, outputs, predictions, headers)
            rule = self.live.capture.get(model, DEFAULT_CAPTURE)
            if rule.rate > 0 and random.random() < rule.rate:
                captured = captured_request(body, inputs, oip=oip, rule=rule)
                self.captures.add(model, version, rid, "oip" if oip else "json",
                                  time.perf_counter() - t0, captured, predictions)  # fmt: skip
            # Look the batch up only now: the flusher may have swapped batches during the await.
            self.recorder.batch(model, version).observe(
                time.perf_counter() - t0, outputs=output_labels(outputs)
            )
            shadow = routing.should_mirror(table)
            if shadow is not None and shadow != version:
                self.mirror.send(model, shadow, inputs, outputs)
        except HTTPError as exc:
            headers = {"x-request-id": rid, WORKER_HEADER: self.worker_id, **trace_headers}
            if version is not None:
                headers["x-backout-release"] = f"{model}@{version}"
            if entry is not None and version is not None:
                batch = self.recorder.batch(model, version)
                if exc.status < 500:
                    # The caller's fault: counted apart, never as the release's error.
                    exc.kind = client_kind(exc)
                    batch.refuse(exc.kind)
                else:
                    exc.kind = release_kind(exc)
                    batch.observe(time.perf_counter() - t0, error=exc.kind)
            exc.request_id = rid
            exc.headers = headers
            failure = exc
        latency = time.perf_counter() - t0
        if failure is None:
            status = 200
            self.metrics.observe(model, version or "-", 200, latency)
        else:
            status = failure.status
            kind = client_kind(failure) if status < 500 else release_kind(failure)
            self.metrics.observe(model, version or "-", status, latency, kind.value)
        if self.access is not None or access_log.isEnabledFor(logging.INFO):
            line = {
                "request_id": rid, "model": model, "release": version, "status": status,
                "latency_ms": round(latency * 1000, 3), "path": request.scope["path"],
                "key": hdr.get(KEY_HEADER),
            }  # fmt: skip
            if stood_in is not None:
                line["stood_in_for"] = stood_in
            if self.access is not None:
                self.access.write(line)
            else:  # an embedding application routed the "backout.access" logger itself
                access_log.info(orjson.dumps(line).decode())
        if failure is not None:
            raise failure  # answered by the app's handler, as every route's errors are
        return response

    def table(self, model: str) -> routing.RouteTable:
        """The model's route table; 404 naming the served models when it has none here."""
        table = self.live.tables.get(model)
        if table is None:
            known = ", ".join(sorted(self.live.tables)) or "none"
            raise HTTPError(404, f"model {model!r} is not served here; served models: {known}")
        return table

    def fallback(self, model: str, table: routing.RouteTable) -> Loaded | None:
        """The stable release: the loaded release of ``model`` with the most traffic."""
        weights = table.weights
        loaded = [v for v in weights if (model, v) in self.pool.entries]
        if not loaded:
            return None
        best = max(loaded, key=lambda v: (weights[v], v))
        return self.pool.entries[(model, best)]

    def stand_in(
        self, model: str, version: str, table: routing.RouteTable, *, pinned: bool, t0: float
    ) -> Loaded:
        """The release that answers a request routed to ``version``, which is not loaded.

        A release that failed to load counts the request as its error (kind ``load``), so
        its triggers and judges see that it cannot answer; an unpinned request is then
        answered by the stable release instead, a pinned one gets 503 naming the release.
        """
        failure = self.pool.failures.get((model, version))
        if failure is not None:
            self.recorder.batch(model, version).observe(
                time.perf_counter() - t0, error=ErrorKind.LOAD
            )
        if not pinned and (failure is not None or (model, version) in self.live.quarantined):
            entry = self.fallback(model, table)
            if entry is not None:
                if failure is not None:
                    self.metrics.count_error(model, version, "release", ErrorKind.LOAD.value)
                return entry
        if failure is not None:
            fix = (
                "the request is pinned to it, so no other release answers; unpin it or fix "
                "the release"
                if pinned
                else f"no loaded release of {model} can stand in"
            )
            raise HTTPError(
                503,
                f"release {model}@{version} could not be loaded: {failure}; {fix}",
                ErrorKind.LOAD,
            )
        return self.loaded(model, version, table)

    def loaded(self, model: str, version: str, table: routing.RouteTable) -> Loaded:
        """The warm release that answers; 409 when quarantined, 503 when it failed to load."""
        entry = self.pool.entries.get((model, version))
        if entry is not None:
            return entry
        reason = self.live.quarantined.get((model, version))
        if reason is not None:
            raise HTTPError(409, f"release {model}@{version} is quarantined: {reason}")
        failure = self.pool.failures.get((model, version))
        if failure is not None:
            raise HTTPError(503, f"release {model}@{version} could not be loaded: {failure}")
        served = sorted(v for m, v in self.pool.entries if m == model)
        raise HTTPError(
            404,
            f"release {model}@{version} is not served here; served versions: {', '.join(served) or 'none'}",
        )

    async def _infer(self, entry: Loaded, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        try:
            # asyncio.timeout, not wait_for: wait_for wraps the call in a new task, which cost
            # more than an in-process model's whole prediction.
            async with asyncio.timeout(self.predict_timeout_s):
                return await entry.predictor.infer(inputs)
        except (TimeoutError, UpstreamTimeout) as exc:
            raise HTTPError(
                504,
                f"release {entry.release.ref} did not answer within {self.predict_timeout_s:g} s",
                ErrorKind.TIMEOUT,
            ) from exc
        except UpstreamError as exc:
            raise HTTPError(502, exc.message, ErrorKind.UPSTREAM) from exc
        except ValidationError as exc:
            raise HTTPError(422, exc.message, ClientErrorKind.INPUT) from exc
        except ModelError as exc:
            raise HTTPError(
                500, f"release {entry.release.ref} failed: {exc.message}", ErrorKind.MODEL
            ) from exc
        except BackoutError as exc:
            raise HTTPError(
                500, f"release {entry.release.ref} failed: {exc.message}", ErrorKind.MODEL
            ) from exc
        except Exception as exc:  # the model's own code raised: count it, answer 500
            raise HTTPError(
                500, f"release {entry.release.ref} raised {type(exc).__name__}", ErrorKind.MODEL
            ) from exc

    async def _faulty_infer(
        self, entry: Loaded, inputs: dict[str, np.ndarray], fault: Any
    ) -> dict[str, np.ndarray]:
        """Answer as the drill's fault says: the way a real incident would look to callers."""
        if fault.kind == "crash" or (fault.kind == "errors" and random.random() < fault.value):
            raise HTTPError(
                500,
                f"release {entry.release.ref} failed: injected fault ({fault.label}, a drill)",
                ErrorKind.MODEL,
            )
        if fault.kind == "latency":
            await asyncio.sleep(fault.value)
        outputs = await self._infer(entry, inputs)
        if fault.kind == "nan" and random.random() < fault.value:
            outputs = {
                k: np.full(v.shape, np.nan) if v.dtype.kind == "f" else v
                for k, v in outputs.items()
            }
        return outputs

    def _check_outputs(self, entry: Loaded, outputs: dict[str, np.ndarray]) -> list[Any]:
        for name, arr in outputs.items():
            if arr.dtype.kind in "fc" and not np.isfinite(arr).all():
                raise HTTPError(
                    500,
                    f"release {entry.release.ref} returned NaN or infinity in {name!r}",
                    ErrorKind.NONFINITE,
                )
        try:
            predictions = outputs_to_predictions(outputs)
        except ValidationError as exc:
            raise self._unsendable(entry, exc) from exc
        if entry.output_validator is not None:
            violations = entry.output_validator.check_batch(predictions)
            if violations:
                raise HTTPError(
                    500,
                    f"release {entry.release.ref} broke its output contract: {violations[0]}",
                    ErrorKind.OUTPUT_CONTRACT,
                )
        return predictions

    def _answer(
        self,
        entry: Loaded,
        oip: bool,
        rid: str,
        body: dict[str, Any],
        outputs: dict[str, np.ndarray],
        predictions: list[Any],
        headers: dict[str, str],
    ) -> Response:
        model, version = entry.release.model, entry.release.version
        try:
            if oip:
                return oip_answer(model, version, rid, body, outputs, headers)
            return json_answer(model, version, predictions, headers)
        except (ValidationError, TypeError) as exc:  # e.g. an output dtype with no OIP datatype
            raise self._unsendable(entry, exc) from exc

    @staticmethod
    def _unsendable(entry: Loaded, exc: Exception) -> HTTPError:
        why = exc.message if isinstance(exc, BackoutError) else f"{type(exc).__name__}: {exc}"
        return HTTPError(
            500,
            f"release {entry.release.ref} returned outputs that cannot be sent: {why}",
            ErrorKind.OUTPUT_CONTRACT,
        )
