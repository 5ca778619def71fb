"""Tests for backout.judges: verdicts, evidence, the gate's Bonferroni split, the benchmark."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from backout.errors import ValidationError
from backout.judges.budget import LatencyBudgetConfig, LatencyBudgetJudge
from backout.judges.drift import DriftJudge
from backout.judges.error_rate import ErrorRateConfig, ErrorRateJudge
from backout.judges.gate import Gate, default_gate
from backout.judges.integrity import IntegrityJudge
from backout.judges.latency import LatencyJudge
from backout.judges.series import pair_by_time
from backout.judges.stats import (
    GRID,
    log_mixture,
    prior_log_weights,
    split_llr,
    t_mixture_log_evalue,
)
from backout.judges.tail import TailLatencyJudge
from backout.judges.verdict import Judgement, Verdict
from backout.telemetry.batches import Batch, ErrorKind, latency_bucket

ROOT = Path(__file__).resolve().parents[2]


def make_batch(
    rng: np.random.Generator,
    version: str,
    t: int,
    n: int,
    *,
    error_rate: float = 0.01,
    median_s: float = 0.05,
    positive: float = 0.1,
    nan_rate: float = 0.0,
) -> Batch:
    """One second of synthetic traffic for one arm, request by request."""
    b = Batch("fraud", version, float(t), t + 1.0)
    for _ in range(n):
        u = rng.random()
        error = (
            ErrorKind.MODEL
            if u < error_rate
            else ErrorKind.NONFINITE
            if u < error_rate + nan_rate
            else None
        )
        label = [] if error else (["fraud"] if rng.random() < positive else ["ok"])
        b.observe(
            float(median_s * math.exp(0.5 * rng.standard_normal())), error=error, outputs=label
        )
    return b


def make_stream(
    seed: int, seconds: int, *, cand_n: int = 10, base_n: int = 90, **candidate: float
) -> tuple[list[Batch], list[Batch]]:
    rng = np.random.default_rng(seed)
    cand = [make_batch(rng, "2", t, cand_n, **candidate) for t in range(seconds)]
    base = [make_batch(rng, "1", t, base_n) for t in range(seconds)]
    return cand, base


def error_counts(
    rng: np.random.Generator, runs: int, slots: int, mult: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    n_c = rng.poisson(10, (runs, slots)).astype(float)
    n_b = rng.poisson(90, (runs, slots)).astype(float)
    e_c = rng.binomial(n_c.astype(int), 0.01 * mult).astype(float)
    e_b = rng.binomial(n_b.astype(int), 0.01).astype(float)
    return e_c, e_b, n_c / (n_c + n_b)


def test_error_judge_false_alarms_stay_under_alpha_on_a_null_stream() -> None:
    """300 seeded healthy runs of 600 slots, looked at after every slot: <= alpha fail."""
    rng = np.random.default_rng(11)
    e_c, e_b, share = error_counts(rng, 300, 600, 1.0)
    cfg = ErrorRateConfig()
    log_w = prior_log_weights(cfg.prior_scale, "greater", mean=cfg.prior_mean)
    fails = 0
    for i in range(300):
        path = log_mixture(np.cumsum(split_llr(e_c[i], e_b[i], share[i]), axis=0), log_w)
        fails += bool((path >= math.log(1 / 0.05)).any())
    assert fails / 300 <= 0.05 + 0.02  # alpha plus a little sampling slack


def test_five_times_the_errors_fails() -> None:
    cand, base = make_stream(1, 60, error_rate=0.05)
    assert ErrorRateJudge().evaluate(cand, base).verdict == Verdict.FAIL


def test_fewer_errors_does_not_fail() -> None:
    cand, base = make_stream(2, 120, error_rate=0.001)
    assert ErrorRateJudge().evaluate(cand, base).verdict != Verdict.FAIL


def test_error_judge_passes_with_enough_healthy_data() -> None:
    rng = np.random.default_rng(3)
    cand: list[Batch] = []
    base: list[Batch] = []
    for t in range(400):  # large, equal arms with a high base rate give a tight bound fast
        for arm, out in (("2", cand), ("1", base)):
            b = Batch("fraud", arm, float(t), t + 1.0, requests=500)
            errors = int(rng.binomial(500, 0.05))
            b.errors = {"model": errors}
            b.predictions = 500 - errors
            out.append(b)
    j = ErrorRateJudge(ErrorRateConfig(tolerance=0.2)).evaluate(cand, base)
    assert j.verdict == Verdict.PASS
    assert j.upper <= 1.2


def test_slower_candidate_fails_the_latency_judge() -> None:
    cand, base = make_stream(4, 120, median_s=0.075)
    assert LatencyJudge().evaluate(cand, base).verdict == Verdict.FAIL


def test_faster_candidate_does_not_fail_the_latency_judge() -> None:
    cand, base = make_stream(5, 120, median_s=0.035)
    assert LatencyJudge().evaluate(cand, base).verdict != Verdict.FAIL


def test_tail_judge_fails_when_only_the_tail_slows() -> None:
    cand, base = make_stream(6, 200)
    rng = np.random.default_rng(6)
    slow = latency_bucket(0.4)
    for b in cand[30:]:  # 20% of requests gain a slow path; the median barely moves
        extra = int(rng.binomial(b.requests, 0.2))
        b.latency[slow] = b.latency.get(slow, 0) + extra
    assert TailLatencyJudge().evaluate(cand, base).verdict == Verdict.FAIL


def test_integrity_fails_at_once_on_one_nan() -> None:
    cand, base = make_stream(7, 2)
    cand[1].observe(0.05, error=ErrorKind.NONFINITE)
    j = IntegrityJudge().evaluate(cand, base)
    assert j.verdict == Verdict.FAIL
    assert math.isinf(j.e_value)


def test_integrity_fails_when_requests_do_not_reconcile() -> None:
    cand, base = make_stream(8, 3)
    cand[2].requests += 1  # a request that neither answered nor errored
    assert IntegrityJudge().evaluate(cand, base).verdict == Verdict.FAIL


def test_budget_judge_fails_when_p99_breaks_the_limit() -> None:
    cand, base = make_stream(9, 30, median_s=0.2)
    j = LatencyBudgetJudge(LatencyBudgetConfig(limit_s=0.3)).evaluate(cand, base)
    assert j.verdict == Verdict.FAIL
    assert "vs budget 300 ms" in j.summary


def test_budget_judge_passes_far_under_the_limit() -> None:
    cand, base = make_stream(10, 60)
    j = LatencyBudgetJudge(LatencyBudgetConfig(limit_s=1.0)).evaluate(cand, base)
    assert j.verdict == Verdict.PASS


def test_drift_judge_fails_on_a_large_class_shift() -> None:
    cand, base = make_stream(12, 120, positive=0.3)
    j = DriftJudge().evaluate(cand, base)
    assert j.verdict == Verdict.FAIL
    assert dict(j.effects)["psi"] > 0.05


def test_judgement_carries_evidence_and_a_one_line_summary() -> None:
    cand, base = make_stream(13, 60, median_s=0.075)
    j = LatencyJudge().evaluate(cand, base)
    d = j.to_dict()
    assert {"estimate", "lower", "upper", "e_value", "samples", "verdict"} <= d.keys()
    assert d["verdict"] == "fail"
    assert j.summary.startswith("mean latency +")
    assert "(at least +" in j.summary and "95% confidence" in j.summary
    assert " vs 5,400 requests" in j.summary and j.summary.endswith(": fail")
    assert "\n" not in j.summary
    assert isinstance(j, Judgement) and j.samples == sum(b.requests for b in cand)


def test_gate_splits_alpha_bonferroni_over_its_checks() -> None:
    gate = default_gate(0.05, budget_s=0.3)
    assert gate.k == 5  # errors, latency, tail, drift, budget; integrity spends no alpha
    cand, base = make_stream(14, 30)
    result = gate.evaluate(cand, base)
    for j in result.judgements:
        if j.judge != "integrity":
            assert j.alpha == pytest.approx(0.01)
            assert j.threshold == pytest.approx(100)


def test_gate_fails_when_one_judge_fails() -> None:
    cand, base = make_stream(15, 20)
    cand[5].observe(0.05, error=ErrorKind.OUTPUT_CONTRACT)
    result = default_gate().evaluate(cand, base)
    assert result.verdict == Verdict.FAIL
    assert result.summary.startswith("gate fail: integrity")


def test_incremental_gate_matches_a_fresh_gate() -> None:
    cand, base = make_stream(16, 80, median_s=0.06)
    inc = default_gate()
    for end in range(1, 81):
        last = inc.evaluate(cand[:end], base[:end])
    fresh = default_gate().evaluate(cand, base)
    assert [j.e_value for j in last.judgements] == pytest.approx(
        [j.e_value for j in fresh.judgements]
    )


def test_unpaired_batches_are_rejected_with_the_fix() -> None:
    cand, base = make_stream(17, 5)
    with pytest.raises(ValidationError, match="pair_by_time"):
        ErrorRateJudge().evaluate(cand, base[:4])


def test_pair_by_time_fills_missing_slots_with_empty_batches() -> None:
    cand, base = make_stream(18, 5)
    c, b = pair_by_time(cand[:2] + cand[3:], base)
    assert len(c) == len(b) == 5
    assert c[2].requests == 0 and c[3].requests == cand[3].requests


def test_grid_is_symmetric_and_contains_zero() -> None:
    assert 0.0 in GRID and np.allclose(GRID, -GRID[::-1])


def test_gate_requires_a_judge() -> None:
    with pytest.raises(ValidationError):
        Gate([])


def test_detection_benchmark_quick_run_writes_nothing(tmp_path: Path) -> None:
    results = ROOT / "benchmarks" / "RESULTS.md"
    before = results.read_text() if results.exists() else None
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "detection.py"), "--quick", "--no-write"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert "### Targets" in out.stdout
    assert (results.read_text() if results.exists() else None) == before


def test_centred_t_mixture_with_zero_mean_is_lais_closed_form() -> None:
    """The quadrature path with mean 0 reproduces the closed form (it skips it) and a tiny
    mean moves the e-value only a little: the two formulas agree at their junction."""
    n, a = np.array([2.0, 5.0, 40.0]), np.array([54.0, 135.0, 1080.0])
    s, q = np.array([3.0, -4.0, 30.0]), np.array([2.0, 3.0, 20.0])
    closed = t_mixture_log_evalue(n, a, s, q, 0.3)
    near = t_mixture_log_evalue(n, a, s, q, 0.3, 1e-6)
    assert np.allclose(closed, near, atol=1e-3)


def test_centred_t_mixture_keeps_false_alarms_under_alpha() -> None:
    """400 healthy runs of 200 block differences, looked at after each: <= alpha cross 1/alpha."""
    rng = np.random.default_rng(3)
    d = rng.standard_normal((400, 200)) * 0.5 / math.sqrt(27)
    w = np.full_like(d, 27.0)
    n = np.cumsum(np.ones_like(d), axis=1)
    a, s, q = np.cumsum(w, axis=1), np.cumsum(w * d, axis=1), np.cumsum(w * d * d, axis=1)
    le = t_mixture_log_evalue(n, a, s, q, 0.15, 0.2)
    assert ((le >= math.log(20)) & (s > 0)).any(axis=1).mean() <= 0.05 + 0.02


def test_centred_t_mixture_detects_a_ten_percent_slowdown_sooner() -> None:
    """At +10% latency (0.19 per-request sd) the prior centred there beats normal(0, 0.3)."""
    rng = np.random.default_rng(4)
    d = (0.19 + rng.standard_normal((200, 100)) / math.sqrt(27)) * 0.5
    w = np.full_like(d, 27.0)
    n = np.cumsum(np.ones_like(d), axis=1)
    a, s, q = np.cumsum(w, axis=1), np.cumsum(w * d, axis=1), np.cumsum(w * d * d, axis=1)

    def median_first(le: np.ndarray) -> float:
        return float(np.median(np.argmax(le >= math.log(100), axis=1)))

    centred = t_mixture_log_evalue(n, a, s, q, 0.15, 0.2)
    zero = t_mixture_log_evalue(n, a, s, q, 0.3)
    assert median_first(centred) < median_first(zero)


def test_latency_judge_catches_a_doubled_latency_within_seconds() -> None:
    """Twice the latency fails within 15 one-second batches (five blocks of three: the
    judge's first minute runs on blocks)."""
    cand, base = make_stream(21, 15, median_s=0.1)
    assert LatencyJudge().evaluate(cand, base).verdict == Verdict.FAIL
