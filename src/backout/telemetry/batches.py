"""Per-release telemetry batches: the one format the gateway writes and the judges read.

A batch summarises about a second of one release's traffic. Latency is kept as a sparse
histogram over fixed log-spaced buckets (5% wide), so any quantile or exceedance count can
be read from it to within a bucket, plus the count, sum and sum of squares of log-latency
for the mean tests. Batches merge by addition, so a window is the sum of its batches.
"""

from __future__ import annotations

import bisect
import contextlib
import math
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, BinaryIO

import orjson
import sqlalchemy as sa

from backout.store import Store, schema

# Log-spaced latency buckets: bucket i holds latencies in [LAT_MIN * GROWTH**i, LAT_MIN * GROWTH**(i+1)).
LAT_MIN_S = 1e-5  # 10 µs; anything faster goes to bucket 0
LAT_GROWTH = 1.05
LAT_BUCKETS = 400  # 10 µs * 1.05**400 ≈ 3,000 s: nothing real is slower
_LOG_GROWTH = math.log(LAT_GROWTH)
_LOG_MIN = math.log(LAT_MIN_S)


class ErrorKind(StrEnum):
    """Why a request counted as an error of a release."""

    MODEL = "model"  # the model raised
    TIMEOUT = "timeout"  # the runtime or upstream did not answer in time
    INPUT_CONTRACT = "input_contract"  # the request broke the release's input contract
    OUTPUT_CONTRACT = "output_contract"  # the answer broke the release's output contract
    NONFINITE = "nonfinite"  # NaN or infinity in an output
    UPSTREAM = "upstream"  # an HTTP upstream answered with an error


def latency_bucket(seconds: float) -> int:
    """Index of the bucket that holds ``seconds``."""
    if seconds <= LAT_MIN_S:
        return 0
    i = int((math.log(seconds) - _LOG_MIN) / _LOG_GROWTH)
    return min(i, LAT_BUCKETS - 1)


def bucket_upper(i: int) -> float:
    """Upper edge of bucket ``i`` in seconds."""
    return float(LAT_MIN_S * LAT_GROWTH ** (i + 1))


def bucket_mid(i: int) -> float:
    """Geometric middle of bucket ``i`` in seconds."""
    return float(LAT_MIN_S * LAT_GROWTH ** (i + 0.5))


@dataclass(slots=True)
class Batch:
    """About a second of one release's traffic as the gateway saw it.

    ``requests`` counts requests that reached the release; ``predictions`` counts those that
    returned an answer (reconciliation: ``requests - predictions`` must equal the errors).
    ``latency`` maps bucket index to count. ``outputs`` maps a class label (or ``"score:<bin>"``
    for regressors and scores, in tenths) to how often it was answered. ``shadow_*`` describe
    the copies of live requests this release answered as a shadow.
    """

    model: str
    version: str
    start: float  # unix seconds
    end: float
    requests: int = 0
    predictions: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    latency: dict[int, int] = field(default_factory=dict)
    log_latency_sum: float = 0.0
    log_latency_sumsq: float = 0.0
    outputs: dict[str, int] = field(default_factory=dict)
    shadow_requests: int = 0
    shadow_disagreements: int = 0
    shadow_abs_diff_sum: float = 0.0

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    def observe(
        self,
        latency_s: float,
        *,
        error: ErrorKind | None = None,
        outputs: Iterable[str] = (),
    ) -> None:
        """Record one request: its latency, its error kind if any, and its output labels."""
        self.requests += 1
        if error is None:
            self.predictions += 1
        else:
            self.errors[error.value] = self.errors.get(error.value, 0) + 1
        b = latency_bucket(latency_s)
        self.latency[b] = self.latency.get(b, 0) + 1
        ll = math.log(max(latency_s, 1e-9))
        self.log_latency_sum += ll
        self.log_latency_sumsq += ll * ll
        for label in outputs:
            self.outputs[label] = self.outputs.get(label, 0) + 1

    def merge(self, other: Batch) -> None:
        """Add ``other`` into this batch (same model and release)."""
        self.start = min(self.start, other.start)
        self.end = max(self.end, other.end)
        self.requests += other.requests
        self.predictions += other.predictions
        _add(self.errors, other.errors)
        _add(self.latency, other.latency)
        self.log_latency_sum += other.log_latency_sum
        self.log_latency_sumsq += other.log_latency_sumsq
        _add(self.outputs, other.outputs)
        self.shadow_requests += other.shadow_requests
        self.shadow_disagreements += other.shadow_disagreements
        self.shadow_abs_diff_sum += other.shadow_abs_diff_sum

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "version": self.version,
            "start": self.start,
            "end": self.end,
            "requests": self.requests,
            "predictions": self.predictions,
            "errors": self.errors,
            "latency": {str(k): v for k, v in self.latency.items()},
            "log_latency_sum": self.log_latency_sum,
            "log_latency_sumsq": self.log_latency_sumsq,
            "outputs": self.outputs,
            "shadow_requests": self.shadow_requests,
            "shadow_disagreements": self.shadow_disagreements,
            "shadow_abs_diff_sum": self.shadow_abs_diff_sum,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Batch:
        return cls(
            model=d["model"],
            version=d["version"],
            start=float(d["start"]),
            end=float(d["end"]),
            requests=int(d.get("requests", 0)),
            predictions=int(d.get("predictions", 0)),
            errors={str(k): int(v) for k, v in d.get("errors", {}).items()},
            latency={int(k): int(v) for k, v in d.get("latency", {}).items()},
            log_latency_sum=float(d.get("log_latency_sum", 0.0)),
            log_latency_sumsq=float(d.get("log_latency_sumsq", 0.0)),
            outputs={str(k): int(v) for k, v in d.get("outputs", {}).items()},
            shadow_requests=int(d.get("shadow_requests", 0)),
            shadow_disagreements=int(d.get("shadow_disagreements", 0)),
            shadow_abs_diff_sum=float(d.get("shadow_abs_diff_sum", 0.0)),
        )


