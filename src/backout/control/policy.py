"""The policy: a model's runbook as code (YAML), validated, with safe defaults.

For the engineer who writes a model's runbook and for the controller that follows it. A
policy says how a rollout steps traffic and gates each step, what starts a rollback on its
own (triggers), how the rollback runs (``emergency`` or ``staged``) and when it counts as
complete, when to abort or freeze, and whom to tell. Every field has a default, so an empty
file is a valid policy; unknown keys are errors, so a typo never passes silently.

:func:`load_policy` reads a file; a malformed one raises :class:`~backout.errors.PolicyError`
naming each bad field's path, value, allowed values and line. Durations are written ``30s``,
``5m``, ``1h``, ``250ms``, ``1m30s`` or a number of seconds and held as float seconds;
percentages are numbers from 0 to 100. The judges of its gates and its triggers are
defined in :mod:`backout.control.rules`.
"""

from __future__ import annotations

import itertools
from datetime import date
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    Field,
    PlainSerializer,
    field_validator,
    model_validator,
)

from backout.configfile import (
    MAX_YAML_BYTES,
    Duration,
    Email,
    Fraction,
    Percent,
    Url,
    format_duration,
    parse_duration,
    read_text_file,
    rule_error,
    validate_yaml,
)
from backout.control.rules import (
    DriftJudgeSpec,
    DriftTrigger,
    ErrorRateJudgeSpec,
    ErrorRateTrigger,
    GateSpec,
    IntegrityJudgeSpec,
    IntegrityTrigger,
    JudgeSpec,
    LatencyBudgetJudgeSpec,
    LatencyJudgeSpec,
    LatencyTrigger,
    PrometheusTrigger,
    Section,
    TailLatencyJudgeSpec,
    Trigger,
)
from backout.control.runbook import IncidentCommander, StatusPage
from backout.errors import BackoutError, PolicyError
from backout.registry.manifest import check_model_name, check_version

__all__ = [
    "LAST_KNOWN_GOOD",
    "Action",
    "Capture",
    "Completion",
    "Contact",
    "DriftJudgeSpec",
    "DriftTrigger",
    "Duration",
    "ErrorRateJudgeSpec",
    "ErrorRateTrigger",
    "Escalation",
    "Freeze",
    "GateSpec",
    "IncidentCommander",
    "IntegrityJudgeSpec",
    "IntegrityTrigger",
    "JudgeSpec",
    "LatencyBudgetJudgeSpec",
    "LatencyJudgeSpec",
    "LatencyTrigger",
    "NoticeKind",
    "Notifications",
    "Policy",
    "PrometheusTrigger",
    "Replay",
    "Rollback",
    "Rollout",
    "StatusPage",
    "TailLatencyJudgeSpec",
    "Termination",
    "Trigger",
    "Verification",
    "default_policy",
    "example_policy",
    "format_duration",
    "load_policy",
    "parse_duration",
    "parse_policy",
    "render_policy",
]

LAST_KNOWN_GOOD = "last-known-good"


def _increasing_to_100(steps: list[float], what: str) -> list[float]:
    for i, (a, b) in enumerate(itertools.pairwise(steps)):
        if b <= a:
            raise rule_error(str(i + 1), f"{what} must be strictly increasing ({b:g} after {a:g})")
    if steps and steps[-1] != 100:
        raise rule_error(
            str(len(steps) - 1), f"the last {what[:-1]} must be 100 (got {steps[-1]:g})"
        )
    return steps


class Action(StrEnum):
    """What the controller does when a gate cannot decide or its data is missing."""

    WAIT = "wait"  # keep baking at the current step
    ASK = "ask"  # pause and ask a person (notify the owners), traffic stays where it is
    ROLLBACK = "rollback"  # treat it as a failure and roll back


class NoticeKind(StrEnum):
    """The kinds of notification a policy can subscribe its webhooks to."""

    TRIGGER = "trigger"  # a trigger fired
    PHASE = "phase"  # the controller changed phase
    ABORT = "abort"  # a rollout or rollback was aborted
    FREEZE = "freeze"  # the model was frozen
    ESCALATION = "escalation"  # recovery is late: the next contact is called
    COMPLETED = "completed"  # a rollout or rollback completed
    BYPASS = "bypass"  # a responder used break-glass to take a releaser's right
    APPROVAL = "approval"  # an action waits for an approver, or was approved or denied


