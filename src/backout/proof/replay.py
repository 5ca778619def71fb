"""Replay: prove a rollback target on real production requests before it serves.

The gateway samples live requests and their answers into a bounded capture log (named
fields redacted or hashed as the policy says; see :mod:`backout.serving.capture`). This
module reads that log: ``replay`` runs captured requests against a target release —
in-process or through a running gateway — and compares it with what the live release
answered and with the target's *performance envelope*: the latency, throughput and error
rate it showed while it last served production.

Latency is compared like with like. A replay sends one request at a time from one process;
production serves many at once behind HTTP: the two distributions differ by a factor that
depends on the host's load, not on the release, so a replay's p99 is never judged against a
p99 from live load. When given a ``baseline`` (the release whose traffic the target would
take), the replay runs the same requests against both, interleaved, and compares the two
replays; without one, latency is reported and not judged. The evidence says which.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson
import sqlalchemy as sa

from backout.errors import BackoutError, NotFound
from backout.registry.artifacts import BlobStore
from backout.registry.manifest import parse_ref
from backout.registry.releases import Registry
from backout.store import Store, schema
from backout.telemetry.batches import latency_quantile, read_batches, sum_batches

C = schema.captures


# -- performance envelopes ------------------------------------------------------------------


def summarise(
    store: Store, model: str, version: str, *, since: float, until: float
) -> dict[str, Any] | None:
    """``version``'s production telemetry over [since, until), as an envelope."""
    batches = read_batches(store, model, since=since, until=until).get(version, [])
    total = sum_batches(batches)
    if total is None or total.requests == 0:
        return None
    seconds = max(until - since, 1.0)
    busy = [b.requests / max(b.end - b.start, 1e-3) for b in batches if b.requests]
    return {
        "requests": total.requests,
        "error_rate": total.error_count / total.requests,
        "p50_ms": latency_quantile(total.latency, 0.5) * 1000,
        "p95_ms": latency_quantile(total.latency, 0.95) * 1000,
        "p99_ms": latency_quantile(total.latency, 0.99) * 1000,
        "throughput_rps": total.requests / seconds,
        "peak_rps": max(busy) if busy else 0.0,
        "source": "live",  # production telemetry under live load: never compared with a replay
        "since": since,
        "until": until,
    }


def record_envelope(
    store: Store, model: str, version: str, *, since: float, until: float
) -> dict[str, Any] | None:
    """Summarise ``version``'s production telemetry over [since, until) and keep it."""
    env = summarise(store, model, version, since=since, until=until)
    if env is None:
        return None
    E = schema.envelopes
    with store.write() as conn:
        conn.execute(E.delete().where(E.c.model == model, E.c.version == version))
        conn.execute(E.insert().values(model=model, version=version, data=env, recorded_at=until))
    return env


ENVELOPE_SPAN_S = 600.0  # the envelope covers the last ten minutes a release served


def envelope(store: Store, model: str, version: str) -> dict[str, Any] | None:
    """The release's envelope: the recorded one, else its last ten minutes in production."""
    E = schema.envelopes
    T = schema.telemetry
    with store.read() as conn:
        row = conn.execute(
            sa.select(E.c.data).where(E.c.model == model, E.c.version == version)
        ).first()
        if row is not None:
            return dict(row.data)
        last = conn.execute(
            sa.select(sa.func.max(T.c.start)).where(T.c.model == model, T.c.version == version)
        ).scalar()
    if last is None:
        return None
    return summarise(
        store, model, version, since=float(last) - ENVELOPE_SPAN_S, until=float(last) + 1.0
    )


# -- replay ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Limits:
    """When a replay counts as outside the envelope (the policy's ``replay`` section)."""

    max_error_rate: float = 0.01
    max_latency_ratio: float = 1.5  # the target's replay tail latency over the baseline's
    min_agreement: float = 0.95
    score_tolerance: float = 0.05