def sum_batches(batches: Iterable[Batch]) -> Batch | None:
    """All of ``batches`` merged into one (None when there are none)."""
    total: Batch | None = None
    for b in batches:
        if total is None:
            total = Batch.from_dict(b.to_dict())
        else:
            total.merge(b)
    return total


def _add(into: dict[Any, int], other: Mapping[Any, int]) -> None:
    for k, v in other.items():
        into[k] = into.get(k, 0) + v


def latency_quantile(hist: Mapping[int, int], q: float) -> float:
    """The ``q`` quantile of a latency histogram, in seconds (bucket middle); NaN when empty."""
    total = sum(hist.values())
    if total == 0:
        return math.nan
    rank = q * total
    seen = 0
    for i in sorted(hist):
        seen += hist[i]
        if seen >= rank:
            return bucket_mid(i)
    return bucket_mid(max(hist))


def exceedances(hist: Mapping[int, int], threshold_s: float) -> int:
    """How many latencies in ``hist`` fall in buckets wholly above ``threshold_s``."""
    t = latency_bucket(threshold_s)
    return sum(c for i, c in hist.items() if i > t)


# -- recording in a gateway worker ----------------------------------------------------------


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


def write_batches(store: Store, batches: Sequence[Batch], worker: str) -> int:
    """Append batches to the store's telemetry table; returns how many were written."""
    if not batches:
        return 0
    rows = [
        {"model": b.model, "version": b.version, "start": b.start, "end": b.end,
         "worker": worker, "data": b.to_dict()}
        for b in batches
    ]  # fmt: skip
    with store.write() as conn:
        conn.execute(schema.telemetry.insert(), rows)
    return len(rows)


def read_batches(
    store: Store, model: str, *, since: float = 0.0, until: float | None = None
) -> dict[str, list[Batch]]:
    """A model's batches per release, oldest first, merged across workers per second."""
    T = schema.telemetry
    q = (
        sa.select(T.c.data)
        .where(T.c.model == model, T.c.start >= since)
        .order_by(T.c.start, T.c.id)
    )
    if until is not None:
        q = q.where(T.c.start < until)
    merged: dict[str, dict[int, Batch]] = {}
    with store.read() as conn:
        for (data,) in conn.execute(q):
            b = Batch.from_dict(data)
            per_second = merged.setdefault(b.version, {})
            slot = int(b.start)
            if slot in per_second:
                per_second[slot].merge(b)
            else:
                per_second[slot] = b
    return {v: [per[s] for s in sorted(per)] for v, per in merged.items()}


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
