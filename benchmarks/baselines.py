"""Baseline judges, for comparison only: how today's tools decide.

A Kayenta-style judge runs a fixed-window Mann-Whitney test per metric once it has enough
points; a Flagger-style judge counts threshold breaches per interval. The detection
benchmark runs them next to the sequential judges of :mod:`backout.judges`; nothing in the
controller uses them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from backout.errors import ValidationError
from backout.judges.base import fmt_int
from backout.judges.series import Series, check_paired
from backout.judges.stats import F64
from backout.judges.verdict import Judgement, Verdict
from backout.telemetry.batches import Batch

# --- baseline judges for comparison ------------------------------------------------------


def _metric(series: Series, metric: str) -> tuple[F64, F64]:
    """Per-batch numerator and denominator of ``metric`` ("error_rate" or "latency")."""
    if metric == "error_rate":
        return series.errors, series.requests
    if metric == "latency":
        return series.log_sum, series.requests
    raise ValidationError(f"Unknown metric {metric!r}; choose 'error_rate' or 'latency'.")


def kayenta_first_fail(
    values_c: F64, values_b: F64, *, interval: int, min_points: int, alpha: float
) -> NDArray[np.int64]:
    """Batch index (per row) at which a Kayenta-style judge first fails, -1 if never.

    Every ``interval`` batches it runs a one-sided Mann-Whitney U test of all per-batch values
    so far (candidate greater), once both arms have ``min_points`` values, and fails when
    p < alpha: a fixed-horizon test looked at again and again, as Kayenta does.
    """
    from scipy.stats import mannwhitneyu

    vc, vb = np.atleast_2d(values_c), np.atleast_2d(values_b)
    out = np.full(vc.shape[0], -1, dtype=np.int64)
    for end in range(interval, vc.shape[1] + 1, interval):
        if end < min_points:
            continue
        p = mannwhitneyu(vc[:, :end], vb[:, :end], alternative="greater", axis=-1).pvalue
        out = np.where((out < 0) & (p < alpha), end - 1, out)
    return out


def flagger_first_fail(
    x_c: F64, n_c: F64, x_b: F64, n_b: F64, *, interval: int, max_ratio: float, threshold: int,
    log_scale: bool = False,
) -> NDArray[np.int64]:  # fmt: skip
    """Batch index (per row) at which a Flagger-style judge first fails, -1 if never.

    Every ``interval`` batches it compares the candidate's metric over that interval with
    ``max_ratio`` times the baseline's over the same interval, and fails after ``threshold``
    consecutive breaches. ``log_scale``: x are sums of log-latency, compared as geometric
    means.
    """
    arrs = [np.atleast_2d(a) for a in (x_c, n_c, x_b, n_b)]
    r, t = arrs[0].shape
    m = t // interval
    sums = [a[:, : m * interval].reshape(r, m, interval).sum(axis=2) for a in arrs]
    with np.errstate(divide="ignore", invalid="ignore"):
        vc, vb = sums[0] / sums[1], sums[2] / sums[3]
        breach = vc - vb > math.log(max_ratio) if log_scale else vc > max_ratio * vb
    run = np.zeros(r, dtype=np.int64)
    out = np.full(r, -1, dtype=np.int64)
    for i in range(m):
        run = np.where(breach[:, i], run + 1, 0)
        out = np.where((out < 0) & (run >= threshold), (i + 1) * interval - 1, out)
    return out


@dataclass(frozen=True, slots=True)
class KayentaConfig:
    """Kayenta-style judge settings (for comparison benchmarks, not for production gates)."""

    metric: str = "error_rate"
    interval_batches: int = 60
    min_points: int = 50
    alpha: float = 0.05


class KayentaJudge:
    """A fixed-window Mann-Whitney judge in the manner of Spinnaker's Kayenta."""

    name = "kayenta"

    def __init__(self, config: KayentaConfig | None = None) -> None:
        self.config = config or KayentaConfig()

    def evaluate(self, candidate: Sequence[Batch], baseline: Sequence[Batch]) -> Judgement:
        """Fail if any analysis so far found the candidate's per-batch metric higher."""
        check_paired(candidate, baseline)
        cfg = self.config
        cs, bs = Series.from_batches(candidate), Series.from_batches(baseline)
        (xc, nc), (xb, nb) = _metric(cs, cfg.metric), _metric(bs, cfg.metric)
        both = (nc > 0) & (nb > 0)  # Kayenta compares time-aligned data points
        vc, vb = xc[both] / nc[both], xb[both] / nb[both]
        hit = int(
            kayenta_first_fail(
                vc, vb, interval=cfg.interval_batches, min_points=cfg.min_points, alpha=cfg.alpha
            )[0]
        ) if vc.size else -1  # fmt: skip
        verdict = Verdict.FAIL if hit >= 0 else Verdict.CONTINUE
        est = float(np.mean(vc) - np.mean(vb)) if vc.size else math.nan
        summary = (
            f"kayenta {cfg.metric}: mean per-batch difference {est:+.4g} over {vc.size} "
            f"points after {fmt_int(cs.requests.sum())} requests: {verdict}"
        )
        return Judgement(
            self.name, verdict, cfg.metric, est, math.nan, math.nan, 0.0, math.nan, math.nan,
            cfg.alpha, int(cs.requests.sum()), int(bs.requests.sum()), len(cs), summary,
        )  # fmt: skip


@dataclass(frozen=True, slots=True)
class FlaggerConfig:
    """Flagger-style judge settings (for comparison benchmarks, not for production gates)."""

    metric: str = "error_rate"
    interval_batches: int = 60
    max_ratio: float = 1.5
    threshold: int = 3


class FlaggerJudge:
    """A threshold judge in the manner of Flagger: per-interval checks, rollback after
    ``threshold`` consecutive breaches. The limit is relative to the same-time baseline,
    which is kinder to it than Flagger's usual absolute limits."""

    name = "flagger"

    def __init__(self, config: FlaggerConfig | None = None) -> None:
        self.config = config or FlaggerConfig()

    def evaluate(self, candidate: Sequence[Batch], baseline: Sequence[Batch]) -> Judgement:
        """Fail once ``threshold`` consecutive intervals breached the limit."""
        check_paired(candidate, baseline)
        cfg = self.config
        cs, bs = Series.from_batches(candidate), Series.from_batches(baseline)
        (xc, nc), (xb, nb) = _metric(cs, cfg.metric), _metric(bs, cfg.metric)
        hit = int(
            flagger_first_fail(
                xc, nc, xb, nb, interval=cfg.interval_batches, max_ratio=cfg.max_ratio,
                threshold=cfg.threshold, log_scale=cfg.metric == "latency",
            )[0]
        )  # fmt: skip
        verdict = Verdict.FAIL if hit >= 0 else Verdict.CONTINUE
        summary = (
            f"flagger {cfg.metric}: {cfg.threshold} consecutive breaches of x{cfg.max_ratio:g} "
            f"{'reached' if hit >= 0 else 'not reached'} after "
            f"{fmt_int(cs.requests.sum())} requests: {verdict}"
        )
        return Judgement(
            self.name, verdict, cfg.metric, math.nan, math.nan, math.nan, cfg.max_ratio,
            math.nan, math.nan, math.nan, int(cs.requests.sum()), int(bs.requests.sum()),
            len(cs), summary,
        )  # fmt: skip
