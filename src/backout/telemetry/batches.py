"""Per-release telemetry batches: the one format the gateway writes and the judges read.

A batch summarises about a second of one release's traffic. Latency is kept as a sparse
histogram over fixed log-spaced buckets (5% wide), so any quantile or exceedance count can
be read from it to within a bucket, plus the count, sum and sum of squares of log-latency
for the mean tests. Batches merge by addition, so a window is the sum of its batches.
A gateway worker fills them with :mod:`backout.serving.telemetry`'s ``Recorder``; the
controller and the judges read them back with :func:`read_batches`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import sqlalchemy as sa

from backout.store import Store, schema

# Log-spaced latency buckets: bucket i holds latencies in [LAT_MIN * GROWTH**i, LAT_MIN * GROWTH**(i+1)).
LAT_MIN_S = 1e-5  # 10 µs; anything faster goes to bucket 0
LAT_GROWTH = 1.05
LAT_BUCKETS = 400  # 10 µs * 1.05**400 ≈ 3,000 s: nothing real is slower
_LOG_GROWTH = math.log(LAT_GROWTH)
_LOG_MIN = math.log(LAT_MIN_S)


class ErrorKind(StrEnum):
    """Why a request counted as an error of a release: the release's fault, never the caller's."""

    MODEL = "model"  # the model raised
    TIMEOUT = "timeout"  # the runtime or upstream did not answer in time
    OUTPUT_CONTRACT = "output_contract"  # the answer broke the release's output contract
    NONFINITE = "nonfinite"  # NaN or infinity in an output
    UPSTREAM = "upstream"  # an HTTP upstream answered with an error
    LOAD = "load"  # the release could not be loaded, so it could not answer at all


class ClientErrorKind(StrEnum):
    """Why a request routed to a release was refused as the caller's fault (a 4xx).

    Counted in :attr:`Batch.client_errors`, apart from the release's own errors, requests
    and latency: a caller sending garbage says nothing about the release, so triggers and
    judges never see these.
    """

    MALFORMED = "malformed"  # the body is not JSON, not an object, or its framing is broken
    TOO_LARGE = "too_large"  # the body is over the gateway's size limit
    DISCONNECTED = "disconnected"  # the caller hung up before sending the whole body
    INPUT = "input"  # the inputs break the release's contract: fields, shape, datatype
    NOT_SERVED = "not_served"  # no such model or release here (only in Prometheus)


# Written by gateways before client errors were counted apart: read back as client errors.
_LEGACY_CLIENT_KINDS = {"input_contract": ClientErrorKind.INPUT.value}


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
    ``errors`` are the release's faults by :class:`ErrorKind`; ``client_errors`` are requests
    refused as the caller's fault by :class:`ClientErrorKind`, counted in nothing else.
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
    client_errors: dict[str, int] = field(default_factory=dict)
    latency: dict[int, int] = field(default_factory=dict)
    log_latency_sum: float = 0.0
    log_latency_sumsq: float = 0.0
    outputs: dict[str, int] = field(default_factory=dict)
    shadow_requests: int = 0
    shadow_disagreements: int = 0
    shadow_abs_diff_sum: float = 0.0

    @property
    def error_count(self) -> int:
        """The release's own errors (client errors are not among them)."""
        return sum(self.errors.values())

    @property
    def client_error_count(self) -> int:
        """Requests refused as the caller's fault."""
        return sum(self.client_errors.values())

    def refuse(self, kind: ClientErrorKind) -> None:
        """Record one request refused as the caller's fault: no request, error or latency."""
        self.client_errors[kind.value] = self.client_errors.get(kind.value, 0) + 1

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
        _add(self.client_errors, other.client_errors)
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
            "client_errors": self.client_errors,
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
        errors = {str(k): int(v) for k, v in d.get("errors", {}).items()}
        client = {str(k): int(v) for k, v in d.get("client_errors", {}).items()}
        requests = int(d.get("requests", 0))
        for old, new in _LEGACY_CLIENT_KINDS.items():
            # An older gateway counted the caller's bad input as a release error (and as a
            # request): move it where it belongs, so every reader sees one meaning.
            n = errors.pop(old, 0)
            if n:
                client[new] = client.get(new, 0) + n
                requests -= n
        return cls(
            model=d["model"],
            version=d["version"],
            start=float(d["start"]),
            end=float(d["end"]),
            requests=requests,
            predictions=int(d.get("predictions", 0)),
            errors=errors,
            client_errors=client,
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
