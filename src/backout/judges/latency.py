"""The mean-latency judge: is the candidate slower on average than the same-time baseline?

For the gate and the policy layer. Lai's t-mixture over slot (or block) means of log-latency, its
sample size deflated by the variance inflation each arm's own autocorrelation implies, and
restarted along the window so a slowdown that starts late is caught as fast as one at the
start.
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
    Dependence,
    arm_means,
    batch_weights,
    blocks,
    deflated,
    lag1_correlation,
    mean_difference,
    t_mixture_interval,
    t_mixture_log_evalue,
    t_sums,
)
from backout.judges.verdict import Judgement


@dataclass(frozen=True, slots=True)
class LatencyConfig:
    """Mean-latency judge: fail when the candidate's geometric-mean latency is higher than
    the baseline's; pass when its upper bound is at most ``tolerance`` (relative) higher."""

    common: Common = Common()  # noqa: RUF009 (frozen, so one shared default is safe)
    tolerance: float = 0.1
    # The failing test's prior on the effect, in per-request standard deviations of
    # log-latency: normal(effect_mean, effect_scale) (see ``t_mixture_log_evalue``).
    effect_mean: float = 0.2
    effect_scale: float = 0.1
    # A narrow prior at +10% pays heavily for a gross slowdown when few effective blocks
    # exist (a wandering baseline deflates the sample size), so ``wide_weight`` of the
    # failing e-value comes from a wide normal(0, wide_scale) prior instead: the average of
    # two e-values is one (Vovk & Wang 2021), and +10% pays only log(1 / 0.8) for it.
    wide_weight: float = 0.05
    wide_scale: float = 1.0
    interval_scale: float = 0.3  # the confidence sequence's prior: normal(0, 0.3)
    # Slots per block while the window's first segment (``restarts.every`` slots) runs: a
    # test on block means of a few seconds stays valid when requests are correlated across
    # a second's boundary (a queue, a pause), which makes each slot's mean correlate with
    # its neighbours'; a test slot by slot would read that as evidence. At the end of the
    # first segment the judge measures the lag-1 correlation of its slot differences: below
    # ``switch_rho`` it goes on slot by slot (sooner to detect, nothing crosses a second),
    # otherwise it keeps the blocks for the rest of the window.
    block_batches: int = 3
    switch_rho: float = 0.2
    # Slots between refreshes of the variance inflation.
    refresh_batches: int = 12
    restarts: Restarts = Restarts()  # noqa: RUF009 (frozen)


@dataclass(slots=True)
class _LatencyState:
    counts: Counts
    dep: Dependence
    block: int  # slots per block now (see LatencyConfig.block_batches)
    cum: F64 = field(default_factory=lambda: np.zeros(4))  # n, a, s, q of the t-mixture
    snaps: list[F64] = field(default_factory=lambda: [np.zeros(4)])
    pending: F64 = field(default_factory=lambda: np.zeros(4))  # open block's sums
    pending_slots: int = 0
    slots: int = 0
    early: list[F64] = field(default_factory=list)  # the first segment's (d, w) per slot


