"""The judges' one-line evidence: readable for any input, never an infinity or NaN."""

from __future__ import annotations

import re

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backout.judges import evidence
from backout.judges.base import AnyJudge
from backout.judges.budget import LatencyBudgetConfig, LatencyBudgetJudge
from backout.judges.drift import DriftConfig, DriftJudge
from backout.judges.error_rate import ErrorRateJudge
from backout.judges.gate import Gate, default_gate
from backout.judges.integrity import IntegrityJudge
from backout.judges.latency import LatencyJudge
from backout.judges.tail import TailLatencyConfig, TailLatencyJudge
from backout.telemetry.batches import Batch, ErrorKind

FORBIDDEN = re.compile(r"inf|nan|unbounded|\[-", re.IGNORECASE)
LABELS = ("ok", "fraud", "score:3")


def judges() -> list[AnyJudge]:
    """Every judge, with warm-ups short enough for a short stream to get past them."""
    return [
        ErrorRateJudge(),
        LatencyJudge(),
        TailLatencyJudge(),
        TailLatencyJudge(TailLatencyConfig(warmup_batches=2)),
        TailLatencyJudge(TailLatencyConfig(thresholds_s=(0.05, 0.2))),
        DriftJudge(),
        DriftJudge(DriftConfig(warmup_batches=2)),
        DriftJudge(DriftConfig(classes=("fraud", "ok"))),
        LatencyBudgetJudge(LatencyBudgetConfig(limit_s=0.1)),
        IntegrityJudge(),
    ]


# One request: its latency, and whether it failed, returned a non-finite value, or answered.
request = st.tuples(
    st.floats(min_value=1e-4, max_value=30.0),
    st.sampled_from(["answer", "answer", "answer", "error", "nonfinite"]),
    st.sampled_from(LABELS),
)
arm = st.lists(request, max_size=25)  # zero requests in a slot is as likely as any other count
slots = st.lists(st.tuples(arm, arm), max_size=14)


def batch(version: str, t: int, requests: list[tuple[float, str, str]]) -> Batch:
    b = Batch("fraud", version, float(t), t + 1.0)
    for latency, kind, label in requests:
        error = {"error": ErrorKind.MODEL, "nonfinite": ErrorKind.NONFINITE}.get(kind)
        b.observe(latency, error=error, outputs=[] if error else [label])
    return b


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(slots)
def test_no_summary_shows_an_infinity_nan_or_unbounded(
    stream: list[tuple[list[tuple[float, str, str]], list[tuple[float, str, str]]]],
) -> None:
    cand = [batch("1.5.0", t, c) for t, (c, _) in enumerate(stream)]
    base = [batch("1.4.0", t, b) for t, (_, b) in enumerate(stream)]
    for judge in judges():
        j = judge.evaluate(cand, base).named("1.5.0", "1.4.0")
        assert not FORBIDDEN.search(j.summary), j.summary
        assert "\n" not in j.summary and j.summary.endswith(f": {j.verdict}")
        assert "requests" in j.summary
    gate = default_gate(budget_s=0.3)
    # Batch by batch, as the controller calls it: every intermediate summary too.
    for n in range(1, len(cand) + 1):
        result = gate.evaluate(cand[:n], base[:n]).named("1.5.0", "1.4.0")
        assert not FORBIDDEN.search(result.summary), result.summary


def test_zero_requests_say_no_bound_yet_with_the_counts() -> None:
    empty = [Batch("fraud", v, 0.0, 1.0) for v in ("1.5.0", "1.4.0")]
    for judge in judges():
        j = judge.evaluate(empty[:1], empty[1:]).named("1.5.0", "1.4.0")
        assert "no bound yet (" in j.summary or judge.name == "integrity", j.summary
        assert re.search(r"\b0 (vs 0 )?requests", j.summary), j.summary


numbers = st.floats(allow_nan=True, allow_infinity=True) | st.sampled_from(
    [0.0, -0.0, 1.0, float("inf"), float("-inf"), float("nan")]
)


@given(numbers, numbers, numbers, numbers, numbers, numbers, numbers, st.sampled_from(
    ["pass", "fail", "continue", "inconclusive"]))  # fmt: skip
def test_every_line_is_readable_for_any_number(a: float, b: float, c: float, d: float, e: float,
                                               n: float, m: float, verdict: str) -> None:  # fmt: skip
    lines = [
        evidence.error_rate_line(rate_c=a, rate_b=b, ratio=c, lower=d, upper=e, alpha=0.05,
                                 n_c=n, n_b=m, verdict=verdict),
        evidence.latency_line(estimate=a, lower=b, upper=c, alpha=d, n_c=n, n_b=m,
                              verdict=verdict),
        evidence.tail_line(quantile=0.99, change_q=a, threshold_ms=b, share_c=c, share_b=d,
                           lower=e, upper=a, alpha=0.01, n_c=n, n_b=m, verdict=verdict),
        evidence.drift_line(label="ok", share_c=a, share_b=b, ratio=c, lower=d, upper=e,
                            alpha=0.01, psi=a, wasserstein=b, n_c=n, n_b=m, verdict=verdict),
        evidence.budget_line(quantile=0.99, value_s=a, limit_s=0.3, share=b, lower=c, upper=d,
                             allowed=0.01, alpha=0.05, n_c=n, verdict=verdict),
        evidence.integrity_line(nonfinite=a, contract=b, unreconciled=c, n_c=n,
                                verdict=verdict),
        evidence.effect_detail(a, b, c, d),
    ]  # fmt: skip
    for line in lines:
        assert not FORBIDDEN.search(line), line


def test_a_failing_error_rate_says_what_was_compared_the_effect_its_bound_and_the_requests() -> (
    None
):
    line = evidence.error_rate_line(
        rate_c=0.024, rate_b=0.011, ratio=2.18, lower=1.52, upper=3.1, alpha=0.01,
        n_c=3120, n_b=28400, verdict="fail",
    )  # fmt: skip
    assert evidence.name_arms(line, "1.5.0", "1.4.0") == (
        "error rate 2.40% on 1.5.0 vs 1.10% on 1.4.0: +1.3 points, ×2.18 (at least ×1.52, "
        "99% confidence) over 3,120 vs 28,400 requests: fail"
    )


def test_bounds_not_known_yet_are_said_so() -> None:
    line = evidence.latency_line(estimate=float("nan"), lower=float("-inf"), upper=float("inf"),
                                 alpha=0.05, n_c=120, n_b=1100, verdict="continue")  # fmt: skip
    assert line == (
        "mean latency on the candidate vs the baseline: no bound yet (120 vs 1,100 requests): "
        "continue"
    )


def test_gate_results_name_both_releases() -> None:
    gate = Gate([ErrorRateJudge()])
    cand = [batch("2", t, [(0.01, "error", "ok")] * 5) for t in range(20)]
    base = [batch("1", t, [(0.01, "answer", "ok")] * 50) for t in range(20)]
    result = gate.evaluate(cand, base).named("fraud@2", "fraud@1")
    assert result.summary.startswith("gate fail: error rate 100.00% on fraud@2 vs 0.00% on fraud@1")
