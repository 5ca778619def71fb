"""The integrity judge: does the candidate return NaN or infinity, break contracts or lose requests?

For the gate and the policy layer. Not a statistical test: one breach fails at once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from backout.judges import evidence
from backout.judges.base import Common, Counts, Judge, finish
from backout.judges.series import Series
from backout.judges.verdict import Judgement


@dataclass(frozen=True, slots=True)
class IntegrityConfig:
    """Integrity judge: any NaN/infinity, contract violation or unreconciled request fails."""

    common: Common = Common()  # noqa: RUF009 (frozen, so one shared default is safe)


@dataclass(slots=True)
class _IntegrityState:
    counts: Counts = field(default_factory=Counts)
    nonfinite: float = 0.0
    contract: float = 0.0
    unreconciled: float = 0.0


class IntegrityJudge(Judge[IntegrityConfig, _IntegrityState]):
    """Does the candidate return NaN or infinity, break its contracts, or lose requests?

    Not a statistical test: one breach is a fact, not noise, so it fails at once and uses
    none of the gate's alpha.
    """

    name = "integrity"
    checks = 0

    def __init__(self, config: IntegrityConfig | None = None) -> None:
        super().__init__(config or IntegrityConfig())

    def start(self) -> _IntegrityState:
        return _IntegrityState()

    def update(self, state: _IntegrityState, candidate: Series, baseline: Series) -> None:
        state.counts.add(candidate, baseline)
        state.nonfinite += float(candidate.nonfinite.sum())
        state.contract += float(candidate.contract.sum())
        lost = candidate.requests - candidate.predictions - candidate.errors
        state.unreconciled += float(np.abs(lost).sum())

    def decide(self, state: _IntegrityState, alpha: float) -> Judgement:
        bad = state.nonfinite + state.contract + state.unreconciled
        verdict = finish(state.counts, self.config.common, failed=bad > 0, passed=True)
        summary = evidence.integrity_line(
            nonfinite=state.nonfinite,
            contract=state.contract,
            unreconciled=state.unreconciled,
            n_c=state.counts.n_c,
            verdict=verdict,
        )
        return Judgement(
            self.name, verdict, "integrity_breaches", bad, bad, bad, 0.0,
            math.inf if bad else 1.0, math.inf, 0.0, int(state.counts.n_c),
            int(state.counts.n_b), state.counts.batches, summary,
            (("nonfinite", state.nonfinite), ("contract", state.contract),
             ("unreconciled", state.unreconciled)),
        )  # fmt: skip
