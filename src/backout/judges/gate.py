"""The gate: several judges over one bake window, with a family-wise false-fail rate.

For the controller, which evaluates a gate on every batch of a bake window, and for the
policy layer, which builds one from a policy file (or takes :func:`default_gate`). The
gate splits its alpha between its judges (Bonferroni) and combines their verdicts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from backout.errors import ValidationError
from backout.judges.base import AnyJudge
from backout.judges.budget import LatencyBudgetConfig, LatencyBudgetJudge
from backout.judges.drift import DriftConfig, DriftJudge
from backout.judges.error_rate import ErrorRateJudge
from backout.judges.integrity import IntegrityJudge
from backout.judges.latency import LatencyJudge
from backout.judges.series import Series, check_paired
from backout.judges.tail import TailLatencyJudge
from backout.judges.verdict import Judgement, Verdict
from backout.telemetry.batches import Batch

MIN_HISTORY = 600  # slots of baseline history the gate needs before it uses any


@dataclass(frozen=True, slots=True)
class GateResult:
    """A gate's verdict with every judge's judgement."""

    verdict: Verdict
    judgements: tuple[Judgement, ...]
    alpha: float

    @property
    def summary(self) -> str:
        deciding = [j for j in self.judgements if j.verdict == self.verdict] or list(
            self.judgements
        )
        return f"gate {self.verdict}: " + "; ".join(j.summary for j in deciding)

    def named(self, candidate: str, baseline: str) -> GateResult:
        """This result with the releases' names in every judgement's summary."""
        named = tuple(j.named(candidate, baseline) for j in self.judgements)
        return GateResult(self.verdict, named, self.alpha)

    def to_dict(self) -> dict[str, Any]:
        return {
            "verdict": self.verdict.value,
            "alpha": self.alpha,
            "summary": self.summary,
            "judgements": [j.to_dict() for j in self.judgements],
        }


class Gate:
    """K checks over one bake window, family-wise false-fail rate ``alpha`` (Bonferroni).

    Each judge gets ``alpha * checks / K``, so a check fails when its e-value crosses
    K / alpha. The gate fails when any judge fails, passes when every judge passes, is
    inconclusive when a judge reached its horizon, and continues otherwise.

    A gate keeps additive state: called again with the same batches plus new ones (the
    controller's pattern, one call per batch) it only reads the new batches.
    """

    def __init__(self, judges: Sequence[AnyJudge], alpha: float = 0.05) -> None:
        if not judges:
            raise ValidationError("A gate needs at least one judge.")
        self.judges = list(judges)
        self.alpha = alpha
        self.k = max(sum(j.checks for j in self.judges), 1)
        self._history: Series | None = None
        self._history_raw: Sequence[Batch] = ()
        self.reset()

    def reset(self) -> None:
        """Forget all batches seen (a new bake window)."""
        self._states: list[Any] = [j.start() for j in self.judges]
        self._n = 0
        self._last: tuple[tuple[float, int], tuple[float, int]] | None = None

    def alpha_of(self, judge: AnyJudge) -> float:
        """The share of the gate's alpha that ``judge`` spends."""
        return self.alpha * judge.checks / self.k if judge.checks else self.alpha

    def evaluate(
        self,
        candidate: Sequence[Batch],
        baseline: Sequence[Batch],
        *,
        history: Sequence[Batch] = (),
    ) -> GateResult:
        """Judge all batches of the window so far (same-time pairs, oldest first).

        ``history`` is the baseline's batches before the window, one per slot, oldest
        first (``pair_by_time`` aligns raw batches): the latency judges measure the
        baseline's level wander on it, so they are valid from the window's first batch.
        The gate keeps the last history it was given for the window's later resets; one
        shorter than ``MIN_HISTORY`` slots (ten minutes) is not used.
        """
        check_paired(candidate, baseline)
        if history and history is not self._history_raw:
            self._history_raw = history
            # A short history (a baseline that just rolled out, its load still changing)
            # says little about wander over minutes and much about its own ramp: unused.
            if len(history) >= MIN_HISTORY:
                self._history = Series.from_batches(history)
        n = len(candidate)
        seen_same = (
            self._last is not None
            and n >= self._n
            and (candidate[self._n - 1].start, candidate[self._n - 1].requests) == self._last[0]
            and (baseline[self._n - 1].start, baseline[self._n - 1].requests) == self._last[1]
        )
        if not seen_same:
            self.reset()
            if self._history is not None:
                for judge, state in zip(self.judges, self._states, strict=True):
                    judge.calibrate(state, self._history)
        if n > self._n:
            cs = Series.from_batches(candidate[self._n :])
            bs = Series.from_batches(baseline[self._n :])
            for judge, state in zip(self.judges, self._states, strict=True):
                judge.update(state, cs, bs)
            self._n = n
            c, b = candidate[-1], baseline[-1]
            self._last = ((c.start, c.requests), (b.start, b.requests))
        judgements = tuple(
            j.decide(s, self.alpha_of(j)) for j, s in zip(self.judges, self._states, strict=True)
        )
        return GateResult(combine([j.verdict for j in judgements]), judgements, self.alpha)


def combine(verdicts: Sequence[Verdict]) -> Verdict:
    """The gate's verdict from its judges' verdicts."""
    if Verdict.FAIL in verdicts:
        return Verdict.FAIL
    if all(v == Verdict.PASS for v in verdicts):
        return Verdict.PASS
    if Verdict.INCONCLUSIVE in verdicts:
        return Verdict.INCONCLUSIVE
    return Verdict.CONTINUE


def default_gate(
    alpha: float = 0.05, *, budget_s: float | None = None, classes: tuple[str, ...] = ()
) -> Gate:
    """The gate a policy gets unless it says otherwise: errors, mean and tail latency, output
    drift, integrity, and a p99 budget when ``budget_s`` is given."""
    judges: list[AnyJudge] = [
        ErrorRateJudge(),
        LatencyJudge(),
        TailLatencyJudge(),
        DriftJudge(DriftConfig(classes=classes)),
        IntegrityJudge(),
    ]
    if budget_s is not None:
        judges.append(LatencyBudgetJudge(LatencyBudgetConfig(limit_s=budget_s)))
    return Gate(judges, alpha)