class LatencyJudge(Judge[LatencyConfig, _LatencyState]):
    """Is the candidate slower on average (log-latency) than the same-time baseline?

    Validity under dependence. Lai's t-mixture (see ``t_mixture_log_evalue``) estimates the
    variance from the spread across blocks, which is right when blocks are independent and
    too small when each arm's latency level wanders (garbage collection, noisy neighbours,
    caches), shared by all requests of a second and autocorrelated over tens of seconds.
    The judge measures each arm's long-run variance on its own block means (batch means at
    several block lengths, ``long_run_variance``; the baseline's history included, the
    candidate taken to wander at least as much as the baseline until its own estimate says
    more) and divides the t-mixture's sample size by the inflation kappa = long-run /
    short-run variance of the difference (``inflation``): the effective-sample-size
    correction of a t-test on autocorrelated data (Bayley & Hammersley 1946; as used by
    HAC-corrected t-tests, Newey & West 1987). With i.i.d. noise kappa is 1 and the test is
    the plain t-mixture.

    Requests correlated across a second's boundary (a queue that drains over a second, a
    pause) make neighbouring slots' means correlate: short-range dependence, which the
    long-run estimate sees only after a minute or more of the candidate's own slots. So the
    window's first segment runs on block means of ``block_batches`` slots, whose spread
    carries that correlation into the t-mixture's own variance (non-overlapping batch means
    as a self-normalised test, Carlstein 1986; Shao 2010, "A self-normalized approach to
    confidence interval construction in time series"). At the end of the first segment the
    lag-1 correlation of the slot differences decides: below ``switch_rho`` the test goes
    on slot by slot, otherwise it keeps the blocks. The block length is chosen from data
    already seen, so the test stays an e-process under the null whichever it chooses.

    Change points. The judge runs its test from the window's start and from every restart
    (see :class:`~backout.judges.base.Restarts`) and fails on their weighted average.
    """

    name = "latency"

    def __init__(self, config: LatencyConfig | None = None) -> None:
        super().__init__(config or LatencyConfig())

    def start(self) -> _LatencyState:
        cfg = self.config
        dep = Dependence.new(cfg.refresh_batches, cfg.restarts.every)
        return _LatencyState(Counts(), dep, max(cfg.block_batches, 1))

    def calibrate(self, state: _LatencyState, history: Series) -> None:
        if len(history) >= 2:
            state.dep.set_history(*arm_means(history.log_sum, history.requests))

    def update(self, state: _LatencyState, candidate: Series, baseline: Series) -> None:
        cfg = self.config
        state.counts.add(candidate, baseline)
        cols = np.stack(
            [candidate.log_sum, candidate.requests, baseline.log_sum, baseline.requests], axis=1
        )
        state.dep.add(*arm_means(cols[:, 0], cols[:, 1]), *arm_means(cols[:, 2], cols[:, 3]))
        switch_at = cfg.restarts.every
        r = cfg.restarts
        cuts = sorted({*r.cuts(state.slots, len(cols)), *_at(switch_at - state.slots, len(cols))})
        for lo, hi in itertools.pairwise(cuts):
            at = state.slots + lo
            if at and r.is_start(at) and len(state.snaps) == at // r.every:
                state.snaps.append(state.cum.copy())
            if at == switch_at and state.block > 1 and not state.pending_slots:
                d, w = np.stack(state.early).T if state.early else (np.zeros(0), np.zeros(0))
                if float(lag1_correlation(d, w)) < cfg.switch_rho:
                    state.block = 1
            piece = cols[lo:hi]
            if at < switch_at:
                d = mean_difference(piece[:, 0], piece[:, 1], piece[:, 2], piece[:, 3])
                w = batch_weights(piece[:, 1], piece[:, 3])
                state.early.extend(np.stack([d, w], axis=1))
            full, state.pending, state.pending_slots = blocks(
                piece, state.pending, state.pending_slots, state.block
            )
            if len(full):
                xc, nc, xb, nb = full.T
                inc = t_sums(mean_difference(xc, nc, xb, nb), batch_weights(nc, nb))
                state.cum += inc.sum(axis=0)
        state.slots += len(cols)

    def decide(self, state: _LatencyState, alpha: float) -> Judgement:
        cfg = self.config
        kappa = state.dep.kappa
        n, a, s, q = (float(v) for v in deflated(state.cum, kappa))
        est, lo, hi = t_mixture_interval(n, a, s, q, cfg.interval_scale, alpha)
        # Only a slower candidate fails (a faster one is welcome): each start's e-value
        # counts only when its own estimate is slower. Zeroing a part lowers the average, so
        # the result stays below an e-process and Ville's inequality still bounds it.
        per = state.cum[None, :] - np.stack(state.snaps)
        pn, pa, ps, pq = deflated(per, kappa)
        log_es = np.logaddexp(
            math.log1p(-cfg.wide_weight)
            + t_mixture_log_evalue(pn, pa, ps, pq, cfg.effect_scale, cfg.effect_mean),
            math.log(cfg.wide_weight) + t_mixture_log_evalue(pn, pa, ps, pq, cfg.wide_scale),
        )
        log_e = cfg.restarts.combine(np.where(ps > 0, log_es, -np.inf))
        failed = log_e >= math.log(1 / alpha)
        passed = hi <= math.log1p(self.config.tolerance)
        verdict = finish(state.counts, self.config.common, failed=failed, passed=passed)
        rel = [math.expm1(x) if math.isfinite(x) else x for x in (est, lo, hi)]
        summary = evidence.latency_line(
            estimate=rel[0], lower=rel[1], upper=rel[2], alpha=alpha, n_c=state.counts.n_c,
            n_b=state.counts.n_b, verdict=verdict, basis="",
        )  # fmt: skip
        return Judgement(
            self.name, verdict, "mean_latency_change", rel[0], rel[1], rel[2],
            self.config.tolerance, math.exp(min(log_e, 700)), 1 / alpha, alpha,
            int(state.counts.n_c), int(state.counts.n_b), state.counts.batches, summary,
            (("variance_inflation", kappa),),
        )  # fmt: skip


def _at(offset: int, n: int) -> list[int]:
    """``[offset]`` when it falls inside a chunk of ``n`` new slots, else nothing."""
    return [offset] if 0 < offset < n else []
