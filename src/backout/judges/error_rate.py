"""The error-rate judge, and the split-count test it shares with the drift judge.

For the gate and the policy layer. Events (errors, or answers of one class) are split
between the arms slot by slot and tested with Lindon & Malek's anytime-valid count test;
:class:`SplitState` keeps its running log-likelihood ratios and :func:`split_decide` reads
the e-value and the rate ratio's confidence sequence off them.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field

import numpy as np

from backout.judges import evidence
from backout.judges.base import Common, Counts, Judge, Restarts, finish
from backout.judges.series import Series
from backout.judges.stats import (
    F64,
    GRID,
    candidate_share,
    log_mixture,
    prior_log_weights,
    ratio_bounds,
    split_llr,
)
from backout.judges.verdict import Judgement


@dataclass(frozen=True, slots=True)
class ErrorRateConfig:
    """Error-rate judge: fail when the candidate's error rate is higher than the baseline's;
    pass when the rate ratio's upper bound is at most 1 + ``tolerance``."""

    common: Common = Common()  # noqa: RUF009 (frozen, so one shared default is safe)
    tolerance: float = 0.2
    # The failing test's mixture prior on the log rate ratio: normal(log 2, 0.4) on ratios
    # above 1. Mixture SPRTs are most powerful near their prior's centre (Lindon & Malek 2022
    # tune it to the effects a team cares about); x2 is the regression a rollout must catch
    # quickly, x5 is still caught in under 2,000 requests, and validity holds for any prior.
    prior_mean: float = math.log(2)
    prior_scale: float = 0.4
    # The confidence sequence's prior stays centred on no change (two-sided, sd 1), so that
    # its bounds, and the pass verdict, are not pulled toward x2.
    interval_scale: float = 1.0
    restarts: Restarts = Restarts()  # noqa: RUF009 (frozen)


@dataclass(slots=True)
class SplitState:
    """Running state of the split-count test: log-likelihood ratios on the grid, each arm's
    event count, and the sample counts."""

    counts: Counts = field(default_factory=Counts)
    llr: F64 = field(default_factory=lambda: np.zeros_like(GRID))
    k_c: float = 0.0
    k_b: float = 0.0
    # The log-likelihood ratios when each restart began (the first: none yet).
    snaps: list[F64] = field(default_factory=lambda: [np.zeros_like(GRID)])


def split_add(st: SplitState, kc: F64, kb: F64, share: F64, index: int, restarts: Restarts) -> None:
    """Add slots ``index``, ``index + 1``, ... of events split between the arms, noting the
    log-likelihood ratios where a restart begins."""
    cuts = restarts.cuts(index, len(kc))
    for lo, hi in itertools.pairwise(cuts):
        at = index + lo
        j = at // max(restarts.every, 1)
        if at and restarts.is_start(at) and len(st.snaps) == j:
            st.snaps.append(st.llr.copy())
        c, b, p = kc[lo:hi], kb[lo:hi], share[lo:hi]
        busy = (c + b) > 0  # slots without events carry no evidence
        if busy.any():
            st.llr += split_llr(c[busy], b[busy], p[busy]).sum(axis=0)


def split_decide(
    st: SplitState, alpha: float, log_w_fail: F64, log_w_cs: F64, restarts: Restarts
) -> tuple[float, float, float, float]:
    """(log e-value, estimate, lower, upper) of the rate ratio for a split-count state; the
    e-value is the restarts' weighted average, the bounds are over the whole window."""
    log_e = restarts.combine(log_mixture(st.llr[None, :] - np.stack(st.snaps), log_w_fail))
    lo, hi = ratio_bounds(st.llr, log_w_cs, alpha)
    rate_c = st.k_c / st.counts.n_c if st.counts.n_c else math.nan
    rate_b = st.k_b / st.counts.n_b if st.counts.n_b else math.nan
    est = rate_c / rate_b if rate_b else (math.inf if rate_c else math.nan)
    return log_e, est, math.exp(lo), math.exp(hi)


class ErrorRateJudge(Judge[ErrorRateConfig, SplitState]):
    """Is the candidate's error rate higher than the same-time baseline's?"""

    name = "error_rate"

    def __init__(self, config: ErrorRateConfig | None = None) -> None:
        super().__init__(config or ErrorRateConfig())
        cfg = self.config
        self._w_fail = prior_log_weights(cfg.prior_scale, "greater", mean=cfg.prior_mean)
        self._w_cs = prior_log_weights(cfg.interval_scale, "two-sided")

    def start(self) -> SplitState:
        return SplitState()

    def update(self, state: SplitState, candidate: Series, baseline: Series) -> None:
        state.counts.add(candidate, baseline)
        if not len(candidate):
            return
        ec, eb = candidate.errors, baseline.errors
        share = candidate_share(candidate.requests, baseline.requests)
        first = state.counts.batches - len(candidate)
        split_add(state, ec, eb, share, first, self.config.restarts)
        state.k_c += float(ec.sum())
        state.k_b += float(eb.sum())

    def decide(self, state: SplitState, alpha: float) -> Judgement:
        common = self.config.common
        log_e, est, lo, hi = split_decide(
            state, alpha, self._w_fail, self._w_cs, self.config.restarts
        )
        failed = log_e >= math.log(1 / alpha)
        passed = hi <= 1 + self.config.tolerance
        verdict = finish(state.counts, common, failed=failed, passed=passed)
        n_c, n_b = state.counts.n_c, state.counts.n_b
        summary = evidence.error_rate_line(
            rate_c=state.k_c / n_c if n_c else math.nan, rate_b=state.k_b / n_b if n_b else math.nan,
            ratio=est, lower=lo, upper=hi, alpha=alpha, n_c=n_c, n_b=n_b, verdict=verdict,
        )  # fmt: skip
        return Judgement(
            self.name, verdict, "error_rate_ratio", est, lo, hi, 1 + self.config.tolerance,
            math.exp(min(log_e, 700)), 1 / alpha, alpha, int(state.counts.n_c),
            int(state.counts.n_b), state.counts.batches, summary,
        )  # fmt: skip