# --- the sections ------------------------------------------------------------------------


class Contact(Section):
    """A person or rota to escalate to, reached by a webhook and/or an email address."""

    name: str = Field(min_length=1)
    webhook: Url | None = None
    email: Email | None = None

    @model_validator(mode="after")
    def _reachable(self) -> Contact:
        if self.webhook is None and self.email is None:
            raise rule_error("webhook", f"contact {self.name!r} needs a webhook or an email")
        return self


class Escalation(Section):
    """Whom to call, in order, when recovery is not complete in time."""

    contacts: list[Contact] = Field(default_factory=list)
    after: Duration = Field(default=900.0, gt=0)  # each further contact after this much more
    repeat: bool = False  # after the last contact, start again from the first

    @field_validator("contacts")
    @classmethod
    def _unique(cls, contacts: list[Contact]) -> list[Contact]:
        names = [c.name for c in contacts]
        for i, name in enumerate(names):
            if name in names[:i]:
                raise rule_error(f"{i}.name", f"contact name {name!r} is used twice")
        return contacts


def _default_on() -> set[NoticeKind]:
    return set(NoticeKind) - {NoticeKind.COMPLETED}


def _sorted_kinds(kinds: set[NoticeKind]) -> list[str]:
    return sorted(k.value for k in kinds)


class Smtp(Section):
    """The mail server escalation e-mails go through (standard SMTP, optionally STARTTLS)."""

    host: str = Field(min_length=1)
    port: int = Field(default=25, ge=1, le=65535)
    sender: Email = "backout@localhost"
    starttls: bool = False
    username: str | None = None
    # The password is never in the policy (it is stored and shown): name the environment
    # variable of the controller's process that holds it.
    password_env: str | None = None
    timeout: Duration = Field(default=10.0, gt=0, le=120)


class Notifications(Section):
    """Webhooks (Slack-compatible) that hear about the kinds of events in ``on``, and the
    mail server for contacts reached by e-mail."""

    webhooks: list[Url] = Field(default_factory=list)
    smtp: Smtp | None = None
    on: Annotated[set[NoticeKind], PlainSerializer(_sorted_kinds, when_used="json")] = Field(
        default_factory=_default_on
    )


class Rollout(Section):
    """How traffic moves to a candidate: weights, bake time and gate of every step."""

    steps: list[Percent] = Field(default_factory=lambda: [5.0, 25.0, 50.0, 100.0], min_length=1)
    bake: Duration = 30.0  # at least this long at each step before its gate may pass
    min_requests: int = Field(default=200, ge=0)  # candidate requests per step
    gate: GateSpec = Field(default_factory=GateSpec)
    # Unproven is not good: an inconclusive candidate goes back while it has little traffic.
    on_inconclusive: Action = Action.ROLLBACK
    # No data is often no traffic (a quiet night): ask a person rather than guess.
    on_missing_data: Action = Action.ASK
    missing_data_after: Duration = Field(default=300.0, gt=0)

    @field_validator("steps")
    @classmethod
    def _steps(cls, steps: list[float]) -> list[float]:
        return _increasing_to_100(steps, "rollout steps")

    @model_validator(mode="after")
    def _horizon(self) -> Rollout:
        if self.gate.horizon is not None and self.gate.horizon < self.bake:
            raise rule_error(
                "gate.horizon",
                f"gate.horizon ({format_duration(self.gate.horizon)}) must be at least the "
                f"bake time ({format_duration(self.bake)})",
            )
        return self


class Verification(Section):
    """The window after every rollback in which the target serves alone and must stay healthy."""

    duration: Duration = Field(default=60.0, gt=0)
    gate: GateSpec | None = None  # None: the triggers and the target's envelope
    min_requests: int = Field(default=200, ge=0)


