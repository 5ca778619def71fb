"""What one gateway worker records about the traffic it serves, for operators and the controller.

For the gateway only: the :class:`Recorder` fills the worker's per-release
:class:`~backout.telemetry.batches.Batch` objects (which the controller and judges read back
from the store) with latencies, errors and :func:`output_labels`; :class:`Metrics` feeds
Prometheus; :class:`AccessLog` writes the structured access log; and :func:`correlation`
gives each request its correlation id.
"""

from __future__ import annotations

import bisect
import contextlib
import math
import os
import time
from collections.abc import Iterable, Mapping
from typing import Any, BinaryIO

import numpy as np
import orjson

from backout.telemetry.batches import Batch

# -- batches ---------------------------------------------------------------------------------


class Recorder:
    """The batches one gateway worker is filling, one per (model, release).

    Used only from the worker's event loop; :meth:`drain` hands the finished batches over
    and starts new ones, so nothing is counted twice or lost.
    """

    def __init__(self, worker: str) -> None:
        self.worker = worker
        self._batches: dict[tuple[str, str], Batch] = {}

    def batch(self, model: str, version: str) -> Batch:
        b = self._batches.get((model, version))
        if b is None:
            now = time.time()
            b = self._batches[(model, version)] = Batch(model, version, start=now, end=now)
        return b

    def drain(self) -> list[Batch]:
        batches, self._batches = self._batches, {}
        now = time.time()
        for b in batches.values():
            b.end = now
        return [b for b in batches.values() if b.requests or b.shadow_requests or b.client_errors]


def output_labels(outputs: Mapping[str, np.ndarray]) -> list[str]:
    """Output summaries for telemetry: class labels, or scores binned in tenths."""
    label = outputs.get("label")
    if label is not None:
        return [str(x) for x in label.tolist()]
    for arr in outputs.values():
        if arr.dtype.kind in "fiu" and arr.ndim == 1:
            return [f"score:{x:.1f}" for x in arr.tolist()]
        break
    return []


# -- correlation ids ------------------------------------------------------------------------

_HEX = frozenset("0123456789abcdef")


def correlation(headers: Mapping[str, str]) -> tuple[str, dict[str, str]]:
    """The request's correlation id and the tracing headers to send back.

    A valid W3C ``traceparent`` gives its trace id (and the answer carries a ``traceparent``
    with the same trace and a new span); else a sane ``x-request-id`` is kept; else a new id.
    """
    tp = headers.get("traceparent")
    if tp is not None:
        parts = tp.strip().lower().split("-")
        if (
            len(parts) == 4
            and len(parts[1]) == 32
            and len(parts[2]) == 16
            and set(parts[1]) <= _HEX
            and set(parts[2]) <= _HEX
            and parts[1] != "0" * 32
        ):
            span = os.urandom(8).hex()
            return parts[1], {"traceparent": f"00-{parts[1]}-{span}-{parts[3][:2]}"}
    rid = headers.get("x-request-id")
    if rid and len(rid) <= 128 and rid.isprintable():
        return rid, {}
    return os.urandom(16).hex(), {}


# -- Prometheus -----------------------------------------------------------------------------

UNKNOWN = "unknown"
"""The label value of every model or release the worker does not serve: anonymous input
(a path, a header) never becomes a label, so ``/metrics`` stays bounded whatever is sent."""

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)


class HistogramAdder:
    """Adds many observations to a prometheus-client histogram child at once.

    prometheus-client has no "observe n times"; calling ``observe`` per request costs a
    lock, a pid check and an mmap write each in multiprocess mode. This is the one place
    that reaches into the library's private attributes (``_sum``, ``_buckets``) to add a
    whole second of observations in one call each. :meth:`supports` says whether they are
    there; when a new prometheus-client lacks them, :meth:`add` falls back to ``observe``
    at each bucket's upper bound (counts exact, the sum approximate) instead of failing.
    """

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds  # the finite upper bounds, as given to the Histogram

    @staticmethod
    def supports(child: Any, buckets: int) -> bool:
        """Whether ``child`` has the private values :meth:`add` writes (one per bucket)."""
        sum_ = getattr(child, "_sum", None)
        parts = getattr(child, "_buckets", None)
        return (
            callable(getattr(sum_, "inc", None))
            and isinstance(parts, list)
            and len(parts) == buckets
            and all(callable(getattr(b, "inc", None)) for b in parts)
        )

    def add(self, child: Any, counts: list[int], total: float) -> None:
        """Add ``counts[i]`` observations to bucket ``i`` (the last is +Inf) and ``total`` to
        the sum, as that many ``observe`` calls would."""
        if self.supports(child, len(self.bounds) + 1):
            child._sum.inc(total)
            for i, n in enumerate(counts):
                if n:
                    child._buckets[i].inc(n)
            return
        edges = (*self.bounds, self.bounds[-1] * 2)
        for i, n in enumerate(counts):
            for _ in range(n):
                child.observe(edges[i])


