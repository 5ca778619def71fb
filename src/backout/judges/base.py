"""What every judge shares: the :class:`Judge` base class, its common settings and state.

For the authors of judges (and for the policy layer, which builds judges from ``Common``
settings): a judge keeps additive state, ``update`` adds batches to it and ``decide``
turns it into a :class:`~backout.judges.verdict.Judgement`; :func:`finish` applies the
shared minimum-sample and horizon rules, and ``fmt_int`` / ``fmt_pct`` format the numbers
of a summary line the same way for every judge. Kayenta- and Flagger-style judges, for
comparison only, are in the benchmarks' ``baselines.py``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import numpy as np

from backout.judges.series import Series, check_paired
from backout.judges.stats import F64, log_sum_exp, restart_log_weights
from backout.judges.verdict import Judgement, Verdict
from backout.telemetry.batches import Batch

C = TypeVar("C")
S = TypeVar("S")


@dataclass(frozen=True, slots=True)
class Common:
    """Settings every judge shares; a policy file sets them per gate."""

    alpha: float = 0.05  # false-fail rate when the judge is the gate's only check
    min_requests: int = 200  # candidate requests before the judge may pass
    horizon_requests: int = 0  # candidate requests after which it is inconclusive (0: never)
    horizon_batches: int = 0  # batches after which it is inconclusive (0: never)


class Judge(Generic[C, S]):
    """Base of the judges: ``evaluate`` = fresh state, ``update`` with every batch, ``decide``.

    ``checks`` is how many e-values the judge tests; a :class:`Gate` gives it that many
    shares of its alpha (Bonferroni).
    """

    name = "judge"
    checks = 1

    def __init__(self, config: C) -> None:
        self.config = config

    def start(self) -> S:
        raise NotImplementedError

    def calibrate(self, state: S, history: Series) -> None:
        """Read the baseline's batches from before the window (oldest first, one per slot).
        Judges that measure the baseline's noise do; the others ignore it."""

    def update(self, state: S, candidate: Series, baseline: Series) -> None:
        raise NotImplementedError

    def decide(self, state: S, alpha: float) -> Judgement:
        raise NotImplementedError

    def evaluate(
        self,
        candidate: Sequence[Batch],
        baseline: Sequence[Batch],
        *,
        alpha: float | None = None,
    ) -> Judgement:
        """Judge the candidate's batches against the same-time baseline batches."""
        check_paired(candidate, baseline)
        state = self.start()
        self.update(state, Series.from_batches(candidate), Series.from_batches(baseline))
        common: Common = getattr(self.config, "common", Common())
        return self.decide(state, common.alpha if alpha is None else alpha)


# A judge of any config and state, as a gate holds them.
AnyJudge = Judge[Any, Any]


@dataclass(slots=True)
class Counts:
    """Additive state shared by the judges: sample counts and the horizon clock."""

    n_c: float = 0.0
    n_b: float = 0.0
    batches: int = 0

    def add(self, cand: Series, base: Series) -> None:
        self.n_c += float(cand.requests.sum())
        self.n_b += float(base.requests.sum())
        self.batches += len(cand)


@dataclass(frozen=True, slots=True)
class Restarts:
    """When a judge starts its e-processes, and how it weighs them.

    A mixture test that has gathered evidence for "no change" is slow to notice a change
    that starts late: the evidence before the change has to be paid back. The judges run
    ``count`` copies of their test, started with the window and every ``every`` batches
    after it, and fail on the weighted average sum_j pi_j E_j(t), E_j = 1 before its start.
    Each E_j is an e-process for the same null (a test supermartingale equal to 1 until
    its start), so their average with weights summing to 1 is one too and Ville's
    inequality bounds its false alarms by alpha over the whole window: the e-detector of
    Shin, Ramdas & Rinaldo (2023, "E-detectors: a nonparametric framework for sequential
    change detection") with a weighted mixture over start times instead of their sum,
    which bounds the probability of any false alarm instead of its rate. Half the weight
    stays on the start with the window (a change at t = 0 pays log 2 in its threshold), the
    other half is shared by the later starts; a change at a later start pays
    log((count - 1) / (1 - first)), and one between starts also pays for the evidence
    since the last start (at most ``every`` batches).
    """

    every: int = 60
    count: int = 10
    first: float = 0.5

    def log_weights(self) -> F64:
        return restart_log_weights(self.count, self.first)

    def cuts(self, done: int, n: int, unit: int = 1) -> list[int]:
        """Positions in a chunk of ``n`` new items (after ``done`` items) where a start time
        falls, starts being every ``every // unit`` items; with 0 and ``n`` as the ends."""
        step = max(self.every // unit, 1)
        out = [0]
        for j in range(self.count):
            at = j * step - done
            if 0 < at < n:
                out.append(at)
        return [*out, n]

    def is_start(self, index: int, unit: int = 1) -> bool:
        step = max(self.every // unit, 1)
        return index % step == 0 and index // step < self.count

    def combine(self, log_e: F64) -> float:
        """log sum_j pi_j E_j over the begun starts (``log_e``, oldest first), the rest
        counting as E = 1."""
        lw = self.log_weights()
        k = len(log_e)
        parts = np.concatenate([np.asarray(log_e, dtype=np.float64) + lw[:k], lw[k:]])
        return float(log_sum_exp(parts))


def finish(
    counts: Counts,
    common: Common,
    *,
    failed: bool,
    passed: bool,
) -> Verdict:
    """A judge's verdict from its tests and the rules every judge shares: a failed test fails
    at once; a pass needs ``common.min_requests`` candidate requests; past a horizon without
    either the judge is inconclusive."""
    if failed:
        return Verdict.FAIL
    if passed and counts.n_c >= common.min_requests:
        return Verdict.PASS
    over_requests = common.horizon_requests and counts.n_c >= common.horizon_requests
    over_batches = common.horizon_batches and counts.batches >= common.horizon_batches
    return Verdict.INCONCLUSIVE if over_requests or over_batches else Verdict.CONTINUE


def fmt_int(n: float) -> str:
    """A count with thousands separators, as the judges' summaries show it."""
    return f"{int(n):,}"


def fmt_pct(x: float) -> str:
    """A relative change as a signed whole percentage (``+12%``), or ``n/a``."""
    return "n/a" if not math.isfinite(x) else f"{x * 100:+.0f}%"
