"""Telemetry from Prometheus: Traefik's per-service metrics turned into the judges' batches.

For teams whose model traffic goes through Traefik (:mod:`backout.traffic.traefik`) and
whose Prometheus scrapes it. :class:`PrometheusTelemetry` is a
:class:`~backout.telemetry.source.TelemetrySource`: the gates and triggers run on its
batches unchanged.

How the numbers are read. One PromQL range selector returns the raw samples of
``traefik_service_request_duration_seconds_bucket`` for the model's release services over
the window (plus a look-back for the sample before it), and those of Traefik's
``traefik_config_reloads_total``, which mark every scrape: a series first seen after an
earlier scrape was created in between, so its first value counts from zero. Each series' increase between two
consecutive scrapes is one batch's worth (a counter reset counts from zero, as PromQL's
``increase`` does), so with a 1 s scrape interval the batches are per second and with 15 s
they are 15 s long. Counts are exact — no ``rate()`` extrapolation:

- ``requests``: the increase of the ``le="+Inf"`` bucket, summed over 2xx, 3xx and 5xx
  codes, methods and protocols, read from the same sample as the latencies, so counts and
  latencies always reconcile.
- errors: responses with ``code`` 5xx count as ``upstream`` errors (504 as ``timeout``);
  4xx are the caller's mistakes and count only in ``client_errors`` (``input``), as
  backout's gateway counts them; ``predictions`` are the rest.
- latency, **approximated**: Traefik counts durations in its histogram's buckets (set by
  ``--metrics.prometheus.buckets``; :data:`TRAEFIK_BUCKETS`, 1 ms to 17 s in steps of x1.5,
  is what backout configures). The requests of a Traefik bucket ``(lo, hi]`` are placed in
  the batch bucket holding its geometric middle ``sqrt(lo*hi)``; the first bucket
  ``(0, hi]`` at ``hi/2``; the overflow bucket above the last edge just above that edge
  (the least it can be, so a tail is never made worse than seen). Quantiles are then right
  to within a Traefik bucket (x1.5, against backout's own 5% buckets), and the log-latency
  sums behind the mean-latency test come from the same placement. Traefik's default
  buckets (0.1, 0.3, 1.2, 5 s) are too coarse to judge a model's latency by.
- a window in which a release served nothing has no batches for it, and a query that
  returns nothing returns no batches: missing data stays missing, never healthy.

Service names encode the release (``backout.MODEL.VERSION@file``); the mirrored copies
(``backout-shadow.MODEL.VERSION``) are counted as that release's ``shadow_requests``.
A Prometheus that is down, slow or answering garbage raises :class:`TelemetryUnavailable`.
"""

from __future__ import annotations

import math
import re
import time
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from backout.errors import TelemetryUnavailable
from backout.telemetry.batches import Batch, ClientErrorKind, ErrorKind, bucket_mid, latency_bucket

# Traefik's duration buckets that backout configures: 1 ms to about 17 s, each 1.5x the last.
TRAEFIK_BUCKETS: tuple[float, ...] = tuple(float(f"{0.001 * 1.5**i:.4g}") for i in range(25))

METRIC = "traefik_service_request_duration_seconds_bucket"
SCRAPED = "traefik_config_reloads_total"  # present on every Traefik: marks each scrape


@dataclass(frozen=True, slots=True)
class Sample:
    """One scrape's value of one series."""

    at: float
    value: float


def increases(
    samples: Sequence[Sample], *, new_after: float | None = None
) -> list[tuple[float, float, float]]:
    """(previous scrape, this scrape, increase) for each step of a counter's samples.

    ``new_after`` is the scrape before a series' first sample when the series was created
    in between (its first sample then counts from zero); otherwise the first sample is only
    the baseline. A drop is a counter reset: the new value is the increase.
    """
    out: list[tuple[float, float, float]] = []
    prev: Sample | None = None
    for s in samples:
        if prev is None:
            if new_after is not None:
                out.append((new_after, s.at, s.value))
        else:
            # Zero steps are kept: a bucket that did not move bounds the ones above it.
            d = s.value - prev.value if s.value >= prev.value else s.value
            out.append((prev.at, s.at, d))
        prev = s
    return out


def place(lo: float, hi: float) -> int:
    """The batch bucket that stands for Traefik's bucket ``(lo, hi]`` (see the module doc)."""
    if math.isinf(hi):
        return latency_bucket(lo) + 1
    if lo <= 0:
        return latency_bucket(hi / 2)
    return latency_bucket(math.sqrt(lo * hi))


