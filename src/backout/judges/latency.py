"""The mean-latency judge: is the candidate slower on average than the same-time baseline?

For the gate and the policy layer. Lai's t-mixture over block means of log-latency, its
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
    # Slots per block: the test uses block means, and blocks of a few seconds make latency
    # autocorrelated over about a second (queues, GC pauses) nearly independent across blocks.
    block_batches: int = 1
    # Blocks between refreshes of the variance inflation.
    refresh_blocks: int = 12
    restarts: Restarts = Restarts()  # noqa: RUF009 (frozen)


@dataclass(slots=True)
class _LatencyState:
    counts: Counts
    dep: Dependence
    cum: F64 = field(default_factory=lambda: np.zeros(4))  # n, a, s, q of the t-mixture
    snaps: list[F64] = field(default_factory=lambda: [np.zeros(4)])
    pending: F64 = field(default_factory=lambda: np.zeros(4))  # open block's sums
    pending_slots: int = 0
    blocks: int = 0


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

    Change points. The judge runs its test from the window's start and from every restart
    (see :class:`~backout.judges.base.Restarts`) and fails on their weighted average.
    """

    name = "latency"

    def __init__(self, config: LatencyConfig | None = None) -> None:
        super().__init__(config or LatencyConfig())

    def start(self) -> _LatencyState:
        cfg = self.config
        segment = max(cfg.restarts.every // cfg.block_batches, 1)
        return _LatencyState(Counts(), Dependence.new(cfg.refresh_blocks, segment))

    def calibrate(self, state: _LatencyState, history: Series) -> None:
        b = self.config.block_batches
        m = len(history) // b
        if m < 2:
            return
        ls = history.log_sum[len(history) - m * b :].reshape(m, b).sum(axis=1)
        n = history.requests[len(history) - m * b :].reshape(m, b).sum(axis=1)
        state.dep.set_history(*arm_means(ls, n))

    def update(self, state: _LatencyState, candidate: Series, baseline: Series) -> None:
        state.counts.add(candidate, baseline)
        cols = np.stack(
            [candidate.log_sum, candidate.requests, baseline.log_sum, baseline.requests], axis=1
        )
        full, state.pending, state.pending_slots = blocks(
            cols, state.pending, state.pending_slots, self.config.block_batches
        )
        if not len(full):
            return
        xc, nc, xb, nb = full.T
        inc = t_sums(mean_difference(xc, nc, xb, nb), batch_weights(nc, nb))
        r = self.config.restarts
        cuts = r.cuts(state.blocks, len(full), self.config.block_batches)
        for lo, hi in itertools.pairwise(cuts):
            at = state.blocks + lo
            step = max(r.every // self.config.block_batches, 1)
            if at and r.is_start(at, self.config.block_batches) and len(state.snaps) == at // step:
                state.snaps.append(state.cum.copy())
            state.cum += inc[lo:hi].sum(axis=0)
        state.blocks += len(full)
        state.dep.add(*arm_means(xc, nc), *arm_means(xb, nb))

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
