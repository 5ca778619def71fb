"""Roles and decision rights: who may do what, to which models.

For the control API's authorisation (:mod:`backout.api.auth`), the dashboard (which shows
only the buttons a person's role allows) and the token commands. :data:`ROLES` is the one
table of rights per role; a :class:`Grant` gives one role on the models its glob patterns
match (``fnmatch``: ``iris*``, ``fraud``, ``*``). A person may hold several grants.

Rights that concern the store as a whole (tokens, retention, signing keys) are held only by
a grant on every model (``*``): a grant scoped to some models cannot mint tokens beyond them.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from backout.errors import ConfigError

__all__ = [
    "BREAK_GLASS",
    "GLOBAL_RIGHTS",
    "ROLES",
    "Grant",
    "Right",
    "Role",
    "parse_grant",
]


class Right(StrEnum):
    """One decision right."""

    READ = "read"  # see releases, traffic, operations, events, reports (never a secret)
    ROLLBACK = "rollback"  # roll back to a known-good release, emergency or staged; resume it
    ABORT = "abort"  # stop a rollout or rollback: traffic back where it started
    PAUSE = "pause"  # hold an operation where it is, and resume a held one
    FREEZE = "freeze"  # halt every traffic change of a model, and lift the halt
    DRILL = "drill"  # rehearse an incident: inject a fault, measure recovery
    REPLAY = "replay"  # replay captured requests against a release
    REGISTER = "register"  # register, sign or delete a release
    DEPLOY = "deploy"  # start a rollout; roll back to a release that is not known-good
    PROMOTE = "promote"  # skip a rollout's remaining steps
    TRAFFIC = "traffic"  # set a model's traffic by hand
    APPROVE = "approve"  # decide what a policy says needs approval; mark releases known-good
    TOKENS = "tokens"  # create, list and revoke API tokens
    POLICIES = "policies"  # set a model's policy
    CONSUMERS = "consumers"  # register and remove a model's consumers
    QUARANTINE = "quarantine"  # bar a release from all traffic, or lift the bar
    RETENTION = "retention"  # prune old rows of the store
    KEYS = "keys"  # trust and remove signing keys


class Role(StrEnum):
    """A named set of rights."""

    VIEWER = "viewer"
    RESPONDER = "responder"
    RELEASER = "releaser"
    APPROVER = "approver"
    ADMIN = "admin"


R = Right
# The role table. The responder is pre-authorised for everything that takes a model back to
# known-good or holds it still, and for nothing that moves traffic forward: that needs the
# releaser (or break-glass, below). The releaser may abort and pause what it started.
ROLES: dict[Role, frozenset[Right]] = {
    Role.VIEWER: frozenset({R.READ}),
    Role.RESPONDER: frozenset({R.READ, R.ROLLBACK, R.ABORT, R.PAUSE, R.FREEZE, R.DRILL, R.REPLAY}),
    Role.RELEASER: frozenset(
        {R.READ, R.REGISTER, R.DEPLOY, R.PROMOTE, R.TRAFFIC, R.ABORT, R.PAUSE, R.REPLAY}
    ),
    Role.APPROVER: frozenset({R.READ, R.APPROVE}),
    Role.ADMIN: frozenset(
        {R.READ, R.TOKENS, R.POLICIES, R.CONSUMERS, R.QUARANTINE, R.RETENTION, R.KEYS}
    ),
}

# The releaser's rights a responder may use with break-glass (a reason, recorded as a
# bypass in the audit log and notified to the model's owners and approvers).
BREAK_GLASS: frozenset[Right] = frozenset({R.REGISTER, R.DEPLOY, R.PROMOTE, R.TRAFFIC})

# Rights over the store as a whole: held only through a grant on every model ("*").
GLOBAL_RIGHTS: frozenset[Right] = frozenset({R.TOKENS, R.RETENTION, R.KEYS})


@dataclass(frozen=True, slots=True)
class Grant:
    """One role on the models matching any of ``models`` (glob patterns)."""

    role: Role
    models: tuple[str, ...] = ("*",)

    def covers(self, model: str | None) -> bool:
        """Whether this grant reaches ``model`` (None: the store as a whole, only ``*``)."""
        if model is None:
            return "*" in self.models
        return any(fnmatch.fnmatchcase(model, pattern) for pattern in self.models)

    def allows(self, right: Right, model: str | None) -> bool:
        """Whether this grant gives ``right`` on ``model``."""
        if right in GLOBAL_RIGHTS:
            model = None
        return right in ROLES[self.role] and self.covers(model)

    def to_dict(self) -> dict[str, Any]:
        return {"role": self.role.value, "models": list(self.models)}

    def __str__(self) -> str:
        return f"{self.role.value}:{','.join(self.models)}"

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Grant:
        return make_grant(str(d.get("role", "")), [str(m) for m in d.get("models") or ["*"]])


def make_grant(role: str, models: list[str]) -> Grant:
    """A grant from a role name and model patterns, refused with the valid roles if unknown."""
    try:
        r = Role(role)
    except ValueError:
        raise ConfigError(
            f"unknown role {role!r}: choose one of {', '.join(r.value for r in Role)}"
        ) from None
    pats = tuple(p.strip() for p in models if p.strip())
    if not pats:
        raise ConfigError(f"role {role!r} needs at least one model pattern, e.g. '*' or 'iris*'")
    for p in pats:
        if len(p) > 128 or any(c.isspace() for c in p):
            raise ConfigError(f"model pattern {p!r} must be a glob without spaces (e.g. 'iris*')")
    return Grant(r, pats)


def parse_grant(text: str) -> Grant:
    """``responder:iris*,fraud`` (or ``viewer`` alone, meaning every model) as a grant."""
    role, _, models = text.partition(":")
    return make_grant(role.strip(), models.split(",") if models else ["*"])