class Metrics:
    """Prometheus metrics of one gateway worker, labelled per known release.

    Only models and releases the worker serves (given by :meth:`know` whenever it applies a
    route state) become label values; everything else is counted under :data:`UNKNOWN`.
    With ``PROMETHEUS_MULTIPROC_DIR`` set (``backout serve`` sets it for its workers),
    prometheus-client keeps the values in shared files and ``/metrics`` on any worker
    reports the sum over all of them.
    """

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "backout_requests", "Requests answered, by model, release and status code.",
            ["model", "release", "code"], registry=self.registry,
        )  # fmt: skip
        self.errors = Counter(
            "backout_errors",
            "Failed requests by model, release, cause (release: the release's fault, counted "
            "by triggers and judges; client: refused as the caller's fault) and kind.",
            ["model", "release", "cause", "kind"], registry=self.registry,
        )  # fmt: skip
        self.latency = Histogram(
            "backout_request_duration_seconds", "Time to answer a request, by release.",
            ["model", "release"], registry=self.registry, buckets=LATENCY_BUCKETS,
        )  # fmt: skip
        self.warm_bytes = Gauge(
            "backout_warm_release_bytes", "Memory a loaded (warm) release takes in a worker.",
            ["model", "release"], registry=self.registry, multiprocess_mode="liveall",
        )  # fmt: skip
        # The store as this worker sees it: 0 while it cannot be reached (the worker then
        # serves its last route table, fail-static); the oldest generation served; the
        # telemetry waiting for the store, and what a store down too long made it drop.
        self.store_reachable = Gauge(
            "backout_store_reachable",
            "1 when the store answers this gateway, 0 while it serves its last route table "
            "without it (the lowest over the workers).",
            registry=self.registry, multiprocess_mode="livemin",
        )  # fmt: skip
        self.store_unreachable_seconds = Gauge(
            "backout_store_unreachable_seconds",
            "How long the store has not answered (0 when it does; the longest over the workers).",
            registry=self.registry, multiprocess_mode="livemax",
        )  # fmt: skip
        self.routes_generation = Gauge(
            "backout_routes_generation",
            "The routes generation served (the oldest over the workers).",
            registry=self.registry, multiprocess_mode="livemin",
        )  # fmt: skip
        self.telemetry_unsent = Gauge(
            "backout_telemetry_unsent_batches",
            "Telemetry batches waiting for the store (summed over the workers).",
            registry=self.registry, multiprocess_mode="livesum",
        )  # fmt: skip
        self.telemetry_dropped = Counter(
            "backout_telemetry_dropped",
            "Telemetry dropped, oldest first, because the store was down past the buffer's "
            "bound; by kind (batches, captures).",
            ["kind"], registry=self.registry,
        )  # fmt: skip
        self.store_reachable.set(1)
        self._adder = HistogramAdder(LATENCY_BUCKETS)
        self._bounds: list[float] = [*LATENCY_BUCKETS, math.inf]
        self._labels: dict[tuple[str, str], tuple[str, str]] = {}
        self._models: frozenset[str] = frozenset()
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}
        # Observations since the last flush: (count per bucket + total, [sum of seconds]).
        self._pending: dict[tuple[str, str, int], tuple[list[int], list[float]]] = {}
        self._pending_errors: dict[tuple[str, str, str, str], int] = {}

    def know(self, releases: Iterable[tuple[str, str]]) -> None:
        """Set the (model, version) pairs that may become label values (the worker's own)."""
        pairs = set(releases)
        self._labels = {p: p for p in pairs}
        self._models = frozenset(m for m, _ in pairs)

    def labels(self, model: str, release: str) -> tuple[str, str]:
        """The label values for a request naming ``model`` and ``release``: themselves when
        the worker knows them, else :data:`UNKNOWN` in their place."""
        known = self._labels.get((model, release))
        if known is not None:
            return known
        return (model, UNKNOWN) if model in self._models else (UNKNOWN, UNKNOWN)

    def observe(
        self, model: str, release: str, code: int, seconds: float, error: str | None = None
    ) -> None:
        """Count one answer, and its error kind when it failed (4xx: the caller's fault).

        Kept in memory until :meth:`flush` (the gateway flushes about once a second and
        before every ``/metrics``): in multiprocess mode each update of a prometheus-client
        value takes a lock, a pid check and an mmap write, three times per request."""
        key = (model, release, code)
        pending = self._pending.get(key)
        if pending is None:
            pending = self._start(model, release, code)
        counts = pending[0]
        counts[-1] += 1
        counts[bisect.bisect_left(self._bounds, seconds)] += 1
        pending[1][0] += seconds
        if error is not None:
            self.count_error(model, release, "client" if code < 500 else "release", error)

    def _start(self, model: str, release: str, code: int) -> tuple[list[int], list[float]]:
        # The first answer of a key since the last flush, or a name the worker does not know.
        # A known release gets its own key (so the next lookup is the only work); anything
        # else shares the "unknown" one, and its own name is never stored.
        key = (*self.labels(model, release), code)
        pending = self._pending.get(key)
        if pending is None:
            pending = self._pending[key] = ([0] * (len(self._bounds) + 1), [0.0])
        return pending

    def count_error(self, model: str, release: str, cause: str, kind: str) -> None:
        """Count one error of ``cause`` (``release`` or ``client``) and ``kind``."""
        m, r = self.labels(model, release)
        key = (m, r, cause, kind)
        self._pending_errors[key] = self._pending_errors.get(key, 0) + 1

    def flush(self) -> None:
        """Add the pending observations to the Prometheus values."""
        pending, self._pending = self._pending, {}
        for key, (counts, total) in pending.items():
            pair = self._children.get(key)
            if pair is None:
                # Resolving labelled children is the slow part of prometheus-client: cache them.
                model, release, code = key
                pair = (
                    self.requests.labels(model, release, str(code)),
                    self.latency.labels(model, release),
                )
                self._children[key] = pair
            pair[0].inc(counts[-1])
            self._adder.add(pair[1], counts[:-1], total[0])
        errors, self._pending_errors = self._pending_errors, {}
        for labels, n in errors.items():
            self.errors.labels(*labels).inc(n)

    def exposition(self) -> tuple[bytes, str]:
        from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

        self.flush()
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            from prometheus_client import multiprocess

            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
            return generate_latest(registry), CONTENT_TYPE_LATEST
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


def metrics_for() -> Metrics:
    return Metrics()


# -- the access log ---------------------------------------------------------------------------


class AccessLog:
    """The structured access log: one JSON line per request, written in blocks.

    Lines wait in memory until the next telemetry flush (about a second) or until 64 KiB
    are waiting, as nginx's ``access_log ... buffer= flush=`` does: a line through
    :mod:`logging` cost about 30 µs, a sixth of a whole prediction.
    """

    def __init__(self, stream: BinaryIO, *, limit: int = 1 << 16) -> None:
        self._stream = stream
        self._limit = limit
        self._lines: list[bytes] = []
        self._size = 0

    def write(self, doc: Mapping[str, Any]) -> None:
        line = orjson.dumps(doc, option=orjson.OPT_APPEND_NEWLINE)
        self._lines.append(line)
        self._size += len(line)
        if self._size >= self._limit:
            self.flush()

    def flush(self) -> None:
        if not self._lines:
            return
        data = b"".join(self._lines)
        self._lines.clear()
        self._size = 0
        with contextlib.suppress(OSError, ValueError):  # a closed stderr never fails a request
            self._stream.write(data)
            self._stream.flush()
