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
