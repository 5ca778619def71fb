"""The mean-latency judge: is the candidate slower on average than the same-time baseline?

For the gate and the policy layer. Lai's t-mixture over block means of log-latency, with an
early per-batch fallback for gross slowdowns in the first seconds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from backout.judges import evidence
from backout.judges.base import Common, Counts, Judge, finish
from backout.judges.series import Series
from backout.judges.stats import (
    F64,
    TMixtureSums,
    batch_weights,
    blocks,
    mean_difference,
    t_mixture_interval,
    t_mixture_log_evalue,
)
from backout.judges.verdict import Judgement


@dataclass(frozen=True, slots=True)
class LatencyConfig:
    """Mean-latency judge: fail when the candidate's geometric-mean latency is higher than
    the baseline's; pass when its upper bound is at most ``tolerance`` (relative) higher."""

    common: Common = Common()  # noqa: RUF009 (frozen, so one shared default is safe)
    tolerance: float = 0.1
    # The failing test's prior on the effect, in per-request standard deviations of
    # log-latency: normal(effect_mean, effect_scale). A prior centred on +10% (mean 0.2,
    # sd 0.15; see ``t_mixture_log_evalue``) cut the median delay at +10% from 51 s to 45 s
    # in the detection benchmark, but it also leans on the block means being independent:
    # with AR(1) latency (phi = 0.9) this judge alone then failed 7% of healthy runs at
    # alpha = 0.05, against 4.4% for normal(0, 0.3). Robustness wins; the centred prior is a
    # policy knob for traffic known not to be autocorrelated beyond a block.
    effect_mean: float = 0.0
    effect_scale: float = 0.3
    interval_scale: float = 0.3  # the confidence sequence's prior: normal(0, 0.3)
    # Slots per block: the test uses block means, and blocks of a few seconds make latency
    # autocorrelated over about a second (queues, GC pauses) nearly independent across blocks.
    block_batches: int = 3
    # Early fallback. A t-mixture needs several blocks before its e-value can reach 1/alpha
    # whatever the effect (its ceiling after n blocks is ((n - 1) / 2) log(1 + c^2 a)), so a
    # gross slowdown would wait 15 s or more for blocks to accumulate. A second t-mixture over
    # single batches, with a wide prior normal(0, 1), runs for the first ``early_batches`` and
    # is then frozen (a stopped e-process is still one); the judge fails on the average
    # (1 - w) E_blocks + w E_early, itself an e-process (Vovk & Wang 2021, averaging
    # e-values). With w = 0.1 the block test's threshold rises by only log(1/0.9) = 0.1, and
    # +50% latency is caught in about half the time. Per-batch means are slightly correlated
    # when latency is, which is why the fallback is short and lightly weighted.
    early_batches: int = 12
    early_weight: float = 0.1
    early_scale: float = 1.0


@dataclass(slots=True)
class _LatencyState:
    counts: Counts = field(default_factory=Counts)
    t: TMixtureSums = field(default_factory=TMixtureSums)
    early: TMixtureSums = field(default_factory=TMixtureSums)  # per-batch, first early_batches only
    pending: F64 = field(default_factory=lambda: np.zeros(4))  # open block's sums
    pending_slots: int = 0


class LatencyJudge(Judge[LatencyConfig, _LatencyState]):
    """Is the candidate slower on average (log-latency) than the same-time baseline?"""

    name = "latency"

    def __init__(self, config: LatencyConfig | None = None) -> None:
        super().__init__(config or LatencyConfig())

    def start(self) -> _LatencyState:
        return _LatencyState()

    def update(self, state: _LatencyState, candidate: Series, baseline: Series) -> None:
        room = max(self.config.early_batches - state.counts.batches, 0)
        if room and self.config.early_weight > 0:
            xc, nc = candidate.log_sum[:room], candidate.requests[:room]
            xb, nb = baseline.log_sum[:room], baseline.requests[:room]
            state.early.add(mean_difference(xc, nc, xb, nb), batch_weights(nc, nb))
        state.counts.add(candidate, baseline)
        cols = np.stack(
            [candidate.log_sum, candidate.requests, baseline.log_sum, baseline.requests], axis=1
        )
        full, state.pending, state.pending_slots = blocks(
            cols, state.pending, state.pending_slots, self.config.block_batches
        )
        if len(full):
            xc, nc, xb, nb = full.T
            state.t.add(mean_difference(xc, nc, xb, nb), batch_weights(nc, nb))

    def decide(self, state: _LatencyState, alpha: float) -> Judgement:
        t, cfg = state.t, self.config
        est, lo, hi = t_mixture_interval(t.n, t.a, t.s, t.q, cfg.interval_scale, alpha)
        # Only a slower candidate fails (a faster one is welcome): each part of the average
        # counts only when its own estimate is slower. Zeroing a part lowers the average, so
        # the result stays below an e-process and Ville's inequality still bounds it.
        w, e = cfg.early_weight, state.early
        log_e = -math.inf
        if t.s > 0:
            log_e = math.log1p(-w) + float(
                t_mixture_log_evalue(t.n, t.a, t.s, t.q, cfg.effect_scale, cfg.effect_mean)
            )
        if w > 0 and e.s > 0:
            log_early = float(t_mixture_log_evalue(e.n, e.a, e.s, e.q, cfg.early_scale))
            log_e = float(np.logaddexp(log_e, math.log(w) + log_early))
        failed = log_e >= math.log(1 / alpha)
        passed = hi <= math.log1p(self.config.tolerance)
        verdict = finish(state.counts, self.config.common, failed=failed, passed=passed)
        basis = ""
        if not math.isfinite(est) and e.n >= 2:
            # Too few blocks for the block test to say anything yet: show what the early
            # per-batch test sees, which is what can fail the judge in its first seconds.
            est, lo, hi = t_mixture_interval(e.n, e.a, e.s, e.q, cfg.early_scale, alpha)
            basis = "per batch"
        rel = [math.expm1(x) if math.isfinite(x) else x for x in (est, lo, hi)]
        summary = evidence.latency_line(
            estimate=rel[0], lower=rel[1], upper=rel[2], alpha=alpha, n_c=state.counts.n_c,
            n_b=state.counts.n_b, verdict=verdict, basis=basis,
        )  # fmt: skip
        return Judgement(
            self.name, verdict, "mean_latency_change", rel[0], rel[1], rel[2],
            self.config.tolerance, math.exp(min(log_e, 700)), 1 / alpha, alpha,
            int(state.counts.n_c), int(state.counts.n_b), state.counts.batches, summary,
        )  # fmt: skip