def error_kind(code: str) -> ErrorKind | None:
    """The release error a response code counts as, or None for an answer (or a 4xx, which is
    the caller's fault and counted apart: see :func:`is_client_error`)."""
    if code == "504":
        return ErrorKind.TIMEOUT
    if code.startswith("5"):
        return ErrorKind.UPSTREAM
    return None


def is_client_error(code: str) -> bool:
    """A 4xx: the caller's mistake, counted in ``client_errors`` and nothing else."""
    return code.startswith("4")


class PrometheusTelemetry:
    """Batches of ``model``'s releases from Traefik's metrics in the Prometheus at ``url``.

    ``prefix`` is the Traefik router's service prefix; ``matchers`` adds label matchers
    (``job="traefik"``) when one Prometheus scrapes more than one Traefik; ``lookback_s``
    must cover at least one scrape interval before the window, for its baseline sample.
    ``metric`` is the latency histogram's bucket series, ``service_label`` the label naming
    the release's service (``PREFIX.MODEL.VERSION``) and ``code_label`` the response code's:
    Traefik's names by default.
    """

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "backout",
        matchers: str = "",
        lookback_s: float = 5.0,
        connect_timeout_s: float = 1.0,
        timeout_s: float = 5.0,
        metric: str = METRIC,
        service_label: str = "service",
        code_label: str = "code",
    ) -> None:
        self.url = url.rstrip("/")
        self.metric = metric
        self.service_label = service_label
        self.code_label = code_label
        self.prefix = prefix
        self.matchers = matchers
        self.lookback_s = lookback_s
        self.timeout_s = timeout_s
        self.http = httpx.Client(timeout=httpx.Timeout(timeout_s, connect=connect_timeout_s))

    def query_for(self, model: str, seconds: float) -> str:
        """The PromQL range selector for ``model``'s release services over ``seconds``."""
        p = re.escape(self.prefix)
        # RE2 inside a PromQL string: backslashes doubled for the string literal.
        pattern = rf"{p}(-shadow)?\.{re.escape(model)}\..+".replace("\\", "\\\\")
        extra = f", {self.matchers}" if self.matchers else ""
        # With the buckets, Traefik's reload counter (a series without a service label, so
        # the empty alternative matches it): it is sampled at every scrape of each Traefik,
        # which tells a series created since the last scrape from one that was already there.
        names = f"{self.metric}|{SCRAPED}"
        ms = max(1, math.ceil(seconds * 1000))
        return f'{{__name__=~"{names}", {self.service_label}=~"{pattern}|"{extra}}}[{ms}ms]'

    def batches(
        self, model: str, since: float, until: float | None = None
    ) -> dict[str, list[Batch]]:
        end = time.time() if until is None else until
        if end <= since:
            return {}
        query = self.query_for(model, end - since + self.lookback_s)
        result = self._query(query, end)
        return to_batches(
            model, self.prefix, result, since=since, until=end, metric=self.metric,
            service_label=self.service_label, code_label=self.code_label,
        )  # fmt: skip

    def _query(self, query: str, at: float) -> list[dict[str, Any]]:
        params = {"query": query, "time": f"{at:.3f}", "timeout": f"{self.timeout_s:g}s"}
        try:
            r = self.http.get(f"{self.url}/api/v1/query", params=params)
        except httpx.TimeoutException as exc:
            raise TelemetryUnavailable(
                f"Prometheus at {self.url} did not answer within {self.timeout_s:g} s"
            ) from exc
        except httpx.HTTPError as exc:
            raise TelemetryUnavailable(
                f"Prometheus at {self.url} cannot be reached ({type(exc).__name__}): "
                "is it running, and is that its address?"
            ) from exc
        try:
            doc = r.json()
        except ValueError as exc:
            raise TelemetryUnavailable(
                f"Prometheus at {self.url} answered {r.status_code} with something that is not "
                f"JSON ({r.text[:60]!r}): is that address Prometheus's?"
            ) from exc
        if not isinstance(doc, dict) or doc.get("status") != "success":
            why = doc.get("error") if isinstance(doc, dict) else None
            raise TelemetryUnavailable(
                f"Prometheus at {self.url} refused the query ({r.status_code}): {why or doc!r}"
            )
        data = doc.get("data") or {}
        if data.get("resultType") != "matrix" or not isinstance(data.get("result"), list):
            raise TelemetryUnavailable(
                f"Prometheus at {self.url} answered a range selector without a matrix"
            )
        return list(data["result"])

    def close(self) -> None:
        self.http.close()


