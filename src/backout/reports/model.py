"""The incident report model: one rollback, from trigger to completion, as pure data.

For the renderers (``markdown``, ``html``, ``plots``) and for callers of
:func:`~backout.reports.builder.build_report` who want the numbers: an
:class:`IncidentReport` holds everything about one incident with the numbers already
worked out, so that rendering only formats it. These classes import nothing from the
store: the builder fills them, the renderers read them.

Times are unix seconds throughout. The trigger (the start of the rollback) is the report's
zero: the timeline and the plots count from it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = [
    "Decision",
    "Finding",
    "IncidentReport",
    "JudgeLine",
    "ReleaseSeries",
    "RolloutInfo",
    "TriggerInfo",
]


@dataclass(frozen=True, slots=True)
class JudgeLine:
    """One judge's (or trigger's) verdict, with its evidence in words a person reads."""

    judge: str
    verdict: str  # pass | fail | continue | inconclusive | fired | quiet
    summary: str
    detail: str = ""  # numbers behind the verdict: effect, bounds, e-value, samples


@dataclass(frozen=True, slots=True)
class TriggerInfo:
    """What started the rollback: a gate that failed, triggers that fired, or a person."""

    kind: str  # gate | trigger | manual
    summary: str
    judges: tuple[JudgeLine, ...] = ()


@dataclass(frozen=True, slots=True)
class Decision:
    """One row of the decision timeline: an event, with the traffic it set if any."""

    seq: int
    at: float
    kind: str  # the audit event's kind
    actor: str
    title: str
    detail: str
    verdict: str | None = None
    weights: dict[str, float] | None = None  # percent, after this decision
    judges: tuple[JudgeLine, ...] = ()


@dataclass(frozen=True, slots=True)
class Finding:
    """A compatibility-gate or replay result, read from its event."""

    at: float
    kind: str
    verdict: str
    summary: str
    details: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ReleaseSeries:
    """One release's telemetry across the incident, in bins of ``bin_s`` seconds.

    ``t`` is each bin's start; ``requests`` and ``errors`` count each bin. The rate and the
    quantiles are over the trailing ``smooth_s`` seconds (a one-second batch holds too few
    requests for a rate), None where that window saw no request: a gap in the plot.
    """

    version: str
    t: list[float]
    requests: list[int]
    errors: list[int]
    error_rate: list[float | None]
    p50_ms: list[float | None]
    p99_ms: list[float | None]
    bin_s: float
    smooth_s: float


@dataclass(frozen=True, slots=True)
class RolloutInfo:
    """The rollout that put the bad release in front of traffic."""

    id: int
    candidate: str
    stable: str
    started_at: float
    ended_at: float | None
    outcome: str | None
    steps: tuple[float, ...]  # candidate percent per step
    step: int  # index of the step it reached
    step_started_at: float
    bake_s: float | None
    active_at_trigger: bool  # still running when the rollback started (it was superseded)
    last_gate: str = ""


@dataclass
class IncidentReport:
    """Everything the renderers need about one incident, already worked out."""

    id: int
    model: str
    outcome: str  # rolled-back | aborted | frozen | unfrozen | in progress
    phase: str
    mode: str  # emergency | staged | freeze
    from_version: str  # the release rolled back from (in a freeze: the bad candidate)
    target: str
    actor: str
    reason: str
    started_at: float  # the trigger: when the rollback started
    ended_at: float | None
    recovered_at: float | None  # when the target first held 100% of the traffic
    detect_from: float | None  # when the trouble began, as far as the data tells
    detect_basis: str  # what detect_from is: a rollout step start, the first bad batch …
    first_bad_at: float | None
    trigger: TriggerInfo
    warm_note: str
    escalations: list[str]
    rollout: RolloutInfo | None
    timeline: list[Decision]
    weights: list[tuple[float, dict[str, float]]]  # (at, percent per release), a step function
    series: list[ReleaseSeries]
    compat: list[Finding]
    replay: list[Finding]
    window: tuple[float, float]
    requests_total: int  # every request of the model from detect_from to the end
    requests_affected: int  # requests the bad release answered from detect_from to recovery
    requests_failed: int  # errors of every release from detect_from to the end
    failed_on_bad: int  # of those, errors of the bad release
    baseline_error_rate: float | None  # the target's error rate before the trigger
    policy: dict[str, Any] = field(default_factory=dict)
    kind: str = "rollback"  # rollback | freeze (an operation that froze: no rollback was safe)
    chain: tuple[int, int, str] = (0, 0, "")  # first and last event seq shown, last hash
    summary: str = ""
    questions: list[str] = field(default_factory=list)

    @property
    def time_to_detect(self) -> float | None:
        return None if self.detect_from is None else max(0.0, self.started_at - self.detect_from)

    @property
    def time_to_recover(self) -> float | None:
        if self.recovered_at is None:
            return None
        return max(0.0, self.recovered_at - self.started_at)

    @property
    def time_to_verified(self) -> float | None:
        if self.ended_at is None or self.outcome != "rolled-back":
            return None
        return max(0.0, self.ended_at - self.started_at)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict, with the three durations added."""
        doc = asdict(self)
        doc["weights"] = [{"at": at, "weights": w} for at, w in self.weights]
        doc["time_to_detect"] = self.time_to_detect
        doc["time_to_recover"] = self.time_to_recover
        doc["time_to_verified"] = self.time_to_verified
        return doc
