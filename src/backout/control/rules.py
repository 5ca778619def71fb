"""The rules a policy is made of: the judges of its gates, and its triggers.

For the policy's author and for the controller: each judge spec turns a few YAML fields
into a configured judge from :mod:`backout.judges`; each trigger spec is a condition that
starts a rollback on its own. :class:`Section` is the base of every part of a policy.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from backout.configfile import Duration, Fraction, Quantile, Url, rule_error
from backout.judges.base import AnyJudge, Common
from backout.judges.budget import LatencyBudgetConfig, LatencyBudgetJudge
from backout.judges.drift import DriftConfig, DriftJudge
from backout.judges.error_rate import ErrorRateConfig, ErrorRateJudge
from backout.judges.gate import Gate
from backout.judges.integrity import IntegrityConfig, IntegrityJudge
from backout.judges.latency import LatencyConfig, LatencyJudge
from backout.judges.tail import TailLatencyConfig, TailLatencyJudge


class Section(BaseModel):
    """A part of a policy: unknown keys are errors; an empty section takes its defaults."""

    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _empty_sections(cls, data: Any) -> Any:
        """A section left empty (``rollout:`` with nothing under it) takes its defaults."""
        if isinstance(data, dict):
            return {
                k: v
                for k, v in data.items()
                if not (v is None and k in cls.model_fields and is_section(cls, k))
            }
        return data


def is_section(model: type[BaseModel], name: str) -> bool:
    tp = model.model_fields[name].annotation
    return isinstance(tp, type) and issubclass(tp, BaseModel)


# --- judges and gates --------------------------------------------------------------------


class _JudgeSpec(Section):
    min_requests: int | None = Field(default=None, ge=0)  # None: the gate's (the step's)

    def _common(self, alpha: float, min_requests: int, horizon_batches: int) -> Common:
        n = self.min_requests if self.min_requests is not None else min_requests
        return Common(alpha=alpha, min_requests=n, horizon_batches=horizon_batches)


class ErrorRateJudgeSpec(_JudgeSpec):
    """Sequential test of the error rate against the baseline's."""

    judge: Literal["error_rate"] = "error_rate"
    tolerance: float = Field(default=ErrorRateConfig().tolerance, ge=0)

    def build(self, common: Common) -> AnyJudge:
        return ErrorRateJudge(ErrorRateConfig(common=common, tolerance=self.tolerance))


class LatencyJudgeSpec(_JudgeSpec):
    """Sequential test of the mean log-latency against the baseline's."""

    judge: Literal["latency"] = "latency"
    tolerance: float = Field(default=LatencyConfig().tolerance, ge=0)

    def build(self, common: Common) -> AnyJudge:
        return LatencyJudge(LatencyConfig(common=common, tolerance=self.tolerance))


class TailLatencyJudgeSpec(_JudgeSpec):
    """Sequential test of the share of requests above the baseline's quantiles."""

    judge: Literal["tail_latency"] = "tail_latency"
    quantiles: list[Quantile] = Field(
        default_factory=lambda: list(TailLatencyConfig().quantiles), min_length=1
    )
    tolerance: float = Field(default=TailLatencyConfig().tolerance, ge=0)

    @field_validator("quantiles")
    @classmethod
    def _sorted(cls, qs: list[float]) -> list[float]:
        if len(set(qs)) != len(qs):
            raise ValueError("quantiles must not repeat")
        return sorted(qs)

    def build(self, common: Common) -> AnyJudge:
        cfg = TailLatencyConfig(
            common=common, quantiles=tuple(self.quantiles), tolerance=self.tolerance
        )
        return TailLatencyJudge(cfg)


class LatencyBudgetJudgeSpec(_JudgeSpec):
    """An absolute budget: the quantile's latency must stay at or below ``max_ms``."""

    judge: Literal["latency_budget"] = "latency_budget"
    quantile: Quantile = LatencyBudgetConfig().quantile
    max_ms: float = Field(default=LatencyBudgetConfig().limit_s * 1000, gt=0)

    def build(self, common: Common) -> AnyJudge:
        cfg = LatencyBudgetConfig(limit_s=self.max_ms / 1000, quantile=self.quantile, common=common)
        return LatencyBudgetJudge(cfg)


