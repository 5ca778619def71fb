"""Bad marks in the controller's decisions: which releases a rollback or a deploy may use.

For the commands and the detection: a release that is marked bad (see
:mod:`backout.registry.badmarks`) or quarantined is never a rollback target, whether it was
found as the last known-good, named in the policy or on the command line; deploying a bad
release needs ``--override-bad`` with a reason, audited in the deploy's own transaction.
"""

from __future__ import annotations

from sqlalchemy.engine import Connection

from backout.control.operations import Operation
from backout.errors import ReleaseMarkedBad, ValidationError
from backout.judges import GateResult, Verdict
from backout.registry import badmarks
from backout.registry.badmarks import BadMark
from backout.registry.releases import Release
from backout.store import audit
from backout.traffic.faults import active_faults


def usable_target(rel: Release) -> bool:
    """Whether ``rel`` may be a rollback target: neither bad nor quarantined."""
    return rel.bad is None and not rel.quarantined


def refuse_target(rel: Release) -> None:
    """Refuse a rollback to a bad or quarantined release, saying why and what to do."""
    if rel.bad is not None:
        raise ReleaseMarkedBad(
            badmarks.refusal(
                rel.ref, rel.bad, "be a rollback target",
                f"name another release with --to, or lift the mark with `backout release clear-bad {rel.ref} --reason TEXT`",
            )
        )  # fmt: skip
    if rel.quarantined:
        raise ValidationError(
            f"{rel.ref} is quarantined ({rel.quarantined}) and cannot be a rollback target: "
            f"name another release with --to, or lift it with `backout release quarantine {rel.ref} --lift`"
        )


def deploy_override(rel: Release, override_bad: bool, reason: str) -> BadMark | None:
    """The bad mark a deploy overrides (None when the release is not bad); refuses a deploy
    of a bad release without ``--override-bad --reason TEXT``."""
    if rel.bad is None:
        return None
    fix = f"deploy it anyway with `backout deploy {rel.ref} --override-bad --reason TEXT`"
    if not override_bad:
        raise ReleaseMarkedBad(badmarks.refusal(rel.ref, rel.bad, "be deployed", fix))
    if not reason.strip():
        raise ReleaseMarkedBad(
            badmarks.refusal(rel.ref, rel.bad, "be deployed without a reason", fix)
        )
    return rel.bad


def record_override(conn: Connection, rel: Release, mark: BadMark, *, actor: str, reason: str,
                    operation: int) -> None:  # fmt: skip
    """Audit a deploy that overrode a bad mark (inside the deploy's write)."""
    audit.append(
        conn, badmarks.OVERRIDDEN, model=rel.model, actor=actor,
        reason=f"{rel.ref} deployed despite its bad mark: {reason}",
        data={"version": rel.version, "operation": operation, "bad": mark.to_dict()},
    )  # fmt: skip


def injected(conn: Connection, model: str, version: str, now: float) -> str | None:
    """The drill fault injected into ``model@version`` at ``now`` (its label), or None.

    A drill's failure is made on purpose: a release rolled back from during a drill is not
    marked bad, or every rehearsal would leave the model's good release refused."""
    fault = active_faults(conn, now).get((model, version))
    return fault.label if fault is not None and fault.active(now) else None


def gate_evidence(step: int, result: GateResult) -> str:
    """The failing judgements of a gate, one line: what a bad mark keeps."""
    failing = [j.summary for j in result.judgements if j.verdict == Verdict.FAIL]
    return f"gate failed at step {step}: " + "; ".join(failing or [result.summary])


def abort_refused(op: Operation, back: Release) -> str:
    """Why an abort that would put all traffic back on a bad or quarantined release is
    refused, and the ways out."""
    m = op.model
    if back.bad is not None:
        why = f"is marked bad ({back.bad.describe()})"
        lift = f"`backout release clear-bad {back.ref} --reason TEXT` lifts the mark"
    else:
        why = f"is quarantined ({back.quarantined})"
        lift = f"`backout release quarantine {back.ref} --lift` lifts it"
    way = (
        f"let the rollback to {op.target} finish, `backout rollback {m} --emergency` puts all traffic on it now"
        if op.kind == "rollback"
        else f"`backout rollback {m} --emergency --to VERSION` puts all traffic on another release"
    )
    return f"abort would put all of {m}'s traffic back on {back.ref}, which {why}: {way}, or {lift} first"