@dataclass
class ReplayReport:
    """What replaying captured traffic against a target showed."""

    ref: str
    captured: int = 0
    replayed: int = 0
    skipped: int = 0  # unreadable capture rows
    rejected: int = 0  # requests the target refused (bad input for it)
    errors: int = 0  # the target failed
    contract_violations: int = 0
    compared: int = 0
    agreed: int = 0
    labelled: int = 0
    correct: int = 0
    latencies_ms: list[float] = field(default_factory=list, repr=False)
    seconds: float = 0.0
    envelope: dict[str, Any] | None = None
    limits: Limits = field(default_factory=Limits)
    findings: list[str] = field(default_factory=list)
    baseline: str | None = None  # the release replayed beside the target, for latency
    baseline_latencies_ms: list[float] = field(default_factory=list, repr=False)
    baseline_note: str = ""  # why there is no baseline replay, when there is none

    @property
    def agreement(self) -> float | None:
        return self.agreed / self.compared if self.compared else None

    @property
    def accuracy(self) -> float | None:
        return self.correct / self.labelled if self.labelled else None

    @property
    def error_rate(self) -> float:
        return (self.errors + self.rejected) / self.replayed if self.replayed else 0.0

    @property
    def throughput_rps(self) -> float:
        return self.replayed / self.seconds if self.seconds else 0.0

    def quantile_ms(self, q: float) -> float | None:
        return float(np.quantile(self.latencies_ms, q)) if self.latencies_ms else None

    @property
    def tail_quantile(self) -> float:
        """The tail quantile a replay of this size can estimate: at least 5 samples above it."""
        n = min(len(self.latencies_ms), len(self.baseline_latencies_ms) or len(self.latencies_ms))
        return min(0.99, max(0.5, 1 - 5 / n)) if n else 0.99

    def latency_comparison(self) -> dict[str, Any]:
        """How the target's latency was judged: against what, measured how (for the evidence)."""
        if not self.baseline_latencies_ms or not self.latencies_ms:
            why = self.baseline_note or "no baseline release was replayed beside it"
            return {"compared": "none", "why": f"{why}; latency is not judged against the live "
                    "envelope, which was measured under live load, not by a replay"}  # fmt: skip
        q = self.tail_quantile
        return {
            "compared": "replay-vs-replay", "baseline": self.baseline, "quantile": q,
            "target_ms": float(np.quantile(self.latencies_ms, q)),
            "baseline_ms": float(np.quantile(self.baseline_latencies_ms, q)),
            "requests": len(self.latencies_ms),
        }  # fmt: skip

    @property
    def within_envelope(self) -> bool:
        return not self.judge()

    def judge(self) -> list[str]:
        """Every way the target falls outside its envelope or the limits."""
        out = []
        lim = self.limits
        if self.replayed == 0:
            return ["nothing was replayed: no readable captured requests"]
        if self.error_rate > lim.max_error_rate:
            out.append(f"error rate {self.error_rate:.2%} > {lim.max_error_rate:.2%}")
        if self.contract_violations:
            out.append(f"{self.contract_violations} answer(s) broke the output contract")
        agreement = self.agreement
        if agreement is not None and agreement < lim.min_agreement:
            out.append(f"agreement with live answers {agreement:.1%} < {lim.min_agreement:.0%}")
        cmp = self.latency_comparison()
        if (
            cmp["compared"] == "replay-vs-replay"
            and cmp["target_ms"] > cmp["baseline_ms"] * lim.max_latency_ratio
        ):
            out.append(f"p{cmp['quantile'] * 100:g} latency {cmp['target_ms']:.2f} ms > {lim.max_latency_ratio:g}x "
                       f"{self.baseline}'s {cmp['baseline_ms']:.2f} ms on the same requests, replayed side by side")  # fmt: skip
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "ref": self.ref, "captured": self.captured, "replayed": self.replayed,
            "skipped": self.skipped, "rejected": self.rejected, "errors": self.errors,
            "contract_violations": self.contract_violations, "agreement": self.agreement,
            "accuracy": self.accuracy, "labelled": self.labelled, "error_rate": self.error_rate,
            "p50_ms": self.quantile_ms(0.5), "p99_ms": self.quantile_ms(0.99),
            "throughput_rps": self.throughput_rps, "envelope": self.envelope,
            "latency": self.latency_comparison(),
            "within_envelope": self.within_envelope, "findings": self.judge(),
            "verdict": "pass" if self.within_envelope else "fail",
            "summary": self.summary(),
        }  # fmt: skip

    def summary(self) -> str:
        agreement = "-" if self.agreement is None else f"{self.agreement:.1%}"
        p99 = self.quantile_ms(0.99)
        head = (f"replayed {self.replayed:,} of {self.captured:,} captured requests on {self.ref}: "
                f"{self.errors + self.rejected} failed, agreement {agreement}, "
                f"p99 {'-' if p99 is None else f'{p99:.2f} ms'}")  # fmt: skip
        problems = self.judge()
        return head + (": " + "; ".join(problems) if problems else ": within envelope")