class Rollback(Section):
    """How traffic moves back to a known-good release."""

    mode: Literal["emergency", "staged"] = "staged"
    target: str = LAST_KNOWN_GOOD  # or a version of the model
    steps: list[Percent] = Field(default_factory=lambda: [50.0, 100.0], min_length=1)
    bake: Duration = 15.0
    gate: GateSpec = Field(default_factory=GateSpec)  # the target judged against the current
    window: Duration = 0.0  # a target known-good within this may skip gates; 0: never
    # An emergency trades the replay for time; digests and warmth are still checked and the
    # verification window still follows.
    skip_replay_in_emergency: bool = True
    verification: Verification = Field(default_factory=Verification)

    @field_validator("steps")
    @classmethod
    def _steps(cls, steps: list[float]) -> list[float]:
        return _increasing_to_100(steps, "rollback steps")

    @field_validator("target")
    @classmethod
    def _target(cls, target: str) -> str:
        if target == LAST_KNOWN_GOOD:
            return target
        try:
            return check_version(target)
        except BackoutError as exc:
            raise ValueError(f"must be {LAST_KNOWN_GOOD!r} or a version: {exc}") from None


class Completion(Section):
    """How long things must stay healthy before they count as complete."""

    rollout: Duration = 60.0  # at 100% before the candidate becomes known-good
    rollback: Duration | None = None  # on the target; None: the verification duration


class Termination(Section):
    """When a rollback gives up."""

    abort_rollback_if_target_worse: bool = True
    # An aborted rollback freezes traffic where it is rather than flap back to the release
    # it was leaving; "revert" sends it back there.
    on_abort: Literal["freeze", "revert"] = "freeze"
    max_rollback_duration: Duration = Field(default=900.0, gt=0)


class Freeze(Section):
    """Failures a rollback cannot fix: halt traffic changes and escalate instead."""

    on_both_unhealthy: bool = True
    on_integrity_both: bool = True


class Capture(Section):
    """Which production requests are recorded for replay, and how they are scrubbed."""

    rate: Fraction = 0.01
    redact: list[str] = Field(default_factory=list)  # fields dropped before storing
    hash: list[str] = Field(default_factory=list)  # fields replaced by a keyed hash
    max_rows: int = Field(default=100_000, ge=0)

    @model_validator(mode="after")
    def _disjoint(self) -> Capture:
        both = sorted(set(self.redact) & set(self.hash))
        if both:
            raise rule_error("hash", f"fields both redacted and hashed: {', '.join(both)}")
        return self


class Replay(Section):
    """How a rollback target is proven on recorded requests before it takes traffic."""

    allowed: bool = True
    requests: int = Field(default=500, ge=1)
    max_error_rate: Fraction = 0.01
    max_latency_ratio: float = Field(default=1.5, gt=0)  # of the replaced release's replay tail
    min_agreement: Fraction = 0.95  # share of outputs equal to the recorded ones


class Signing(Section):
    """Whether a release must carry a valid signature from a trusted key to take traffic."""

    # Checked by deploy, by rollback (its target) and by the gateway when it loads a release.
    required: bool = False


class Approval(Section):
    """Which actions a person asks for must wait for an approver (never the one who asked)."""

    rollout: bool = False  # the start of a rollout (deploy)
    promote: bool = False  # a promotion to 100% (skipping the remaining steps)
    rollback_not_known_good: bool = False  # a rollback to a release that is not known-good