class DriftJudgeSpec(_JudgeSpec):
    """Sequential test of each output class's share against the baseline's."""

    judge: Literal["drift"] = "drift"
    tolerance: float = Field(default=DriftConfig().tolerance, ge=0)
    classes: list[str] = Field(default_factory=list)  # empty: the baseline's top classes

    def build(self, common: Common) -> AnyJudge:
        cfg = DriftConfig(common=common, classes=tuple(self.classes), tolerance=self.tolerance)
        return DriftJudge(cfg)


class IntegrityJudgeSpec(_JudgeSpec):
    """Any NaN or infinity, contract violation or lost request fails at once."""

    judge: Literal["integrity"] = "integrity"

    def build(self, common: Common) -> AnyJudge:
        return IntegrityJudge(IntegrityConfig(common=common))


JudgeSpec = Annotated[
    ErrorRateJudgeSpec
    | LatencyJudgeSpec
    | TailLatencyJudgeSpec
    | LatencyBudgetJudgeSpec
    | DriftJudgeSpec
    | IntegrityJudgeSpec,
    Field(discriminator="judge"),
]


def _default_judges() -> list[JudgeSpec]:
    return [ErrorRateJudgeSpec(), LatencyJudgeSpec(), TailLatencyJudgeSpec(), IntegrityJudgeSpec()]


class GateSpec(Section):
    """Which judges a gate runs, its family-wise false-fail rate, and its horizon."""

    alpha: float = Field(default=0.05, gt=0, le=0.5)
    judges: list[JudgeSpec] = Field(default_factory=_default_judges, min_length=1)
    horizon: Duration | None = None  # inconclusive after this long; None: never

    def build(self, *, min_requests: int = Common().min_requests) -> Gate:
        """The judges' gate; ``min_requests`` applies to judges that do not set their own.
        The horizon maps to batches (one batch is about one second)."""
        batches = math.ceil(self.horizon) if self.horizon else 0
        return Gate(
            [s.build(s._common(self.alpha, min_requests, batches)) for s in self.judges],
            self.alpha,
        )


# --- triggers ----------------------------------------------------------------------------


class _TriggerBase(Section):
    name: str = ""  # empty: the kind
    window: Duration = Field(default=60.0, gt=0)  # how far back the trigger looks
    min_requests: int = Field(default=100, ge=0)  # fewer requests in the window: no verdict
    mode: Literal["emergency", "staged"] | None = None  # None: the policy's rollback mode

    @model_validator(mode="after")
    def _named(self) -> _TriggerBase:
        if not self.name:
            self.name = str(getattr(self, "kind", ""))
        return self


class ErrorRateTrigger(_TriggerBase):
    """Fires when the error rate passes ``max_rate`` or (``use_judge``) the sequential test
    against the baseline fails."""

    kind: Literal["error_rate"] = "error_rate"
    max_rate: Fraction | None = None
    use_judge: bool = False

    @model_validator(mode="after")
    def _something(self) -> ErrorRateTrigger:
        if self.max_rate is None and not self.use_judge:
            raise rule_error("max_rate", "an error_rate trigger needs max_rate or use_judge: true")
        return self


class LatencyTrigger(_TriggerBase):
    """Fires when the latency at ``quantile`` passes ``max_ms``."""

    kind: Literal["latency"] = "latency"
    quantile: Quantile = 0.99
    max_ms: float = Field(gt=0)


class IntegrityTrigger(_TriggerBase):
    """Fires on any NaN or infinity in the outputs or any contract violation."""

    kind: Literal["integrity"] = "integrity"


class DriftTrigger(_TriggerBase):
    """Fires when the population stability index of the outputs passes ``max_psi``."""

    kind: Literal["drift"] = "drift"
    max_psi: float = Field(default=0.2, gt=0)


class PrometheusTrigger(_TriggerBase):
    """Fires when ``query`` (read from ``url``) compared with ``threshold`` by ``op`` holds."""

    kind: Literal["prometheus"] = "prometheus"
    url: Url
    query: str = Field(min_length=1)
    op: Literal[">", "<", ">=", "<="] = ">"
    threshold: float


Trigger = Annotated[
    ErrorRateTrigger | LatencyTrigger | IntegrityTrigger | DriftTrigger | PrometheusTrigger,
    Field(discriminator="kind"),
]
