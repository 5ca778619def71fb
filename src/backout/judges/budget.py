"""The latency-budget judge: does the candidate break an absolute limit such as p99 <= 300 ms?

For the gate and the policy layer; the one judge that compares the candidate with a budget
instead of a baseline.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from backout.judges import evidence
from backout.judges.base import Common, Counts, Judge, finish
from backout.judges.series import Series
from backout.judges.stats import (
    binomial_llr,
    hist_quantile,
    log_mixture,
    prior_log_weights,
    ratio_bounds,
)
from backout.judges.verdict import Judgement
from backout.telemetry.batches import LAT_BUCKETS, latency_bucket


@dataclass(frozen=True, slots=True)
class LatencyBudgetConfig:
    """Budget judge: an absolute limit such as p99 <= 300 ms, whatever the baseline does."""

    limit_s: float = 0.3
    quantile: float = 0.99
    common: Common = Common()  # noqa: RUF009 (frozen, so one shared default is safe)
    prior_scale: float = 1.5


@dataclass(slots=True)
class _BudgetState:
    counts: Counts = field(default_factory=Counts)
    k: float = 0.0
    n: float = 0.0
    hist: NDArray[np.int64] = field(default_factory=lambda: np.zeros(LAT_BUCKETS, np.int64))


class LatencyBudgetJudge(Judge[LatencyBudgetConfig, _BudgetState]):
    """Does the candidate break an absolute latency budget (share of requests over the limit
    above 1 - quantile)? A one-sample binomial mixture e-value; a clear breach fails within
    a few batches."""

    name = "latency_budget"

    def __init__(self, config: LatencyBudgetConfig | None = None) -> None:
        super().__init__(config or LatencyBudgetConfig())
        self._p0 = 1 - self.config.quantile
        self._bucket = latency_bucket(self.config.limit_s)
        self._w_fail = prior_log_weights(self.config.prior_scale, "greater")
        self._w_cs = prior_log_weights(self.config.prior_scale, "two-sided")

    def start(self) -> _BudgetState:
        return _BudgetState()

    def update(self, state: _BudgetState, candidate: Series, baseline: Series) -> None:
        state.counts.add(candidate, baseline)
        state.hist += candidate.hist.sum(axis=0)
        state.k += float(candidate.hist[:, self._bucket + 1 :].sum())
        state.n += float(candidate.hist.sum())

    def decide(self, state: _BudgetState, alpha: float) -> Judgement:
        cfg = self.config
        llr = binomial_llr(np.array(state.k), np.array(state.n), self._p0)
        log_e = float(log_mixture(llr, self._w_fail))
        lo, hi = ratio_bounds(llr, self._w_cs, alpha)
        failed = log_e >= math.log(1 / alpha)
        verdict = finish(state.counts, cfg.common, failed=failed, passed=hi <= 0)
        share = state.k / state.n if state.n else math.nan
        qv = hist_quantile(state.hist, cfg.quantile)
        name = f"p{cfg.quantile * 100:g}"
        summary = evidence.budget_line(
            quantile=cfg.quantile, value_s=qv, limit_s=cfg.limit_s, share=share,
            lower=self._p0 * math.exp(lo), upper=min(self._p0 * math.exp(hi), 1.0),
            allowed=self._p0, alpha=alpha, n_c=state.counts.n_c, verdict=verdict,
        )  # fmt: skip
        return Judgement(
            self.name, verdict, f"share_over_{name}_budget", share, self._p0 * math.exp(lo),
            min(self._p0 * math.exp(hi), 1.0), self._p0, math.exp(min(log_e, 700)), 1 / alpha,
            alpha, int(state.counts.n_c), int(state.counts.n_b), state.counts.batches, summary,
            (("quantile_s", qv), ("limit_s", cfg.limit_s)),
        )  # fmt: skip
