"""The tail-latency judge: are more of the candidate's requests above the baseline's p95 / p99?

For the gate and the policy layer. Catches slow paths on a few percent of requests that the
mean-latency judge misses.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from backout.judges import evidence
from backout.judges.base import Common, Counts, Judge, Restarts, finish
from backout.judges.series import Series
from backout.judges.stats import (
    F64,
    Dependence,
    arm_means,
    batch_weights,
    deflated,
    hist_quantile,
    log_sum_exp,
    mean_difference,
    t_mixture_interval,
    t_mixture_log_evalue,
    t_sums,
)
from backout.judges.verdict import Judgement
from backout.telemetry.batches import LAT_BUCKETS, bucket_mid, latency_bucket, latency_quantile


@dataclass(frozen=True, slots=True)
class TailLatencyConfig:
    """Tail judge: exceedances of baseline quantile thresholds, frozen after a warm-up.

    Fails when the candidate's share of requests above a threshold is higher than the
    baseline's; passes when that share's increase is bounded by ``tolerance`` times the
    quantile's nominal share (so p99 with tolerance 0.5: at most +0.5 points).
    """

    common: Common = Common()  # noqa: RUF009 (frozen, so one shared default is safe)
    quantiles: tuple[float, ...] = (0.95, 0.99)
    thresholds_s: tuple[float, ...] = ()  # fixed thresholds; empty: frozen from the baseline
    warmup_batches: int = 30
    tolerance: float = 0.5
    effect_scale: float = 0.15  # the confidence sequence's prior: normal(0, 0.15)
    # The failing test's prior on the change of an exceedance share, in per-request sds:
    # normal(0.15, 0.1), centred on the slow path on a few percent of requests it is there
    # to catch (see ``LatencyConfig``; any prior keeps the test valid).
    fail_mean: float = 0.15
    fail_scale: float = 0.1
    refresh_batches: int = 12  # batches between refreshes of the variance inflation
    restarts: Restarts = Restarts()  # noqa: RUF009 (frozen)


@dataclass(slots=True)
class _TailState:
    counts: Counts = field(default_factory=Counts)
    seen: int = 0
    warm: NDArray[np.int64] = field(default_factory=lambda: np.zeros(LAT_BUCKETS, np.int64))
    buckets: list[int] = field(default_factory=list)
    t: list[F64] = field(default_factory=list)  # per quantile: n, a, s, q
    snaps: list[list[F64]] = field(default_factory=list)
    dep: list[Dependence] = field(default_factory=list)
    tested: int = 0  # slots tested so far
    hist_c: NDArray[np.int64] = field(default_factory=lambda: np.zeros(LAT_BUCKETS, np.int64))
    hist_b: NDArray[np.int64] = field(default_factory=lambda: np.zeros(LAT_BUCKETS, np.int64))


class TailLatencyJudge(Judge[TailLatencyConfig, _TailState]):
    """Are more of the candidate's requests above the baseline's p95 / p99 than expected?

    Catches tail-only regressions (a slow path on a few percent of requests) that a mean test
    misses. Each quantile is tested with Lai's t-mixture on per-slot differences of exceedance
    shares, so clusters of slow requests within a slot do not cause false alarms; its sample
    size is deflated by the variance inflation each arm's own autocorrelation of exceedance
    shares implies (as in :class:`~backout.judges.latency.LatencyJudge`), so a latency
    level that wanders per arm, moving whole seconds above a threshold together, does not
    either; and it is restarted along the window (:class:`~backout.judges.base.Restarts`).
    The thresholds are the baseline's quantiles over its history when the gate has one
    (then no warm-up is lost), else over the window's first ``warmup_batches``.
    """

    name = "tail_latency"

    def __init__(self, config: TailLatencyConfig | None = None) -> None:
        super().__init__(config or TailLatencyConfig())

    def start(self) -> _TailState:
        k = len(self.config.quantiles)
        st = _TailState(
            t=[np.zeros(4) for _ in range(k)],
            snaps=[[np.zeros(4)] for _ in range(k)],
            dep=[
                Dependence.new(self.config.refresh_batches, self.config.restarts.every)
                for _ in range(k)
            ],
        )
        if self.config.thresholds_s:
            st.buckets = [latency_bucket(x) for x in self.config.thresholds_s]
        return st

    def calibrate(self, state: _TailState, history: Series) -> None:
        total = history.hist.sum(axis=0)
        if not state.buckets and len(history) >= self.config.warmup_batches and total.sum():
            warm = {i: int(c) for i, c in enumerate(total) if c}
            state.buckets = [
                latency_bucket(latency_quantile(warm, q)) for q in self.config.quantiles
            ]
        if not state.buckets:
            return
        n = history.hist.sum(axis=1).astype(np.float64)
        for b, dep in zip(state.buckets, state.dep, strict=True):
            x = history.hist[:, b + 1 :].sum(axis=1).astype(np.float64)
            dep.set_history(*arm_means(x, n))

    def update(self, state: _TailState, candidate: Series, baseline: Series) -> None:
        state.counts.add(candidate, baseline)
        lo = 0
        if not state.buckets:
            # Thresholds come from the baseline's warm-up only, and those slots are not
            # tested: a threshold chosen from the data it then judges would bias the test.
            lo = min(len(baseline), max(self.config.warmup_batches - state.seen, 0))
            state.warm += baseline.hist[:lo].sum(axis=0)
            if state.seen + lo >= self.config.warmup_batches and state.warm.sum() > 0:
                warm = {i: int(c) for i, c in enumerate(state.warm) if c}
                state.buckets = [
                    latency_bucket(latency_quantile(warm, q)) for q in self.config.quantiles
                ]
        state.seen += len(candidate)
        if not state.buckets or lo >= len(candidate):
            return
        hc, hb = candidate.hist[lo:], baseline.hist[lo:]
        state.hist_c += hc.sum(axis=0)
        state.hist_b += hb.sum(axis=0)
        nc, nb = hc.sum(axis=1).astype(np.float64), hb.sum(axis=1).astype(np.float64)
        w = batch_weights(nc, nb)
        r = self.config.restarts
        cuts = r.cuts(state.seen - len(hc), len(hc))
        for i, b in enumerate(state.buckets):
            xc = hc[:, b + 1 :].sum(axis=1).astype(np.float64)
            xb = hb[:, b + 1 :].sum(axis=1).astype(np.float64)
            inc = t_sums(mean_difference(xc, nc, xb, nb), w)
            for c0, c1 in itertools.pairwise(cuts):
                at = state.seen - len(hc) + c0
                if at and r.is_start(at) and len(state.snaps[i]) == at // max(r.every, 1):
                    state.snaps[i].append(state.t[i].copy())
                state.t[i] += inc[c0:c1].sum(axis=0)
            state.dep[i].add(*arm_means(xc, nc), *arm_means(xb, nb))

    def decide(self, state: _TailState, alpha: float) -> Judgement:
        cfg = self.config
        a_each = alpha / len(cfg.quantiles)  # bounds per quantile, Bonferroni
        worst: tuple[float, int, float, float, float] | None = None
        passed = bool(state.buckets)
        up: list[float] = []
        # Every quantile's starts at once (one call per decision, not one per quantile).
        kappas = np.array([d.kappa for d in state.dep])
        totals = np.stack(state.t)  # (quantiles, 4)
        pn, pa, ps, pq = deflated(totals[:, None, :] - np.array(state.snaps), kappas[:, None])
        per_q = t_mixture_log_evalue(pn, pa, ps, pq, cfg.fail_scale, cfg.fail_mean)
        # Counting only the starts and quantiles that moved up keeps the average below the
        # full (two-sided) average, so the fail event stays within Ville's bound.
        per_q = np.where(ps > 0, per_q, -np.inf)
        deflated_totals = np.stack(deflated(totals, kappas), axis=1)
        for i, q in enumerate(cfg.quantiles):
            n, a, s, qq = (float(v) for v in deflated_totals[i])
            est, lo, hi = t_mixture_interval(n, a, s, qq, cfg.effect_scale, a_each)
            log_e = cfg.restarts.combine(per_q[i])
            up.append(log_e)
            passed &= hi <= cfg.tolerance * (1 - q)
            # Which quantile the summary shows: the strongest evidence of a rise, else the
            # one nearest to rising (its standardised effect; ranking only).
            score = log_e if s > 0 else s / math.sqrt(max(qq * a - s * s, 1e-300))
            if worst is None or score > worst[0]:
                worst = (score, i, est, lo, hi)
        log_avg = float(log_sum_exp(np.array(up)) - math.log(len(up)))
        failed = log_avg >= math.log(1 / alpha)
        verdict = finish(state.counts, cfg.common, failed=failed, passed=passed)
        if worst is None or not state.buckets:
            summary = evidence.tail_line(
                quantile=None, change_q=math.nan, threshold_ms=math.nan, share_c=math.nan,
                share_b=math.nan, lower=-math.inf, upper=math.inf, alpha=alpha,
                n_c=state.counts.n_c, n_b=state.counts.n_b, verdict=verdict,
            )  # fmt: skip
            return Judgement(
                self.name, verdict, "tail_exceedance_change", math.nan, -math.inf, math.inf,
                cfg.tolerance, 1.0, 1 / alpha, alpha, int(state.counts.n_c),
                int(state.counts.n_b), state.counts.batches, summary,
            )  # fmt: skip
        _, i, est, lo, hi = worst
        q, b = cfg.quantiles[i], state.buckets[i]
        log_e = max(log_avg, -700.0)
        change = hist_quantile(state.hist_c, q) / hist_quantile(state.hist_b, q) - 1
        share_b = state.hist_b[b + 1 :].sum() / max(state.hist_b.sum(), 1)
        name = f"p{q * 100:g}"
        summary = evidence.tail_line(
            quantile=q, change_q=change, threshold_ms=bucket_mid(b) * 1000,
            share_c=share_b + est, share_b=share_b, lower=lo, upper=hi, alpha=a_each,
            n_c=state.counts.n_c, n_b=state.counts.n_b, verdict=verdict,
        )  # fmt: skip
        return Judgement(
            self.name, verdict, f"{name}_exceedance_change", est, lo, hi,
            cfg.tolerance * (1 - q), math.exp(min(log_e, 700)), 1 / alpha, alpha,
            int(state.counts.n_c), int(state.counts.n_b), state.counts.batches, summary,
            (("p_change", change), ("threshold_s", bucket_mid(b))),
        )  # fmt: skip
