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
import os
import time
from collections.abc import Mapping
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
        return [b for b in batches.values() if b.requests or b.shadow_requests]


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


class Metrics:
    """Prometheus metrics of one gateway worker, labelled per release.

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
        self.latency = Histogram(
            "backout_request_duration_seconds", "Time to answer a request, by release.",
            ["model", "release"], registry=self.registry,
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
        )  # fmt: skip
        self.warm_bytes = Gauge(
            "backout_warm_release_bytes", "Memory a loaded (warm) release takes in a worker.",
            ["model", "release"], registry=self.registry, multiprocess_mode="liveall",
        )  # fmt: skip
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}
        self._bounds: list[float] = list(self.latency._upper_bounds)  # ends with +Inf
        # Observations since the last flush: (count, sum of seconds, count per bucket).
        self._pending: dict[tuple[str, str, int], tuple[list[int], list[float]]] = {}

    def observe(self, model: str, release: str, code: int, seconds: float) -> None:
        """Count one answer. Kept in memory until :meth:`flush` (the gateway flushes about
        once a second and before every ``/metrics``): in multiprocess mode each update of a
        prometheus-client value takes a lock, a pid check and an mmap write, three times per
        request."""
        key = (model, release, code)
        pending = self._pending.get(key)
        if pending is None:
            pending = self._pending[key] = ([0] * (len(self._bounds) + 1), [0.0])
        counts = pending[0]
        counts[-1] += 1
        counts[bisect.bisect_left(self._bounds, seconds)] += 1
        pending[1][0] += seconds

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
            # Histogram has no "observe n times": add to its sum and buckets as observe does.
            pair[1]._sum.inc(total[0])
            for i, n in enumerate(counts[:-1]):
                if n:
                    pair[1]._buckets[i].inc(n)

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
