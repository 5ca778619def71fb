"""The gateway app: the data plane that serves releases by route table (ASGI, Starlette).

For operators (``backout serve`` runs :func:`create_app` in each uvicorn worker) and for
applications that embed a :class:`Gateway`. Each worker process holds the route tables in
memory and polls the store's routes generation every few milliseconds; on a change it loads
any release it lacks into the warm pool *first* and then swaps its state in a single
assignment. A request picks its release at the start and keeps that predictor until it
answers (:mod:`backout.serving.pipeline`), so no request ever fails or changes release
because of a switch.

Protocols: the Open Inference Protocol (KServe / Triton "v2" REST) and a simple JSON route,
``POST /models/{model}/predict`` with ``{"instances": [...]}`` or ``{"inputs": {...}}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from backout.errors import BackoutError
from backout.registry.artifacts import BlobStore
from backout.registry.releases import Registry
from backout.serving.capture import CaptureBuffer, add_labels, write_captures
from backout.serving.changes import ChangeWatch, StateGuard
from backout.serving.codecs import (
    HTTPError,
    domain_error_response,
    http_error_response,
    json_response,
    parse_object,
    read_body,
)
from backout.serving.pipeline import Pipeline
from backout.serving.pool import Loaded, WarmPool
from backout.serving.shadow import Mirror
from backout.serving.telemetry import AccessLog, Recorder, metrics_for
from backout.store import Outage, Store, read_generation
from backout.telemetry.batches import write_batches
from backout.traffic.deployments import Deployments, LiveState

log = logging.getLogger("backout.gateway")

# At about one batch per release per second, ten minutes of a few releases' telemetry.
MAX_UNSENT_BATCHES = 3000
MAX_UNSENT_CAPTURES = 10_000


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
        self.ready = False
        self.switches: list[tuple[int, float]] = []  # (generation, monotonic time applied)
        self._tasks: list[asyncio.Task[None]] = []
        self._refresh_lock = asyncio.Lock()
        self._watch = ChangeWatch(store)
        self._guard = StateGuard(store)
        worker = self.settings.worker_id
        self._route_outage = Outage(log, f"route refresh on worker {worker}")
        self._flush_outage = Outage(log, f"telemetry flush on worker {worker}")
        self._unsent: list[Any] = []  # telemetry batches not yet written (a store outage)
        self._uncaptured: list[dict[str, Any]] = []
        self.access = AccessLog(sys.stderr.buffer) if self.settings.access_log else None
        self.pipeline = Pipeline(
            self.pool,
            self.recorder,
            self.captures,
            self.metrics,
            self.access,
            Mirror(self.pool, self.recorder, timeout_s=self.settings.predict_timeout_s),
            worker_id=self.settings.worker_id,
            max_body_bytes=self.settings.max_body_bytes,
            predict_timeout_s=self.settings.predict_timeout_s,
        )
        # Every route's errors are answered here, in one place; the handlers run only when
        # a route raises, so they cost a successful request nothing.
        self.app = Starlette(
            routes=self._routes(),
            lifespan=self._lifespan,
            exception_handlers={
                HTTPError: http_error_response,
                BackoutError: domain_error_response,
            },
        )

    @property
    def live(self) -> LiveState:
        """The route state this worker serves now (replaced whole by :meth:`refresh`)."""
        return self.pipeline.live

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
        """Reload state if the routes generation moved; True when a new state was applied.

        A state from another store (by identity) or an older generation is refused with
        :class:`StoreUnavailable`: the worker keeps serving the state it has.
        """
        async with self._refresh_lock:
            if not force:
                if not self._watch.maybe_changed():
                    return False
                if self.store.is_sqlite:
                    generation = self._read_generation()
                else:  # a network read: a slow server must not stall the event loop
                    generation = await asyncio.to_thread(self._read_generation)
                if generation == self.live.generation:
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
            self._guard.check(self.live, live)
            # Load first, swap after: a switch never waits on a load once it is visible.
            await self.pool.ensure(wanted)
            self.pipeline.live = live
            self._guard.accepted(live)
            self.switches.append((live.generation, time.monotonic()))
            del self.switches[:-1000]
            for (model, version), entry in self.pool.entries.items():
                self.metrics.warm_bytes.labels(model, version).set(entry.memory_bytes)
            return True

    def _read_generation(self) -> int:
        with self.store.read() as conn:
            return read_generation(conn)

    async def _poll_routes(self) -> None:
        while True:
            await asyncio.sleep(self.settings.poll_interval_s)
            try:
                await self.refresh()
            except Exception as exc:  # keep serving the last good state: one line per fault
                self._route_outage.failed(exc, f"serving generation {self.live.generation}")
                await asyncio.sleep(1.0)
            else:
                self._route_outage.recovered(f"serving generation {self.live.generation}")

    async def _flush_telemetry(self) -> None:
        while True:
            await asyncio.sleep(self.settings.flush_interval_s)
            self.metrics.flush()
            if self.access is not None:
                self.access.flush()
            # Drain on the event loop (no request is mid-update then), write off it.
            self._take()
            try:
                await asyncio.to_thread(self._write)
            except Exception as exc:  # telemetry must never take the data plane down
                self._flush_outage.failed(exc, f"{len(self._unsent)} batch(es) kept to retry")
            else:
                self._flush_outage.recovered()

    def flush(self) -> int:
        """Write this worker's finished batches (and captures) to the store; returns how many."""
        self._take()
        return self._write()

    def _take(self) -> None:
        # What a store outage kept from being written waits for the next flush, up to a
        # bound: judges and triggers then see the outage's traffic once the store is back.
        self._unsent += self.recorder.drain()
        self._uncaptured += self.captures.drain()
        del self._unsent[:-MAX_UNSENT_BATCHES], self._uncaptured[:-MAX_UNSENT_CAPTURES]

    def _write(self) -> int:
        batches, captured = list(self._unsent), list(self._uncaptured)
        n = write_batches(self.store, batches, self.settings.worker_id)
        del self._unsent[: len(batches)]
        bounds = {m: r.max_rows for m, r in self.live.capture.items()}
        write_captures(self.store, captured, bounds)
        del self._uncaptured[: len(captured)]
        return n

    # -- routes ------------------------------------------------------------------------

    def _routes(self) -> list[Route]:
        # Starlette tries routes in order, one regular expression each: the inference
        # routes go first, so a prediction does not pay for matching the others.
        predict, infer = self.pipeline.json_predict, self.pipeline.oip_infer
        return [
            Route("/models/{model}/predict", predict, methods=["POST"]),
            Route("/v2/models/{model}/infer", infer, methods=["POST"]),
            Route("/models/{model}/versions/{version}/predict", predict, methods=["POST"]),
            Route("/v2/models/{model}/versions/{version}/infer", infer, methods=["POST"]),
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
        return json_response({"live": True})

    async def ready_endpoint(self, request: Request) -> Response:
        missing = [
            f"{m}@{v}"
            for m, t in self.live.tables.items()
            for v in t.weights
            if (m, v) not in self.pool.entries
        ]
        ok = self.ready and not missing
        return json_response({"ready": ok, "not_loaded": missing}, status=200 if ok else 503)

    async def model_metadata(self, request: Request) -> Response:
        model = request.path_params["model"]
        version = request.path_params.get("version")
        entry = self._entry_for_metadata(model, version)
        p = entry.predictor
        manifest = entry.release.manifest
        tensors = (manifest.contract.input or {}).get("x-backout-tensors") or [
            {"name": n, "datatype": "FP32", "shape": [-1, len(p.feature_names or []) or -1]}
            for n in p.input_names
        ]
        return json_response({
            "name": model,
            "versions": sorted(self.live.tables[model].versions) if model in self.live.tables else [],
            "platform": manifest.runtime.kind.value,
            "inputs": tensors,
            "outputs": [{"name": n, "datatype": "FP32", "shape": [-1]} for n in p.output_names],
        })  # fmt: skip

    async def model_ready(self, request: Request) -> Response:
        model = request.path_params["model"]
        version = request.path_params.get("version")
        self._entry_for_metadata(model, version)
        return json_response({"name": model, "ready": True})

    def _entry_for_metadata(self, model: str, version: str | None) -> Loaded:
        table = self.pipeline.table(model)
        if version is None:
            version = max(table.weights, key=lambda v: table.weights[v])
        return self.pipeline.loaded(model, version, table)

    async def metrics_endpoint(self, request: Request) -> Response:
        body, content_type = self.metrics.exposition()
        return Response(body, media_type=content_type)

    async def state_endpoint(self, request: Request) -> Response:
        return json_response({
            "worker": self.settings.worker_id,
            "generation": self.live.generation,
            "tables": {m: t.to_dict() for m, t in self.live.tables.items()},
            "warm": [e.to_dict() for e in self.pool.entries.values()],
            "load_failures": {f"{m}@{v}": why for (m, v), why in self.pool.failures.items()},
        })  # fmt: skip

    async def feedback(self, request: Request) -> Response:
        """Ground truth for a captured request: ``{"request_id": ..., "labels": [...]}``."""
        raw = await read_body(
            request.receive, request.headers.get("content-length"), self.settings.max_body_bytes
        )
        body = parse_object(raw)
        rid = body.get("request_id")
        if not isinstance(rid, str) or "labels" not in body:
            raise HTTPError(422, 'send {"request_id": "...", "labels": [...]}')
        found = await asyncio.to_thread(add_labels, self.store, rid, body["labels"])
        if not found:
            raise HTTPError(404, f"request {rid!r} was not captured (only a sample is)")
        return json_response({"request_id": rid, "labelled": True})


def create_app() -> Starlette:
    """Factory for ``uvicorn --factory``: settings come from the environment."""
    from pathlib import Path

    from backout.redaction import install_log_redaction
    from backout.registry.artifacts import LocalBlobStore
    from backout.store import open_store

    install_log_redaction()
    # An existing store only: a worker never creates one (`backout init` or `serve --init`).
    store = open_store(os.environ.get("BACKOUT_STORE"), migrate=False)
    home = Path(os.environ.get("BACKOUT_HOME", ".backout"))
    blobs = LocalBlobStore(Path(os.environ.get("BACKOUT_ARTIFACTS") or home / "artifacts"))
    settings = GatewaySettings(
        access_log=bool(os.environ.get("BACKOUT_ACCESS_LOG")),
        max_body_bytes=int(os.environ.get("BACKOUT_MAX_BODY_BYTES", 1 << 20)),
        warm_rollback_points=int(os.environ.get("BACKOUT_WARM_ROLLBACK_POINTS", 2)),
    )
    return Gateway(store, blobs, settings).app
