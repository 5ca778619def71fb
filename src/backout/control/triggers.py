"""Triggers: conditions that start a rollback on their own, evaluated over a window.

Each trigger of a policy is evaluated against one release's telemetry batches over its
window (pure functions, testable without I/O), except ``prometheus``, which asks a
Prometheus server through the small :class:`MetricSource` interface.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import httpx
import numpy as np
import orjson

from backout.judges.stats import binomial_llr, log_mixture, prior_log_weights, psi
from backout.redaction import redact_text
from backout.telemetry.batches import Batch, latency_quantile, sum_batches

# Integrity errors are the release's own fault: a caller's bad input is not.
INTEGRITY_KINDS = ("nonfinite", "output_contract")
MIN_REQUESTS = 20  # below this a rate over a window says nothing (a policy sets its own)


@dataclass(frozen=True, slots=True)
class TriggerResult:
    """Whether a trigger fired, and the evidence a person can read."""

    name: str
    kind: str
    fired: bool
    summary: str
    evidence: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "fired": self.fired,
                "summary": self.summary, "evidence": self.evidence}  # fmt: skip


class MetricSource(Protocol):
    """Where custom metrics come from (Prometheus in production, a dict in tests)."""

    def query(self, url: str, promql: str) -> float | None:
        """The current value of an instant query, or None when it has no data."""
        ...


class PrometheusSource:
    """Instant queries against Prometheus's HTTP API (``/api/v1/query``).

    Bounded: connecting takes at most ``connect_timeout_s``, each read ``timeout_s``, the
    whole query (connect, send, every byte of the answer) about ``total_timeout_s``
    (default twice ``timeout_s``), and the answer at most ``max_bytes``; past a bound the
    query fails with ``httpx.TimeoutException`` and the trigger reports it instead of
    holding up the controller's tick.
    """

    def __init__(
        self,
        timeout_s: float = 2.0,
        *,
        connect_timeout_s: float = 1.0,
        total_timeout_s: float | None = None,
        max_bytes: int = 1 << 20,
    ) -> None:
        self.timeout_s = timeout_s
        self.connect_timeout_s = min(connect_timeout_s, timeout_s)
        self.total_timeout_s = total_timeout_s or 2 * timeout_s
        self.max_bytes = max_bytes

    def query(self, url: str, promql: str) -> float | None:
        deadline = time.monotonic() + self.total_timeout_s
        timeout = httpx.Timeout(self.timeout_s, connect=self.connect_timeout_s)
        body = bytearray()
        with (
            httpx.Client(timeout=timeout) as client,
            client.stream("GET", f"{url.rstrip('/')}/api/v1/query", params={"query": promql}) as r,
        ):
            r.raise_for_status()
            for chunk in r.iter_bytes():
                body += chunk
                if time.monotonic() > deadline:  # a server trickling bytes: the total bound
                    raise httpx.ReadTimeout(f"no whole answer within {self.total_timeout_s:g} s")
                if len(body) > self.max_bytes:
                    raise ValueError(f"answer larger than {self.max_bytes:,} bytes")
        result = orjson.loads(body).get("data", {}).get("result", [])
        if not result:
            return None
        return float(result[0]["value"][1])


def _name(trigger: Any) -> str:
    return str(getattr(trigger, "name", None) or trigger.kind)


def evaluate(
    trigger: Any,
    batches: Sequence[Batch],
    *,
    reference: Sequence[Batch] = (),
    metrics: MetricSource | None = None,
) -> TriggerResult:
    """Evaluate one policy trigger over ``batches`` (the window) of one release."""
    kind = trigger.kind
    name = _name(trigger)
    floor = int(getattr(trigger, "min_requests", MIN_REQUESTS))
    total = sum_batches(batches)
    n = total.requests if total else 0
    if kind == "error_rate":
        errors = total.error_count if total else 0
        rate = errors / n if n else 0.0
        if getattr(trigger, "use_judge", False):
            judged = _judge_errors(name, errors, n, reference, floor)
            if judged.fired or trigger.max_rate is None:
                return judged
        limit = float(trigger.max_rate)
        fired = n >= floor and rate > limit
        return TriggerResult(name, kind, fired,
                             f"error rate {rate:.2%} over {n:,} requests (limit {limit:.2%})",
                             {"rate": rate, "requests": n, "errors": errors, "limit": limit})  # fmt: skip
    if kind == "latency":
        q = float(trigger.quantile)
        value_ms = latency_quantile(total.latency, q) * 1000 if total else math.nan
        limit_ms = float(trigger.max_ms)
        fired = n >= floor and value_ms > limit_ms
        shown = "no data" if math.isnan(value_ms) else f"{value_ms:.1f} ms"
        return TriggerResult(name, kind, fired,
                             f"p{q * 100:g} latency {shown} over {n:,} requests (limit {limit_ms:g} ms)",
                             {"quantile": q, "value_ms": None if math.isnan(value_ms) else value_ms,
                              "limit_ms": limit_ms, "requests": n})  # fmt: skip
    if kind == "integrity":
        bad = {k: total.errors.get(k, 0) for k in INTEGRITY_KINDS} if total else {}
        unreconciled = (total.requests - total.predictions - total.error_count) if total else 0
        count = sum(bad.values()) + abs(unreconciled)
        detail = ", ".join(f"{v} {k}" for k, v in bad.items() if v)
        if unreconciled:
            detail = (detail + ", " if detail else "") + f"{unreconciled} unreconciled"
        return TriggerResult(name, kind, count > 0,
                             f"integrity: {detail or 'clean'} over {n:,} requests",
                             {"violations": bad, "unreconciled": unreconciled, "requests": n})  # fmt: skip
    if kind == "drift":
        ref = sum_batches(reference)
        expected, actual = (ref.outputs if ref else {}), (total.outputs if total else {})
        labels = sorted(expected.keys() | actual.keys())  # the bins: every label either side saw
        value = psi([expected.get(k, 0) for k in labels], [actual.get(k, 0) for k in labels])
        limit = float(trigger.max_psi)
        enough = n >= floor and ref is not None and ref.requests >= floor
        fired = enough and value > limit
        return TriggerResult(name, kind, fired, f"output drift PSI {value:.3f} (limit {limit:g})",
                             {"psi": value, "limit": limit, "requests": n})  # fmt: skip
    if kind == "prometheus":
        source = metrics or PrometheusSource()
        try:
            value_q = source.query(trigger.url, trigger.query)
        except (httpx.HTTPError, ValueError, KeyError) as exc:
            why = redact_text(str(exc) or type(exc).__name__)
            return TriggerResult(name, kind, False, f"prometheus query failed: {why}",
                                 {"error": why})  # fmt: skip
        threshold = float(trigger.threshold)
        op = trigger.op
        compare = {">": value_q > threshold, "<": value_q < threshold, ">=": value_q >= threshold,
                   "<=": value_q <= threshold} if value_q is not None else {}  # fmt: skip
        fired = bool(compare.get(op, False))
        return TriggerResult(name, kind, fired,
                             f"{trigger.query} = {value_q} ({op} {threshold:g} fires)",
                             {"value": value_q, "threshold": threshold, "op": op})  # fmt: skip
    raise ValueError(f"unknown trigger kind {kind!r}")


# The release's own recent error rate, doubled, is what counts as "worse" for a trigger that
# judges instead of using a fixed limit; a release with no recent errors is held to this.
JUDGE_RATE_FLOOR = 0.001
JUDGE_ALPHA = 0.01


def _judge_errors(
    name: str, errors: int, n: int, reference: Sequence[Batch], floor: int
) -> TriggerResult:
    """Fires when the window's error rate is credibly above twice the release's recent rate.

    A one-sample mixture likelihood ratio (a binomial e-value over a grid of rate ratios,
    the same family the error-rate judge uses) against p0 = 2 × the rate of the reference
    period before the window, at alpha = 1%. It needs no second release to compare with,
    so it watches a release that serves alone.
    """
    ref = sum_batches(reference)
    ref_errors = ref.error_count if ref else 0
    ref_rate = ref_errors / ref.requests if ref and ref.requests else 0.0
    p0 = min(max(2 * ref_rate, JUDGE_RATE_FLOOR), 0.5)
    rate = errors / n if n else 0.0
    log_e = (
        float(log_mixture(binomial_llr(np.array(errors), np.array(n), p0), prior_log_weights(1.0)))
        if n
        else 0.0
    )
    fired = n >= floor and log_e >= math.log(1 / JUDGE_ALPHA)
    return TriggerResult(
        name, "error_rate", fired,
        f"error rate {rate:.2%} over {n:,} requests vs {ref_rate:.2%} before "
        f"(e-value {math.exp(min(log_e, 700)):.3g}, fires at {1 / JUDGE_ALPHA:g})",
        {"rate": rate, "requests": n, "errors": errors, "reference_rate": ref_rate, "p0": p0,
         "e_value": math.exp(min(log_e, 700)), "threshold": 1 / JUDGE_ALPHA},
    )  # fmt: skip