class Policy(Section):
    """A model's runbook. Every field has a safe default; see ``examples/policies``."""

    model: str | None = None  # when set, must match the deployed model
    owners: list[str] = Field(default_factory=list)
    # Runbook roles (backout.control.runbook): who approves what the policy asks approval
    # for, who commands an incident, and when the runbook is due for its next review.
    approvers: list[str] = Field(default_factory=list)
    incident_commander: IncidentCommander = Field(default_factory=IncidentCommander)
    review_every: Duration | None = Field(default=None, gt=0)
    reviewed: date | None = None
    status_page: StatusPage = Field(default_factory=StatusPage)
    escalation: Escalation = Field(default_factory=Escalation)
    notifications: Notifications = Field(default_factory=Notifications)
    rollout: Rollout = Field(default_factory=Rollout)
    rollback: Rollback = Field(default_factory=Rollback)
    triggers: list[Trigger] = Field(default_factory=lambda: _default_triggers())
    completion: Completion = Field(default_factory=Completion)
    termination: Termination = Field(default_factory=Termination)
    freeze: Freeze = Field(default_factory=Freeze)
    capture: Capture = Field(default_factory=Capture)
    replay: Replay = Field(default_factory=Replay)
    signing: Signing = Field(default_factory=Signing)
    approval: Approval = Field(default_factory=Approval)

    @field_validator("model")
    @classmethod
    def _model_name(cls, name: str | None) -> str | None:
        try:
            return None if name is None else check_model_name(name)
        except BackoutError as exc:
            raise ValueError(exc.message) from None

    @field_validator("triggers")
    @classmethod
    def _unique(cls, triggers: list[Trigger]) -> list[Trigger]:
        names = [t.name for t in triggers]
        for i, name in enumerate(names):
            if name in names[:i]:
                raise rule_error(f"{i}.name", f"trigger name {name!r} is used twice; name each")
        return triggers

    @model_validator(mode="after")
    def _rules(self) -> Policy:
        if self.completion.rollback is None:
            verification = self.rollback.verification.duration
            self.completion = self.completion.model_copy(update={"rollback": verification})
        rb = self.rollback
        least = rb.verification.duration + (rb.bake * len(rb.steps) if rb.mode == "staged" else 0)
        if self.termination.max_rollback_duration < least:
            raise rule_error(
                "termination.max_rollback_duration",
                f"max_rollback_duration ({format_duration(self.termination.max_rollback_duration)})"
                f" is shorter than the rollback's bakes and verification ({format_duration(least)})",
            )
        return self

    @property
    def rollback_completion(self) -> float:
        """Seconds the target must stay healthy before a rollback is complete."""
        return self.completion.rollback or self.rollback.verification.duration

    def effective(self) -> dict[str, Any]:
        """Every field with its defaults filled in, durations spelled like ``30s``."""
        out: dict[str, Any] = _kind_first(self.model_dump(mode="json"))
        return out

    def validate_for(self, model: str) -> Policy:
        """Return self if the policy may run ``model``, else raise :class:`PolicyError`."""
        if self.model is not None and self.model != model:
            raise PolicyError(
                f"the policy is for model {self.model!r}, not {model!r}: fix its 'model' field"
            )
        return self


def _default_triggers() -> list[Trigger]:
    # Corrupt outputs are never worth a staged walk back: get off the release at once.
    return [
        IntegrityTrigger(name="integrity", mode="emergency"),
        ErrorRateTrigger(name="error-rate", use_judge=True),
    ]


def _kind_first(value: Any) -> Any:
    """The discriminator (``kind``, ``judge``) first in each mapping, as people write it."""
    if isinstance(value, list):
        return [_kind_first(v) for v in value]
    if isinstance(value, dict):
        first = [k for k in ("kind", "judge") if k in value]
        return {k: _kind_first(value[k]) for k in [*first, *(k for k in value if k not in first)]}
    return value


def default_policy(model: str | None = None) -> Policy:
    """The policy a model gets when it has none."""
    return Policy(model=model)


# --- loading ----------------------------------------------------------------------------


def load_policy(path: Path) -> Policy:
    """Read and validate the policy file at ``path`` (at most ``MAX_YAML_BYTES`` of it)."""
    text = read_text_file(path, what="policy file", limit=MAX_YAML_BYTES, error=PolicyError)
    return parse_policy(text, str(path))


def parse_policy(text: str, source: str = "<policy>") -> Policy:
    """Validate policy YAML; ``source`` names it in error messages."""
    return validate_yaml(Policy, text, source, error=PolicyError, what="a policy")


class _Dumper(yaml.SafeDumper):
    """Lists of scalars on one line (``steps: [5, 25, 50, 100]``), the rest in blocks."""

    def flow_list(self, data: Any) -> yaml.Node:
        flow = all(not isinstance(v, dict | list) for v in data)
        return self.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=flow)


_Dumper.add_representer(list, _Dumper.flow_list)


def render_policy(policy: Policy) -> str:
    """The effective policy as YAML, for ``backout policy check``."""
    return yaml.dump(policy.effective(), Dumper=_Dumper, sort_keys=False, allow_unicode=True)


def example_policy(name: str = "default") -> str:
    """The text of a packaged example policy: ``default``, ``staged-rollback`` or
    ``emergency`` (the files of ``examples/policies``)."""
    from importlib.resources import files

    resource = files("backout") / "examples" / f"{name}.yaml"
    if not resource.is_file():
        raise PolicyError(
            f"no example policy {name!r}: choose default, staged-rollback or emergency"
        )
    return resource.read_text(encoding="utf-8")