def load_captures(
    store: Store, model: str, *, since: float | None = None, limit: int | None = None
) -> list[Any]:
    q = sa.select(C).where(C.c.model == model).order_by(C.c.id.desc())
    if since is not None:
        q = q.where(C.c.at >= since)
    if limit is not None:
        q = q.limit(limit)
    with store.read() as conn:
        rows = list(conn.execute(q))
    rows.reverse()
    return rows


Predict = Callable[[dict[str, Any]], Any]


def replay(
    store: Store,
    registry: Registry,
    blobs: BlobStore,
    ref: str,
    *,
    since: float | None = None,
    limit: int | None = None,
    url: str | None = None,
    limits: Limits | None = None,
    progress: Callable[[int, int], None] | None = None,
    baseline: str | None = None,
) -> ReplayReport:
    """Replay captured requests of the model against ``ref``; never raises on a bad row.

    ``baseline``: another version of the model, replayed on the same requests beside the
    target (interleaved, so both see the same host), for a like-with-like latency check.
    """
    model, version = parse_ref(ref)
    rel = registry.get(ref)
    rows = load_captures(store, model, since=since, limit=limit)
    report = ReplayReport(
        ref=ref,
        captured=len(rows),
        envelope=envelope(store, model, version),
        limits=limits or Limits(),
    )
    if url is None:
        predict, validator, close = _in_process(rel, blobs)
    else:
        predict, validator, close = _over_http(url, model, version)
    base = _baseline(store, registry, blobs, model, version, baseline, url, report)
    t0 = time.perf_counter()
    try:
        if base is not None and rows:
            _warm(rows[0], predict)
            _warm(rows[0], base[0])
        for i, row in enumerate(rows):
            # Alternate who goes first, so neither always pays for a cold cache.
            if base is not None and i % 2:
                _time_one(row, base[0], report.baseline_latencies_ms)
            _replay_one(row, predict, validator, report)
            if base is not None and not i % 2:
                _time_one(row, base[0], report.baseline_latencies_ms)
            if progress is not None and (i % 50 == 0 or i == len(rows) - 1):
                progress(i + 1, len(rows))
    finally:
        report.seconds = time.perf_counter() - t0
        close()
        if base is not None:
            base[1]()
    return report


def _baseline(store: Store, registry: Registry, blobs: BlobStore, model: str, version: str,
              baseline: str | None, url: str | None,
              report: ReplayReport) -> tuple[Predict, Callable[[], None]] | None:  # fmt: skip
    """The baseline's predict and close, or None (with the reason in the report)."""
    if baseline is None or baseline == version:
        return None
    report.baseline = f"{model}@{baseline}"
    try:
        if url is not None:
            predict, _, close = _over_http(url, model, baseline)
        else:
            predict, _, close = _in_process(registry.get(report.baseline), blobs)
    except BackoutError as exc:
        # The release being left may be the broken one: that must not block the way back.
        report.baseline_note = f"the baseline {report.baseline} could not be loaded ({exc.message})"
        report.baseline = None
        return None
    return predict, close


def _warm(row: Any, predict: Predict) -> None:
    """One untimed request: a release's first answer pays for lazy set-up, not its speed."""
    with contextlib.suppress(Exception):  # only a warm-up: the timed replay counts failures
        predict(orjson.loads(row.request))


def _time_one(row: Any, predict: Predict, into: list[float]) -> None:
    """Time one request against the baseline; its answers are not judged."""
    try:
        request = orjson.loads(row.request)
    except (orjson.JSONDecodeError, TypeError):
        return
    t0 = time.perf_counter()
    with contextlib.suppress(Exception):  # a failing baseline request still took this long
        predict(request)
    into.append((time.perf_counter() - t0) * 1000)


