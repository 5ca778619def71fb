"""The output-drift judge: has the candidate's output distribution moved from the baseline's?

For the gate and the policy layer, for classifiers and for models whose scores the gateway
counts in bins (``score:<bin>``). Each class is tested like errors, with the split-count
test of :mod:`backout.judges.error_rate`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from backout.judges import evidence
from backout.judges.base import Common, Counts, Judge, Restarts, finish
from backout.judges.error_rate import SplitState, split_add, split_decide
from backout.judges.series import Series
from backout.judges.stats import (
    candidate_share,
    log_sum_exp,
    normalised_wasserstein,
    prior_log_weights,
    psi,
)
from backout.judges.verdict import Judgement


@dataclass(frozen=True, slots=True)
class DriftConfig:
    """Output drift judge for classifiers (and score bins ``score:<bin>``): fail when any
    class's share of the candidate's answers differs from the baseline's; pass when every
    class's share ratio is within [1/(1 + tolerance), 1 + tolerance]."""

    common: Common = Common()  # noqa: RUF009 (frozen, so one shared default is safe)
    classes: tuple[str, ...] = ()  # labels to test; empty: the baseline's top ones after warm-up
    max_classes: int = 10
    warmup_batches: int = 10
    tolerance: float = 0.2
    prior_scale: float = 0.3
    restarts: Restarts = Restarts()  # noqa: RUF009 (frozen)


@dataclass(slots=True)
class _DriftState:
    counts: Counts = field(default_factory=Counts)
    seen: int = 0
    warm: dict[str, float] = field(default_factory=dict)
    labels: list[str] = field(default_factory=list)
    splits: list[SplitState] = field(default_factory=list)
    totals: dict[str, list[float]] = field(default_factory=dict)  # label: [candidate, baseline]


class DriftJudge(Judge[DriftConfig, _DriftState]):
    """Has the candidate's output distribution moved away from the same-time baseline's?

    Each class's answers are split between the arms and tested like errors (Lindon & Malek's
    count test, two-sided); the e-values of the C classes are averaged (an average of
    e-processes is one), so the judge is a single check at its alpha.
    """

    name = "output_drift"

    def __init__(self, config: DriftConfig | None = None) -> None:
        super().__init__(config or DriftConfig())
        self._w = prior_log_weights(self.config.prior_scale, "two-sided")

    def start(self) -> _DriftState:
        st = _DriftState()
        if self.config.classes:
            st.labels = list(self.config.classes)
            st.splits = [SplitState() for _ in st.labels]
        return st

    def update(self, state: _DriftState, candidate: Series, baseline: Series) -> None:
        state.counts.add(candidate, baseline)
        lo = 0
        if not state.labels:
            # The labels under test are chosen from the baseline's warm-up, which is then
            # not tested, so the choice cannot favour a false alarm.
            lo = min(len(baseline), max(self.config.warmup_batches - state.seen, 0))
            for label, counts in baseline.outputs.items():
                state.warm[label] = state.warm.get(label, 0.0) + float(counts[:lo].sum())
            if state.seen + lo >= self.config.warmup_batches and any(state.warm.values()):
                seen = sorted(
                    (k for k in state.warm if state.warm[k] > 0), key=lambda k: state.warm[k]
                )
                seen.reverse()
                # With every label tested, the shares of C - 1 labels fix the last one; the
                # most frequent (smallest relative change) adds a mixture cost, not evidence.
                state.labels = (
                    seen[1:]
                    if 2 <= len(seen) <= self.config.max_classes
                    else seen[: self.config.max_classes]
                )
                state.splits = [SplitState() for _ in state.labels]
        state.seen += len(candidate)
        if not state.labels or lo >= len(candidate):
            return
        zeros = np.zeros(len(candidate) - lo)
        for arm, series in ((0, candidate), (1, baseline)):
            for label, counts in series.outputs.items():
                state.totals.setdefault(label, [0.0, 0.0])[arm] += float(counts[lo:].sum())
        share = candidate_share(candidate.predictions[lo:], baseline.predictions[lo:])
        cfg_r = self.config.restarts
        for label, sp in zip(state.labels, state.splits, strict=True):
            kc = candidate.outputs.get(label, zeros)[lo:] if label in candidate.outputs else zeros
            kb = baseline.outputs.get(label, zeros)[lo:] if label in baseline.outputs else zeros
            split_add(sp, kc, kb, share, state.seen - len(candidate) + lo, cfg_r)
            sp.k_c += float(kc.sum())
            sp.k_b += float(kb.sum())
            sp.counts.n_c += float(candidate.predictions[lo:].sum())
            sp.counts.n_b += float(baseline.predictions[lo:].sum())

    def decide(self, state: _DriftState, alpha: float) -> Judgement:
        cfg = self.config
        if not state.labels:
            verdict = finish(state.counts, cfg.common, failed=False, passed=False)
            return Judgement(
                self.name, verdict, "class_share_ratio", math.nan, 0.0, math.inf, cfg.tolerance,
                1.0, 1 / alpha, alpha, int(state.counts.n_c), int(state.counts.n_b),
                state.counts.batches,
                evidence.drift_line(label=None, share_c=math.nan, share_b=math.nan, ratio=math.nan,
                                    lower=0.0, upper=math.inf, alpha=alpha, psi=math.nan,
                                    wasserstein=math.nan, n_c=state.counts.n_c,
                                    n_b=state.counts.n_b, verdict=verdict),
            )  # fmt: skip
        n = len(state.labels)
        a_each = alpha / n  # per-class bounds at alpha / C match the averaged e-value
        rows = [split_decide(sp, a_each, self._w, self._w, cfg.restarts) for sp in state.splits]
        log_es = np.array([r[0] for r in rows])
        log_e = float(log_sum_exp(log_es) - math.log(n))
        failed = log_e >= math.log(1 / alpha)
        passed = all(1 / (1 + cfg.tolerance) <= r[2] and r[3] <= 1 + cfg.tolerance for r in rows)
        verdict = finish(state.counts, cfg.common, failed=failed, passed=passed)
        i = int(np.argmax(log_es))
        _, est, lo, hi = rows[i]
        names = list(state.totals)
        pc = np.array([state.totals[k][0] for k in names])
        pb = np.array([state.totals[k][1] for k in names])
        ordered = bool(names) and all(k.startswith("score:") for k in names)
        if ordered:
            order = np.argsort([float(k.split(":", 1)[1]) for k in names])
            pc, pb = pc[order], pb[order]
        effects = (("psi", psi(pb, pc)), ("wasserstein", normalised_wasserstein(pc, pb, ordered)))
        sp = state.splits[i]
        share_c = sp.k_c / sp.counts.n_c if sp.counts.n_c else math.nan
        share_b = sp.k_b / sp.counts.n_b if sp.counts.n_b else math.nan
        summary = evidence.drift_line(
            label=state.labels[i], share_c=share_c, share_b=share_b, ratio=est, lower=lo,
            upper=hi, alpha=a_each, psi=effects[0][1], wasserstein=effects[1][1],
            n_c=state.counts.n_c, n_b=state.counts.n_b, verdict=verdict,
        )  # fmt: skip
        return Judgement(
            self.name, verdict, f"class_share_ratio:{state.labels[i]}", est, lo, hi,
            1 + cfg.tolerance, math.exp(min(log_e, 700)), 1 / alpha, alpha,
            int(state.counts.n_c), int(state.counts.n_b), state.counts.batches, summary, effects,
        )  # fmt: skip
