"""Bad releases: a decision that stays made.

A release is marked *bad* when traffic was rolled back from it because a gate or a trigger
failed (by the controller, in the same transaction as that decision), or by a person with
``backout release mark-bad``. The mark keeps the evidence (the failing judgement's one
line), the operation that rolled back from it, who and when. While it holds, no rollback
targets the release and ``backout deploy`` refuses it unless overridden with a reason.
The mark is lifted by ``backout release clear-bad`` with a reason, or when a deploy that
overrode it completes and makes the release known-good. Every change is an audit event in
the transaction that makes it, and a row of the release's mark history.

For the registry (which shows the mark on :class:`~backout.registry.releases.Release`) and
the controller (which writes it inside its own transactions with :func:`record_bad`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from backout.errors import Conflict, ValidationError
from backout.store import as_utc, audit, bump_generation, schema

R = schema.releases

MARKED = "release.marked-bad"
CLEARED = "release.bad-cleared"
OVERRIDDEN = "release.bad-overridden"


@dataclass(frozen=True, slots=True)
class BadMark:
    """Why a release is bad: the evidence, the rollback that left it, who and when."""

    evidence: str
    operation: int | None  # the rollback operation (the incident); None for a mark by hand
    actor: str
    at: datetime

    def to_dict(self) -> dict[str, Any]:
        return {"evidence": self.evidence, "operation": self.operation, "actor": self.actor,
                "at": self.at.isoformat()}  # fmt: skip

    def describe(self) -> str:
        """``gate failed at step 1: … (operation 7, by controller 2026-12-01 10:40 UTC)``."""
        by = f"operation {self.operation}, " if self.operation is not None else ""
        return f"{self.evidence} ({by}by {self.actor} {self.at:%Y-%m-%d %H:%M} UTC)"


def bad_of(row: Any) -> BadMark | None:
    """The bad mark of a ``releases`` row, or None."""
    if row.bad is None:
        return None
    at = as_utc(row.bad_at) if row.bad_at is not None else datetime.fromtimestamp(0, UTC)
    return BadMark(row.bad, row.bad_operation, row.bad_by or "unknown", at)


def _when(at: float | None) -> datetime:
    return datetime.fromtimestamp(at, UTC) if at is not None else datetime.now(UTC)


def record_bad(conn: Connection, model: str, version: str, *, evidence: str, actor: str,
               operation: int | None = None, source: str = "hand",
               at: float | None = None) -> None:  # fmt: skip
    """Mark ``model@version`` bad inside the caller's write, with its event and history.

    ``source``: what decided it (``gate``, ``trigger``, ``rollback-gate``, ``hand``). A bad
    release is no rollback point, so a known-good mark is removed in the same write (and
    the gateways, which keep rollback points warm, are told). Marking an already bad
    release again replaces the evidence: the newest decision is the one shown.
    """
    evidence = " ".join(evidence.split()) or "marked bad"
    when = _when(at)
    row = conn.execute(
        sa.select(R.c.known_good).where(R.c.model == model, R.c.version == version)
    ).first()
    if row is None:
        raise ValidationError(f"release {model}@{version} is not registered")
    conn.execute(
        R.update()
        .where(R.c.model == model, R.c.version == version)
        .values(bad=evidence, bad_operation=operation, bad_at=when, bad_by=actor, known_good=False)
    )
    bump_generation(conn)
    conn.execute(
        schema.release_marks.insert().values(
            model=model, version=version, action="bad", actor=actor, reason=evidence, at=when
        )
    )
    audit.append(
        conn, MARKED, model=model, actor=actor, reason=f"{model}@{version} marked bad: {evidence}",
        data={"version": version, "evidence": evidence, "operation": operation,
              "source": source, "was_known_good": bool(row.known_good)},
        at=when,
    )  # fmt: skip


def clear_bad_in(conn: Connection, model: str, version: str, *, actor: str, reason: str,
                 at: float | None = None) -> bool:  # fmt: skip
    """Lift ``model@version``'s bad mark inside the caller's write; False if it had none."""
    row = conn.execute(sa.select(R).where(R.c.model == model, R.c.version == version)).first()
    mark = bad_of(row) if row is not None else None
    if mark is None:
        return False
    when = _when(at)
    conn.execute(
        R.update()
        .where(R.c.model == model, R.c.version == version)
        .values(bad=None, bad_operation=None, bad_at=None, bad_by=None)
    )
    conn.execute(
        schema.release_marks.insert().values(
            model=model, version=version, action="clear-bad", actor=actor, reason=reason, at=when
        )
    )
    audit.append(
        conn, CLEARED, model=model, actor=actor, reason=reason,
        data={"version": version, "was": mark.to_dict()}, at=when,
    )  # fmt: skip
    return True


def require_reason(reason: str, what: str) -> str:
    """The reason a person gives for a bad mark's change; refused when empty."""
    reason = " ".join(reason.split())
    if not reason:
        raise ValidationError(f"{what} needs a reason for the audit log: pass --reason TEXT")
    return reason


def not_bad(ref: str) -> Conflict:
    return Conflict(f"{ref} is not marked bad: nothing to clear")


def refusal(ref: str, mark: BadMark, doing: str, fix: str) -> str:
    """One line: what is refused, the mark (evidence, operation), and the way past it."""
    return f"{ref} is marked bad and cannot {doing}: {mark.describe()}; {fix}"
