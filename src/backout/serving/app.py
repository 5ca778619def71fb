"""The gateway: the data plane that serves releases by route table (ASGI, Starlette).

Each worker process holds the route tables in memory and polls the store's routes
generation every few milliseconds; on a change it loads any release it lacks into the warm
pool *first* and then swaps its state in a single assignment. A request picks its release
at the start and keeps that predictor until it answers, so no request ever fails or changes
release because of a switch.

Protocols: the Open Inference Protocol (KServe / Triton "v2" REST) and a simple JSON route,
``POST /models/{model}/predict`` with ``{"instances": [...]}`` or ``{"inputs": {...}}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import socket
import sys
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from backout.errors import BackoutError, ValidationError
from backout.registry.artifacts import BlobStore
from backout.registry.releases import Registry
from backout.runtimes import ModelError, UpstreamError, UpstreamTimeout
from backout.runtimes.tensors import (
    BINARY_HEADER,
    decode_binary_request,
    decode_tensors,
    encode_binary_response,
    encode_tensors,
    json_to_inputs,
    outputs_to_predictions,
    wants_binary,
)
from backout.serving.capture import CaptureBuffer, add_labels, scrub, write_captures
from backout.serving.changes import ChangeWatch
from backout.serving.pool import Loaded, WarmPool
from backout.serving.telemetry import AccessLog, Recorder, correlation, metrics_for
from backout.store import Store, read_generation
from backout.telemetry.batches import ErrorKind, write_batches
from backout.traffic import routes as routing
from backout.traffic.deployments import CaptureRule, Deployments, LiveState

access_log = logging.getLogger("backout.access")
log = logging.getLogger("backout.gateway")

PIN_HEADER = "x-backout-version"
DEFAULT_CAPTURE = CaptureRule()
KEY_HEADER = "x-backout-key"
WORKER_HEADER = "x-backout-worker"  # which worker answered: shows each worker's switch
# The request headers an inference route reads (ASGI gives names in lower case).
_JSON_HEADERS = frozenset(
    h.encode() for h in ("traceparent", "x-request-id", PIN_HEADER, KEY_HEADER, "content-length")
)
_OIP_HEADERS = _JSON_HEADERS | {BINARY_HEADER.encode()}


@dataclass
class GatewaySettings:
    """How one gateway worker behaves."""

    max_body_bytes: int = 1 << 20  # 1 MiB; larger bodies get 413
    warm_rollback_points: int = 2  # known-good releases per model kept loaded
    poll_interval_s: float = 0.005  # how often the routes generation is checked
    flush_interval_s: float = 1.0  # telemetry batch length
    predict_timeout_s: float = 30.0  # a model slower than this answers 504
    access_log: bool = False  # JSON access lines to stderr, written about once a second
    worker_id: str = field(default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}")


class HTTPError(Exception):
    """An error answer, raised inside a request and turned into a response in one place."""

    def __init__(self, status: int, message: str, kind: ErrorKind | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.kind = kind


def _json(data: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    return Response(
        orjson.dumps(data, option=orjson.OPT_SERIALIZE_NUMPY),
        status_code=status,
        headers=headers,
        media_type="application/json",
    )


class Gateway:
    """One worker's data plane: state, warm pool, telemetry and the ASGI app."""

    def __init__(
        self, store: Store, blobs: BlobStore, settings: GatewaySettings | None = None
    ) -> None:
        self.store = store
        self.blobs = blobs
        self.settings = settings or GatewaySettings()
        self.registry = Registry(store, blobs)
        self.deployments = Deployments(store, self.registry)
        self.pool = WarmPool(
            self.registry, blobs, close_grace_s=self.settings.predict_timeout_s + 5.0
        )
        self.recorder = Recorder(self.settings.worker_id)
        self.captures = CaptureBuffer()
        self.metrics = metrics_for()
        self.live = LiveState(generation=-1, tables={}, quarantined={}, known_good={})
        self.ready = False
        self.switches: list[tuple[int, float]] = []  # (generation, monotonic time applied)
        self._tasks: list[asyncio.Task[None]] = []
        self._background: set[asyncio.Task[None]] = set()
        self._refresh_lock = asyncio.Lock()
        self._watch = ChangeWatch(store)
        self.access = AccessLog(sys.stderr.buffer) if self.settings.access_log else None
        self.app = Starlette(routes=self._routes(), lifespan=self._lifespan)

    # -- lifecycle ---------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _lifespan(self, _app: Starlette) -> AsyncIterator[None]:
        await self.refresh(force=True)
        self.ready = True
        self._tasks = [
            asyncio.create_task(self._poll_routes(), name="backout-poll-routes"),
            asyncio.create_task(self._flush_telemetry(), name="backout-flush-telemetry"),
        ]
        try:
            yield
        finally:
            for t in self._tasks:
                t.cancel()
            for t in self._tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await t
            self.flush()
            self.metrics.flush()
            if self.access is not None:
                self.access.flush()
            await self.pool.aclose()
            self._watch.close()

    async def refresh(self, *, force: bool = False) -> bool:
        """Reload state if the routes generation moved; True when a new state was applied."""
        async with self._refresh_lock:
            if not force:
                if not self._watch.maybe_changed():
                    return False
                with self.store.read() as conn:
                    if read_generation(conn) == self.live.generation:
                        return False
            if self.store.is_sqlite:
                # A local read of about 0.3 ms: done on the event loop. In a thread it waited
                # for the GIL at every SQLite call behind a busy loop (the 5 ms switch
                # interval each time), which made a switch take ~90 ms under load.
                live = self.deployments.live_state()
            else:
                live = await asyncio.to_thread(self.deployments.live_state)
            wanted: set[tuple[str, str]] = set()
            for model, table in live.tables.items():
                wanted |= {(model, v) for v in table.versions if (model, v) not in live.quarantined}
                good = live.known_good.get(model, [])[: self.settings.warm_rollback_points]
                wanted |= {(model, v) for v in good}
            # Load first, swap after: a switch never waits on a load once it is visible.
            await self.pool.ensure(wanted)
            self.live = live
            self.switches.append((live.generation, time.monotonic()))
            del self.switches[:-1000]
            for (model, version), entry in self.pool.entries.items():
                self.metrics.warm_bytes.labels(model, version).set(entry.memory_bytes)
            return True

    async def _poll_routes(self) -> None:
        while True:
            await asyncio.sleep(self.settings.poll_interval_s)
            try:
                await self.refresh()
            except Exception:  # keep serving on the last good state; say why once per failure
                log.exception("route refresh failed; serving generation %s", self.live.generation)
                await asyncio.sleep(1.0)

    async def _flush_telemetry(self) -> None:
        while True:
            await asyncio.sleep(self.settings.flush_interval_s)
            self.metrics.flush()
            if self.access is not None:
                self.access.flush()
            # Drain on the event loop (no request is mid-update then), write off it.
            batches = self.recorder.drain()
            captured = self.captures.drain()
            try:
                await asyncio.to_thread(self._write, batches, captured)
            except Exception:  # telemetry must never take the data plane down
                log.exception("telemetry flush failed; will retry")

    def flush(self) -> int:
        """Write this worker's finished batches (and captures) to the store; returns how many."""
        return self._write(self.recorder.drain(), self.captures.drain())

    def _write(self, batches: list[Any], captured: list[dict[str, Any]]) -> int:
        n = write_batches(self.store, batches, self.settings.worker_id)
        bounds = {m: r.max_rows for m, r in self.live.capture.items()}
        write_captures(self.store, captured, bounds)
        return n

    # -- routes ------------------------------------------------------------------------

    def _routes(self) -> list[Route]:
        # Starlette tries routes in order, one regular expression each: the inference
        # routes go first, so a prediction does not pay for matching the others.
        return [
            Route("/models/{model}/predict", self.json_predict, methods=["POST"]),
            Route("/v2/models/{model}/infer", self.oip_infer, methods=["POST"]),
            Route(
                "/models/{model}/versions/{version}/predict", self.json_predict, methods=["POST"]
            ),
            Route("/v2/models/{model}/versions/{version}/infer", self.oip_infer, methods=["POST"]),
            Route("/v2/health/live", self.live_endpoint, methods=["GET"]),
            Route("/v2/health/ready", self.ready_endpoint, methods=["GET"]),
            Route("/v2/models/{model}", self.model_metadata, methods=["GET"]),
            Route("/v2/models/{model}/ready", self.model_ready, methods=["GET"]),
            Route("/v2/models/{model}/versions/{version}", self.model_metadata, methods=["GET"]),
            Route("/v2/models/{model}/versions/{version}/ready", self.model_ready, methods=["GET"]),
            Route("/metrics", self.metrics_endpoint, methods=["GET"]),
            Route("/backout/state", self.state_endpoint, methods=["GET"]),
            Route("/backout/feedback", self.feedback, methods=["POST"]),
        ]

    async def live_endpoint(self, request: Request) -> Response:
        return _json({"live": True})

    async def ready_endpoint(self, request: Request) -> Response:
        missing = [
            f"{m}@{v}"
            for m, t in self.live.tables.items()
            for v in t.weights
            if (m, v) not in self.pool.entries
        ]
        ok = self.ready and not missing
        return _json({"ready": ok, "not_loaded": missing}, status=200 if ok else 503)

    async def model_metadata(self, request: Request) -> Response:
        model = request.path_params["model"]
        version = request.path_params.get("version")
        try:
            entry = self._entry_for_metadata(model, version)
        except HTTPError as exc:
            return _json({"error": exc.message}, status=exc.status)
        p = entry.predictor
        manifest = entry.release.manifest
        tensors = (manifest.contract.input or {}).get("x-backout-tensors") or [
            {"name": n, "datatype": "FP32", "shape": [-1, len(p.feature_names or []) or -1]}
            for n in p.input_names
        ]
        return _json({
            "name": model,
            "versions": sorted(self.live.tables[model].versions) if model in self.live.tables else [],
            "platform": manifest.runtime.kind.value,
            "inputs": tensors,
            "outputs": [{"name": n, "datatype": "FP32", "shape": [-1]} for n in p.output_names],
        })  # fmt: skip

    async def model_ready(self, request: Request) -> Response:
        model = request.path_params["model"]
        version = request.path_params.get("version")
        try:
            self._entry_for_metadata(model, version)
        except HTTPError as exc:
            return _json({"error": exc.message}, status=exc.status)
        return _json({"name": model, "ready": True})

    def _entry_for_metadata(self, model: str, version: str | None) -> Loaded:
        table = self._table(model)
        if version is None:
            version = max(table.weights, key=lambda v: table.weights[v])
        return self._loaded(model, version, table)

    async def metrics_endpoint(self, request: Request) -> Response:
        body, content_type = self.metrics.exposition()
        return Response(body, media_type=content_type)

    async def state_endpoint(self, request: Request) -> Response:
        return _json({
            "worker": self.settings.worker_id,
            "generation": self.live.generation,
            "tables": {m: t.to_dict() for m, t in self.live.tables.items()},
            "warm": [e.to_dict() for e in self.pool.entries.values()],
            "load_failures": {f"{m}@{v}": why for (m, v), why in self.pool.failures.items()},
        })  # fmt: skip

    # -- inference ---------------------------------------------------------------------

    async def json_predict(self, request: Request) -> Response:
        return await self._serve(request, oip=False)

    async def oip_infer(self, request: Request) -> Response:
        return await self._serve(request, oip=True)

    async def _serve(self, request: Request, *, oip: bool) -> Response:
        t0 = time.perf_counter()
        names = _OIP_HEADERS if oip else _JSON_HEADERS
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
        counted = False  # True once the request reached a loaded release: errors count for it
        status = 200
        try:
            table = self._table(model)
            pinned = request.path_params.get("version") or hdr.get(PIN_HEADER)
            version = routing.choose(table, key=hdr.get(KEY_HEADER), pinned=pinned)
            entry = self._loaded(model, version, table)
            raw = await self._read(request, hdr.get("content-length"))
            binary_len = hdr.get(BINARY_HEADER) if oip else None
            body: dict[str, Any]
            if binary_len is None:
                body = self._parse(raw)
                counted = True
                inputs = self._inputs(body, entry, oip=oip)
            else:
                counted = True
                try:
                    body, inputs = decode_binary_request(raw, binary_len)
                except ValidationError as exc:
                    raise HTTPError(400, exc.message, ErrorKind.INPUT_CONTRACT) from exc
            fault = self.live.faults.get((model, version)) if self.live.faults else None
            if fault is not None and fault.active(time.time()):
                outputs = await self._faulty_infer(entry, inputs, fault)
            else:
                outputs = await self._infer(entry, inputs)
            predictions = self._check_outputs(entry, outputs)
            rule = self.live.capture.get(model, DEFAULT_CAPTURE)
            if rule.rate > 0 and random.random() < rule.rate:
                self._capture(model, version, rid, oip, t0, body, inputs, predictions, rule)
            # Look the batch up only now: the flusher may have swapped batches during the await.
            self.recorder.batch(model, version).observe(
                time.perf_counter() - t0, outputs=_labels(outputs)
            )
            mirror = routing.should_mirror(table)
            if mirror is not None and mirror != version:
                self._spawn(self._shadow(model, mirror, inputs, outputs))
            headers = {
                "x-request-id": rid,
                "x-backout-release": f"{model}@{version}",
                WORKER_HEADER: self.settings.worker_id,
                **trace_headers,
            }
            if oip:
                wanted = {o.get("name") for o in body.get("outputs") or [] if isinstance(o, dict)}
                sent = {k: v for k, v in outputs.items() if not wanted or k in wanted}
                head = {"model_name": model, "model_version": version, "id": body.get("id") or rid}
                binary = {k for k in sent if wants_binary(body, k)}
                if binary:
                    data, json_len = encode_binary_response(head, sent, binary)
                    headers[BINARY_HEADER] = str(json_len)
                    response = Response(
                        data, headers=headers, media_type="application/octet-stream"
                    )
                else:
                    response = _json({**head, "outputs": encode_tensors(sent)}, headers=headers)
            else:
                doc = {"predictions": predictions, "model": model, "version": version}
                response = _json(doc, headers=headers)
        except HTTPError as exc:
            status = exc.status
            if counted and version is not None:
                kind = exc.kind or ErrorKind.INPUT_CONTRACT
                self.recorder.batch(model, version).observe(time.perf_counter() - t0, error=kind)
            headers = {"x-request-id": rid, WORKER_HEADER: self.settings.worker_id, **trace_headers}
            if version is not None:
                headers["x-backout-release"] = f"{model}@{version}"
            body_err = {"error": exc.message, "request_id": rid}
            response = _json(body_err, status=status, headers=headers)
        latency = time.perf_counter() - t0
        self.metrics.observe(model, version or "-", status, latency)
        if self.access is not None or access_log.isEnabledFor(logging.INFO):
            line = {
                "request_id": rid, "model": model, "release": version, "status": status,
                "latency_ms": round(latency * 1000, 3), "path": request.scope["path"],
                "key": hdr.get(KEY_HEADER),
            }  # fmt: skip
            if self.access is not None:
                self.access.write(line)
            else:  # an embedding application routed the "backout.access" logger itself
                access_log.info(orjson.dumps(line).decode())
        return response

    def _table(self, model: str) -> routing.RouteTable:
        table = self.live.tables.get(model)
        if table is None:
            known = ", ".join(sorted(self.live.tables)) or "none"
            raise HTTPError(404, f"model {model!r} is not served here; served models: {known}")
        return table

    def _loaded(self, model: str, version: str, table: routing.RouteTable) -> Loaded:
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

    async def _read(self, request: Request, declared: str | None) -> bytes:
        limit = self.settings.max_body_bytes
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise HTTPError(413, f"request body is {int(declared):,} bytes; the limit is {limit:,}")
        # Straight from the ASGI receive channel: Request.stream() wraps every message in an
        # async generator, which costs more than the small body it carries.
        chunks: list[bytes] = []
        size = 0
        receive = request.receive
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise HTTPError(400, "the client disconnected before sending the whole body")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise HTTPError(413, f"request body exceeds the limit of {limit:,} bytes")
            chunks.append(chunk)
            if not message.get("more_body", False):
                return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    def _parse(self, raw: bytes) -> dict[str, Any]:
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise HTTPError(400, f"malformed JSON: {exc}") from exc
        if not isinstance(body, dict):
            raise HTTPError(400, f"the body must be a JSON object, not {type(body).__name__}")
        return body

    def _inputs(self, body: dict[str, Any], entry: Loaded, *, oip: bool) -> dict[str, np.ndarray]:
        p = entry.predictor
        instances = None if oip else body.get("instances")
        if entry.input_validator is not None and isinstance(instances, list):
            violations = entry.input_validator.check_batch(instances)
            if violations:
                v = violations[0]
                raise HTTPError(
                    422,
                    f"input breaks the contract of {entry.release.ref}: {v}",
                    ErrorKind.INPUT_CONTRACT,
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
                ErrorKind.INPUT_CONTRACT,
            ) from exc
        return inputs

    async def _infer(self, entry: Loaded, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        try:
            # asyncio.timeout, not wait_for: wait_for wraps the call in a new task, which cost
            # more than an in-process model's whole prediction.
            async with asyncio.timeout(self.settings.predict_timeout_s):
                return await entry.predictor.infer(inputs)
        except (TimeoutError, UpstreamTimeout) as exc:
            raise HTTPError(
                504,
                f"release {entry.release.ref} did not answer within {self.settings.predict_timeout_s:g} s",
                ErrorKind.TIMEOUT,
            ) from exc
        except UpstreamError as exc:
            raise HTTPError(502, exc.message, ErrorKind.UPSTREAM) from exc
        except ValidationError as exc:
            raise HTTPError(422, exc.message, ErrorKind.INPUT_CONTRACT) from exc
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
        predictions = outputs_to_predictions(outputs)
        if entry.output_validator is not None:
            violations = entry.output_validator.check_batch(predictions)
            if violations:
                raise HTTPError(
                    500,
                    f"release {entry.release.ref} broke its output contract: {violations[0]}",
                    ErrorKind.OUTPUT_CONTRACT,
                )
        return predictions

    def _capture(self, model: str, version: str, rid: str, oip: bool, t0: float, body: dict[str, Any],
                 inputs: dict[str, np.ndarray], predictions: list[Any], rule: CaptureRule) -> None:  # fmt: skip
        if oip:
            request: dict[str, Any] = {"inputs": encode_tensors(inputs)}
        else:
            # The rule's fields are scrubbed wherever a caller put them: top level or per instance.
            request = scrub([{k: v for k, v in body.items() if k != "instances"}], rule)[0]
            if "instances" in body:
                request["instances"] = scrub(body["instances"], rule)
        self.captures.add(
            model,
            version,
            rid,
            "oip" if oip else "json",
            time.perf_counter() - t0,
            request,
            predictions,
        )

    async def feedback(self, request: Request) -> Response:
        """Ground truth for a captured request: ``{"request_id": ..., "labels": [...]}``."""
        try:
            body = self._parse(await self._read(request, request.headers.get("content-length")))
        except HTTPError as exc:
            return _json({"error": exc.message}, status=exc.status)
        rid = body.get("request_id")
        if not isinstance(rid, str) or "labels" not in body:
            return _json({"error": 'send {"request_id": "...", "labels": [...]}'}, status=422)
        found = await asyncio.to_thread(add_labels, self.store, rid, body["labels"])
        if not found:
            return _json(
                {"error": f"request {rid!r} was not captured (only a sample is)"}, status=404
            )
        return _json({"request_id": rid, "labelled": True})

    # -- shadow ------------------------------------------------------------------------

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _shadow(
        self, model: str, version: str, inputs: dict[str, np.ndarray], live: dict[str, np.ndarray]
    ) -> None:
        """Answer a copy of a live request with the shadow release and record the difference."""
        entry = self.pool.entries.get((model, version))
        if entry is None:
            return
        n = _batch_size(live)
        try:
            out = await asyncio.wait_for(
                entry.predictor.infer(inputs), self.settings.predict_timeout_s
            )
            disagree, diff = _compare(live, out)
        except Exception:  # a failing shadow is recorded as disagreeing, never seen by callers
            disagree, diff = n, 0.0
        batch = self.recorder.batch(model, version)
        batch.shadow_requests += n
        batch.shadow_disagreements += disagree
        batch.shadow_abs_diff_sum += diff


def _batch_size(outputs: Mapping[str, np.ndarray]) -> int:
    for arr in outputs.values():
        return int(arr.shape[0]) if arr.ndim else 1
    return 1


def _labels(outputs: Mapping[str, np.ndarray]) -> list[str]:
    """Output summaries for telemetry: class labels, or scores binned in tenths."""
    label = outputs.get("label")
    if label is not None:
        return [str(x) for x in label.tolist()]
    for arr in outputs.values():
        if arr.dtype.kind in "fiu" and arr.ndim == 1:
            return [f"score:{x:.1f}" for x in arr.tolist()]
        break
    return []


def _compare(live: Mapping[str, np.ndarray], shadow: Mapping[str, np.ndarray]) -> tuple[int, float]:
    """Disagreements (labels, or scores beyond 1e-6) and the summed absolute difference."""
    for name in ("label", "prediction", *live.keys()):
        a, b = live.get(name), shadow.get(name)
        if a is None or b is None or a.shape != b.shape:
            continue
        if a.dtype.kind in "fiu" and b.dtype.kind in "fiu":
            d = (
                np.abs(a.astype(np.float64) - b.astype(np.float64))
                .reshape(a.shape[0], -1)
                .sum(axis=1)
            )
            return int((d > 1e-6).sum()), float(d.sum())
        return int((a != b).reshape(a.shape[0], -1).any(axis=1).sum()), 0.0
    return _batch_size(live), 0.0


def create_app() -> Starlette:
    """Factory for ``uvicorn --factory``: settings come from the environment."""
    from pathlib import Path

    from backout.registry.artifacts import LocalBlobStore
    from backout.store import open_store

    store = open_store(os.environ.get("BACKOUT_STORE"), migrate=False)
    home = Path(os.environ.get("BACKOUT_HOME", ".backout"))
    blobs = LocalBlobStore(Path(os.environ.get("BACKOUT_ARTIFACTS") or home / "artifacts"))
    settings = GatewaySettings(
        access_log=bool(os.environ.get("BACKOUT_ACCESS_LOG")),
        max_body_bytes=int(os.environ.get("BACKOUT_MAX_BODY_BYTES", 1 << 20)),
        warm_rollback_points=int(os.environ.get("BACKOUT_WARM_ROLLBACK_POINTS", 2)),
    )
    return Gateway(store, blobs, settings).app