def to_batches(
    model: str,
    prefix: str,
    result: Iterable[Mapping[str, Any]],
    *,
    since: float,
    until: float,
    metric: str = METRIC,
    service_label: str = "service",
    code_label: str = "code",
) -> dict[str, list[Batch]]:
    """Per-release batches from the raw bucket samples of a range selector (pure)."""
    series: list[tuple[dict[str, str], list[Sample]]] = []
    scrapes: dict[str, set[float]] = defaultdict(set)  # per scraped target: its scrape times
    for item in result:
        try:
            labels = {str(k): str(v) for k, v in item["metric"].items()}
            samples = [Sample(float(t), float(v)) for t, v in item["values"]]
        except (KeyError, TypeError, ValueError) as exc:
            raise TelemetryUnavailable(f"Prometheus answered a malformed series: {exc}") from exc
        if not samples:
            continue
        target = labels.get("instance", "") + "|" + labels.get("job", "")
        scrapes[target].update(s.at for s in samples)
        if labels.get("__name__", metric) == metric:
            series.append((labels, samples))
    # Every series of a target is sampled at the target's scrape times: a series whose first
    # sample comes after an earlier scrape of its target did not exist at that scrape.
    before: dict[str, list[float]] = {t: sorted(ts) for t, ts in scrapes.items()}

    # (version, shadow?, code, slot start) -> {le: increase}, and the slot's time span.
    buckets: dict[tuple[str, bool, str, int], dict[float, float]] = defaultdict(dict)
    spans: dict[tuple[str, int], tuple[float, float]] = {}
    head, shadow_head = f"{prefix}.{model}.", f"{prefix}-shadow.{model}."
    for labels, samples in series:
        service = labels.get(service_label, "").rsplit("@", 1)[0]
        if service.startswith(head):
            version, shadow = service[len(head) :], False
        elif service.startswith(shadow_head):
            version, shadow = service[len(shadow_head) :], True
        else:
            continue
        try:
            le = float(labels["le"])
        except (KeyError, ValueError) as exc:
            raise TelemetryUnavailable(f"a bucket series of {service} has no valid le") from exc
        target = labels.get("instance", "") + "|" + labels.get("job", "")
        earlier = [t for t in before[target] if t < samples[0].at]
        for start, end, inc in increases(samples, new_after=earlier[-1] if earlier else None):
            if not since <= start < until:
                continue
            slot = int(start)
            key = (version, shadow, labels.get(code_label, ""), slot)
            per_le = buckets[key]
            per_le[le] = per_le.get(le, 0.0) + inc
            lo, hi = spans.get((version, slot), (start, end))
            spans[(version, slot)] = (min(lo, start), max(hi, end))

    out: dict[tuple[str, int], Batch] = {}
    for (version, shadow, code, slot), per_le in sorted(buckets.items()):
        b = out.get((version, slot))
        if b is None:
            start, end = spans[(version, slot)]
            b = out[(version, slot)] = Batch(model, version, start, end)
        if shadow:
            b.shadow_requests += round(per_le.get(math.inf, 0.0))
            continue
        if is_client_error(code):
            refused = round(per_le.get(math.inf, 0.0))
            if refused:
                kind = ClientErrorKind.INPUT.value
                b.client_errors[kind] = b.client_errors.get(kind, 0) + refused
            continue
        add_histogram(b, per_le, error_kind(code))
    per: dict[str, list[Batch]] = defaultdict(list)
    for (version, _slot), b in sorted(out.items(), key=lambda kv: (kv[0][0], kv[0][1])):
        if b.requests or b.shadow_requests or b.client_errors:
            per[version].append(b)
    return dict(per)


def add_histogram(batch: Batch, cumulative: Mapping[float, float], error: ErrorKind | None) -> None:
    """Add one code's cumulative bucket increases (``le -> count``) into ``batch``."""
    prev_le, prev_count = 0.0, 0.0
    for le in sorted(cumulative):
        count = max(0.0, cumulative[le] - prev_count)
        n = round(count)
        if n > 0:
            i = place(prev_le, le)
            batch.latency[i] = batch.latency.get(i, 0) + n
            ll = math.log(bucket_mid(i))
            batch.log_latency_sum += n * ll
            batch.log_latency_sumsq += n * ll * ll
            batch.requests += n
            if error is None:
                batch.predictions += n
            else:
                batch.errors[error.value] = batch.errors.get(error.value, 0) + n
        prev_le, prev_count = le, max(prev_count, cumulative[le])
