"""The people side of a runbook: who commands an incident, who approves, when it is reviewed,
and what the public status page says.

For the engineer who writes a model's policy and for the on-call who reads the dashboard.
These sections live in the policy file beside the rollout and rollback rules:

.. code-block:: yaml

    owners: [risk-team]
    approvers: [ana, bo]
    incident_commander:
      rotation: [ana, bo, cy]      # whose turn it is, in order
      every: 7d                    # each holds it this long
      since: 2026-01-05T09:00:00Z  # when the first one's turn began
    review_every: 90d              # the runbook is reviewed quarterly
    reviewed: 2026-10-01           # when it last was (default: when the policy was stored)
    status_page:
      component: Fraud scoring     # the public name (default: the model's name)
      show_versions: false         # release versions in public text
      messages:
        investigating: "We are investigating slower or failing answers from {component}."

Public text comes only from ``status_page.messages`` (and from what an incident commander
writes): a placeholder that would show a version, the evidence or a consumer's name is
refused unless the matching ``show_*`` switch is on.
"""

from __future__ import annotations

import string
from datetime import UTC, date, datetime
from typing import Any

from pydantic import Field, field_validator, model_validator

from backout.configfile import Duration, rule_error
from backout.control.rules import Section

__all__ = [
    "INCIDENT_STATUSES",
    "IncidentCommander",
    "StatusPage",
    "public_text",
    "review_due",
]

# Statuspage's words for an incident's progress, in order.
INCIDENT_STATUSES = ("investigating", "identified", "monitoring", "resolved")

DEFAULT_MESSAGES: dict[str, str] = {
    "investigating": "We are investigating degraded answers from {component} and are moving "
    "it back to its last known-good version.",
    "identified": "The cause is identified: {component} is being moved back to its last "
    "known-good version, step by step.",
    "monitoring": "{component} is back on its last known-good version; we are monitoring it.",
    "resolved": "{component} is operating normally.",
    "frozen": "Changes to {component} are halted while our engineers look into it.",
}
DEFAULT_TITLE = "Degraded answers from {component}"

# Placeholders public text may use, and the switch each one needs (None: always allowed).
PLACEHOLDERS: dict[str, str | None] = {
    "component": None,
    "model": None,
    "from_version": "show_versions",
    "to_version": "show_versions",
    "reason": "show_evidence",
    "consumers": "show_consumers",
}


class IncidentCommander(Section):
    """Who commands an incident: a rotation, each person for ``every``, from ``since``."""

    rotation: list[str] = Field(default_factory=list)
    every: Duration = Field(default=7 * 86400.0, gt=0)
    since: datetime = datetime(2026, 1, 5, tzinfo=UTC)

    @field_validator("rotation")
    @classmethod
    def _names(cls, names: list[str]) -> list[str]:
        for i, name in enumerate(names):
            if not name.strip():
                raise rule_error(str(i), "a name in the rotation is empty")
        return names

    @field_validator("since")
    @classmethod
    def _aware(cls, since: datetime) -> datetime:
        return since if since.tzinfo is not None else since.replace(tzinfo=UTC)

    def on_duty(self, at: float) -> str | None:
        """Whose turn it is at ``at`` (epoch seconds); None with an empty rotation."""
        if not self.rotation:
            return None
        turns = int((at - self.since.timestamp()) // self.every)
        return self.rotation[turns % len(self.rotation)]


class StatusPage(Section):
    """What the public status page shows for this model, and the words it uses."""

    component: str | None = Field(default=None, min_length=1, max_length=120)
    show_versions: bool = False
    show_evidence: bool = False
    show_consumers: bool = False
    # A rollout in progress shows as "under maintenance" rather than "operational".
    rollouts_as_maintenance: bool = False
    title: str = DEFAULT_TITLE
    messages: dict[str, str] = Field(default_factory=lambda: dict(DEFAULT_MESSAGES))

    @field_validator("messages")
    @classmethod
    def _known(cls, messages: dict[str, str]) -> dict[str, str]:
        allowed = (*INCIDENT_STATUSES, "frozen")
        for key in messages:
            if key not in allowed:
                raise rule_error(key, f"no message {key!r}: choose from {', '.join(allowed)}")
        return DEFAULT_MESSAGES | messages

    @model_validator(mode="after")
    def _placeholders(self) -> StatusPage:
        for where, text in [("title", self.title)] + [
            (f"messages.{k}", v) for k, v in self.messages.items()
        ]:
            for name in _fields(text, where):
                switch = PLACEHOLDERS.get(name, "")
                if switch == "":
                    raise rule_error(
                        where,
                        f"{{{name}}} is not a placeholder: use {', '.join(PLACEHOLDERS)}",
                    )
                if switch is not None and not getattr(self, switch):
                    raise rule_error(
                        where, f"{{{name}}} would show it publicly: set status_page.{switch}: true"
                    )
        return self

    def name_for(self, model: str) -> str:
        """The component's public name."""
        return self.component or model


def _fields(text: str, where: str) -> list[str]:
    """The placeholders of ``text``: plain names only (no attributes, indexes or formats)."""
    try:
        parsed = list(string.Formatter().parse(text))
    except ValueError as exc:
        raise rule_error(where, f"braces do not match ({exc}); write {{{{ for a brace") from None
    names = []
    for _, name, spec, conv in parsed:
        if name is None:
            continue
        if not name.isidentifier() or spec or conv:
            raise rule_error(where, f"{{{name}}} must be a plain placeholder such as {{component}}")
        names.append(name)
    return names


def public_text(template: str, values: dict[str, Any]) -> str:
    """Fill a validated template; placeholders missing from ``values`` read as ``-``."""
    out = []
    for literal, name, _, _ in string.Formatter().parse(template):
        out.append(literal)
        if name is not None:
            out.append(str(values.get(name) or "-"))
    return "".join(out)


def review_due(review_every: float | None, reviewed: date | datetime | None,
               stored_at: datetime | None, now: float) -> dict[str, Any] | None:  # fmt: skip
    """When a runbook is overdue for review, how late: ``{"due": epoch, "overdue_s": s}``.

    The last review is ``reviewed`` when the policy says it, else the time the policy was
    stored (storing it is a review). None when no review is asked for or it is not due.
    """
    if review_every is None:
        return None
    if isinstance(reviewed, datetime):
        last = reviewed if reviewed.tzinfo else reviewed.replace(tzinfo=UTC)
    elif isinstance(reviewed, date):
        last = datetime(reviewed.year, reviewed.month, reviewed.day, tzinfo=UTC)
    elif stored_at is not None:
        last = stored_at if stored_at.tzinfo else stored_at.replace(tzinfo=UTC)
    else:
        return None
    due = last.timestamp() + review_every
    if now <= due:
        return None
    return {"last": last.timestamp(), "due": due, "overdue_s": now - due}