def _replay_one(row: Any, predict: Predict, validator: Any, report: ReplayReport) -> None:
    try:
        request = orjson.loads(row.request)
        live = orjson.loads(row.response)
        if not isinstance(request, dict):
            raise ValueError("not an object")
    except (orjson.JSONDecodeError, ValueError, TypeError):
        report.skipped += 1
        return
    report.replayed += 1
    t0 = time.perf_counter()
    try:
        answer = predict(request)
    except _Rejected:
        report.rejected += 1
        return
    except Exception:  # the target failed on a request production answered: count it
        report.errors += 1
        return
    finally:
        report.latencies_ms.append((time.perf_counter() - t0) * 1000)
    if validator is not None and isinstance(answer, list) and validator.check_batch(answer):
        report.contract_violations += 1
    if isinstance(answer, list) and isinstance(live, list) and len(answer) == len(live):
        for a, b in zip(answer, live, strict=True):
            report.compared += 1
            report.agreed += _agrees(a, b, report.limits.score_tolerance)
    labels = orjson.loads(row.labels) if row.labels else None
    if isinstance(labels, list) and isinstance(answer, list) and len(labels) == len(answer):
        for a, y in zip(answer, labels, strict=True):
            report.labelled += 1
            report.correct += _label(a) == y


def _label(pred: Any) -> Any:
    return pred.get("label") if isinstance(pred, dict) else pred


def _agrees(a: Any, b: Any, tol: float) -> bool:
    """Classes must match exactly; scores within ``tol``."""
    la, lb = _label(a), _label(b)
    if isinstance(la, int | float) and isinstance(lb, int | float) and not isinstance(la, bool):
        if isinstance(a, dict) or isinstance(b, dict):
            return bool(la == lb)
        return math.isclose(float(la), float(lb), rel_tol=tol, abs_tol=tol)
    return bool(la == lb)


class _Rejected(Exception):
    """The target refused the request as invalid input."""


def _in_process(rel: Any, blobs: BlobStore) -> tuple[Predict, Any, Callable[[], None]]:
    import asyncio

    from backout.errors import ValidationError
    from backout.proof.contracts import compile_validator
    from backout.runtimes import load_release
    from backout.runtimes.tensors import decode_tensors, json_to_inputs, outputs_to_predictions

    predictor = load_release(rel.manifest, blobs)
    contract = rel.manifest.contract
    validator = compile_validator(contract.output) if contract.output else None
    in_validator = compile_validator(contract.input) if contract.input else None
    loop = asyncio.new_event_loop()

    def predict(request: dict[str, Any]) -> Any:
        try:
            instances = request.get("instances")
            if (
                in_validator is not None
                and isinstance(instances, list)
                and in_validator.check_batch(instances)
            ):
                raise _Rejected
            if "inputs" in request and isinstance(request["inputs"], list):
                inputs = decode_tensors(request["inputs"])
            else:
                inputs = json_to_inputs(request, predictor.input_names, predictor.feature_names)
        except ValidationError as exc:
            raise _Rejected from exc
        coro = predictor.infer(inputs)
        try:
            # In-process runtimes finish without suspending: drive the coroutine directly
            # instead of paying for an event-loop round trip per request.
            coro.send(None)
        except StopIteration as done:
            outputs = done.value
        else:
            coro.close()
            outputs = loop.run_until_complete(predictor.infer(inputs))
        return outputs_to_predictions(outputs)

    def close() -> None:
        loop.run_until_complete(predictor.aclose())
        loop.close()

    return predict, validator, close


def _over_http(url: str, model: str, version: str) -> tuple[Predict, Any, Callable[[], None]]:
    import httpx

    client = httpx.Client(base_url=url, timeout=httpx.Timeout(10, connect=2))

    def predict(request: dict[str, Any]) -> Any:
        path = f"/models/{model}/versions/{version}/predict"
        if "inputs" in request and isinstance(request["inputs"], list):
            path = f"/v2/models/{model}/versions/{version}/infer"
        r = client.post(
            path, content=orjson.dumps(request), headers={"content-type": "application/json"}
        )
        if r.status_code in (400, 413, 422):
            raise _Rejected
        if r.status_code >= 300:
            raise BackoutError(f"gateway answered {r.status_code}")
        doc = r.json()
        return doc.get("predictions", doc.get("outputs"))

    return predict, None, client.close


def require_captures(store: Store, model: str) -> int:
    with store.read() as conn:
        n = (
            conn.execute(
                sa.select(sa.func.count()).select_from(C).where(C.c.model == model)
            ).scalar()
            or 0
        )
    if n == 0:
        raise NotFound(
            f"no captured requests for {model}: the gateway captures a sample of live traffic "
            "(policy capture.rate) — serve some traffic first"
        )
    return int(n)
