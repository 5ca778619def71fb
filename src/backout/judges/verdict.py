"""What a judge says: the verdict and the evidence behind it.

For everyone who reads a judge's or a gate's decision: the controller stores a
:class:`Judgement` with every gate event, the CLI, reports and notifications show its summary.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from backout.judges.evidence import name_arms


class Verdict(StrEnum):
    """What a judge or gate says about the candidate now."""

    PASS = "pass"  # every confidence bound is inside its tolerance: safe to promote
    FAIL = "fail"  # an e-value crossed its threshold (or an integrity/budget breach): roll back
    CONTINUE = "continue"  # not enough evidence either way yet: keep baking
    INCONCLUSIVE = "inconclusive"  # the horizon was reached without pass or fail


@dataclass(frozen=True, slots=True)
class Judgement:
    """One judge's verdict and the evidence behind it, ready to store, show or send."""

    judge: str
    verdict: Verdict
    metric: str
    estimate: float  # point estimate of the effect (ratio, relative change, difference)
    lower: float  # lower confidence-sequence bound of the effect
    upper: float  # upper confidence-sequence bound of the effect
    tolerance: float  # the effect at or below which the judge passes
    e_value: float  # evidence against "no regression" (inf for integrity breaches)
    threshold: float  # the e-value that fails (checks / alpha)
    alpha: float  # this judge's share of the gate's alpha
    samples: int  # candidate requests seen
    baseline_samples: int  # baseline requests seen
    batches: int
    summary: str
    effects: tuple[tuple[str, float], ...] = ()  # extra effect sizes (PSI, Wasserstein …)

    def named(self, candidate: str, baseline: str) -> Judgement:
        """This judgement with the releases' names in its summary (the judges, which never
        know them, write "the candidate" and "the baseline")."""
        return dataclasses.replace(self, summary=name_arms(self.summary, candidate, baseline))

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (infinities and NaN become strings)."""
        out: dict[str, Any] = {}
        for name in self.__slots__:
            v = getattr(self, name)
            if isinstance(v, float) and not math.isfinite(v):
                v = str(v)
            out[name] = v.value if isinstance(v, Verdict) else v
        out["effects"] = dict(self.effects)
        return out
