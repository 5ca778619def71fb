"""The controller's state machine: phases, the events that move them, and one table between.

An operation is one rollout or one rollback of a model. It starts from "no operation"
(``None`` in the table), moves through phases as events happen — a gate passes, a trigger
fires, a person pauses it — and ends in a terminal phase. Every change of phase anywhere in
backout is a row of :data:`TRANSITIONS`, looked up by :func:`next_phase`; a pair that is not
in the table is refused. The table is the whole graph: read it top to bottom.
"""

from __future__ import annotations

from enum import StrEnum

from backout.errors import Conflict


class Phase(StrEnum):
    """Where an operation is. Terminal phases end the operation."""

    ROLLING_OUT = "rolling-out"  # the candidate takes a step's weight and bakes behind a gate
    AWAITING_APPROVAL = "awaiting-approval"  # inconclusive or missing data: a human decides
    PAUSED = "paused"  # held by a human (or traffic set by hand); nothing moves
    COMPLETING = "completing"  # candidate at 100%, proving the completion criteria
    ROLLING_BACK = "rolling-back"  # staged rollback: the target takes steps behind a gate
    VERIFYING = "verifying"  # all traffic on the target; its verification window runs
    FROZEN = "frozen"  # both releases unhealthy: traffic halted where it is, escalated
    SUCCEEDED = "succeeded"  # rollout complete; the candidate is known-good (terminal)
    ROLLED_BACK = "rolled-back"  # rollback complete and verified (terminal)
    ABORTED = "aborted"  # stopped by a human, superseded, or a termination signal (terminal)
    UNFROZEN = "unfrozen"  # a freeze lifted by an explicit command (terminal)


class Event(StrEnum):
    """What happened to an operation: the input of the state machine."""

    # starting (from no operation)
    FIRST_DEPLOY = "first-deploy"  # a model's first release goes live at 100% at once
    ROLLOUT_STARTED = "rollout-started"  # the candidate takes its first step
    ROLLBACK_STARTED = "rollback-started"  # staged: the target takes its first step
    ROLLBACK_STARTED_AT_ONCE = "rollback-started-at-once"  # emergency, or inside the window
    # rollout
    STEP_PASSED = "step-passed"  # the gate passed (or the bake ended): next step
    LAST_STEP_PASSED = "last-step-passed"  # the candidate takes all traffic
    PROMOTED = "promoted"  # a person skipped the remaining steps
    DECISION_NEEDED = "decision-needed"  # inconclusive or no data, and the policy says ask
    APPROVED = "approved"  # a person approved the step awaiting a decision
    COMPLETED = "completed"  # healthy at 100% for the completion window: known-good
    # rollback
    ROLLBACK_STEP_PASSED = "rollback-step-passed"  # the target takes the next step
    ROLLBACK_LAST_STEP_PASSED = "rollback-last-step-passed"  # all traffic on the target
    VERIFIED = "verified"  # the target stayed healthy through its verification window
    TARGET_UNHEALTHY = "target-unhealthy"  # the rollback target does worse: abort it
    # either
    PAUSED = "paused"  # a person (or a traffic change by hand) holds it
    RESUMED_ROLLING_OUT = "resumed-rolling-out"  # resumed: back to the phase it paused in
    RESUMED_AWAITING_APPROVAL = "resumed-awaiting-approval"
    RESUMED_COMPLETING = "resumed-completing"
    RESUMED_ROLLING_BACK = "resumed-rolling-back"
    RESUMED_VERIFYING = "resumed-verifying"
    ABORTED = "aborted"  # a person stopped it: traffic back where it started
    SUPERSEDED = "superseded"  # a rollback took over (from a rollout; by hand, from any operation)
    FROZE = "froze"  # no safe way forward or back: halt and escalate
    UNFROZE = "unfroze"  # a person lifted the freeze


# (phase, event) -> next phase. ``None``: no operation in progress (how operations start).
TRANSITIONS: dict[tuple[Phase | None, Event], Phase] = {
    # how operations start
    (None, Event.FIRST_DEPLOY): Phase.SUCCEEDED,
    (None, Event.ROLLOUT_STARTED): Phase.ROLLING_OUT,
    (None, Event.ROLLBACK_STARTED): Phase.ROLLING_BACK,
    (None, Event.ROLLBACK_STARTED_AT_ONCE): Phase.VERIFYING,
    # a rollout steps up behind its gate
    (Phase.ROLLING_OUT, Event.STEP_PASSED): Phase.ROLLING_OUT,
    (Phase.ROLLING_OUT, Event.LAST_STEP_PASSED): Phase.COMPLETING,
    (Phase.ROLLING_OUT, Event.PROMOTED): Phase.COMPLETING,
    (Phase.ROLLING_OUT, Event.DECISION_NEEDED): Phase.AWAITING_APPROVAL,
    (Phase.ROLLING_OUT, Event.PAUSED): Phase.PAUSED,
    (Phase.ROLLING_OUT, Event.ABORTED): Phase.ABORTED,
    (Phase.ROLLING_OUT, Event.SUPERSEDED): Phase.ABORTED,
    (Phase.ROLLING_OUT, Event.FROZE): Phase.FROZEN,
    # ... waits for a person when the policy says ask
    (Phase.AWAITING_APPROVAL, Event.APPROVED): Phase.ROLLING_OUT,
    (Phase.AWAITING_APPROVAL, Event.PROMOTED): Phase.COMPLETING,
    (Phase.AWAITING_APPROVAL, Event.PAUSED): Phase.PAUSED,
    (Phase.AWAITING_APPROVAL, Event.ABORTED): Phase.ABORTED,
    (Phase.AWAITING_APPROVAL, Event.SUPERSEDED): Phase.ABORTED,
    (Phase.AWAITING_APPROVAL, Event.FROZE): Phase.FROZEN,
    # ... and proves itself at 100% before it becomes known-good
    (Phase.COMPLETING, Event.COMPLETED): Phase.SUCCEEDED,
    (Phase.COMPLETING, Event.PAUSED): Phase.PAUSED,
    (Phase.COMPLETING, Event.ABORTED): Phase.ABORTED,
    (Phase.COMPLETING, Event.SUPERSEDED): Phase.ABORTED,
    (Phase.COMPLETING, Event.FROZE): Phase.FROZEN,
    # a staged rollback steps the target up behind its own gate
    (Phase.ROLLING_BACK, Event.ROLLBACK_STEP_PASSED): Phase.ROLLING_BACK,
    (Phase.ROLLING_BACK, Event.ROLLBACK_LAST_STEP_PASSED): Phase.VERIFYING,
    (Phase.ROLLING_BACK, Event.TARGET_UNHEALTHY): Phase.ABORTED,
    (Phase.ROLLING_BACK, Event.PAUSED): Phase.PAUSED,
    (Phase.ROLLING_BACK, Event.ABORTED): Phase.ABORTED,
    (Phase.ROLLING_BACK, Event.FROZE): Phase.FROZEN,
    (Phase.ROLLING_BACK, Event.SUPERSEDED): Phase.ABORTED,  # a person's emergency rollback
    # every rollback ends with the target verified (all traffic on it: no abort from here;
    # only a person's emergency rollback to another release takes over)
    (Phase.VERIFYING, Event.VERIFIED): Phase.ROLLED_BACK,
    (Phase.VERIFYING, Event.PAUSED): Phase.PAUSED,
    (Phase.VERIFYING, Event.FROZE): Phase.FROZEN,
    (Phase.VERIFYING, Event.SUPERSEDED): Phase.ABORTED,  # a person's emergency rollback elsewhere
    # held by a person: resumed where it was, or stopped
    (Phase.PAUSED, Event.RESUMED_ROLLING_OUT): Phase.ROLLING_OUT,
    (Phase.PAUSED, Event.RESUMED_AWAITING_APPROVAL): Phase.AWAITING_APPROVAL,
    (Phase.PAUSED, Event.RESUMED_COMPLETING): Phase.COMPLETING,
    (Phase.PAUSED, Event.RESUMED_ROLLING_BACK): Phase.ROLLING_BACK,
    (Phase.PAUSED, Event.RESUMED_VERIFYING): Phase.VERIFYING,
    (Phase.PAUSED, Event.PAUSED): Phase.PAUSED,
    (Phase.PAUSED, Event.PROMOTED): Phase.COMPLETING,
    (Phase.PAUSED, Event.ABORTED): Phase.ABORTED,
    (Phase.PAUSED, Event.SUPERSEDED): Phase.ABORTED,
    (Phase.PAUSED, Event.FROZE): Phase.FROZEN,
    # frozen until a person lifts it, or takes it over with an emergency rollback (break-glass)
    (Phase.FROZEN, Event.UNFROZE): Phase.UNFROZEN,
    (Phase.FROZEN, Event.SUPERSEDED): Phase.ABORTED,
}

# A paused operation resumes in the phase it was paused in, by the event named here.
RESUMED: dict[Phase, Event] = {
    Phase.ROLLING_OUT: Event.RESUMED_ROLLING_OUT,
    Phase.AWAITING_APPROVAL: Event.RESUMED_AWAITING_APPROVAL,
    Phase.COMPLETING: Event.RESUMED_COMPLETING,
    Phase.ROLLING_BACK: Event.RESUMED_ROLLING_BACK,
    Phase.VERIFYING: Event.RESUMED_VERIFYING,
}

TERMINAL: frozenset[Phase] = frozenset(
    {Phase.SUCCEEDED, Phase.ROLLED_BACK, Phase.ABORTED, Phase.UNFROZEN}
)


def next_phase(phase: Phase | None, event: Event, *, model: str = "") -> Phase:
    """The phase ``event`` leads to from ``phase``; :class:`Conflict` when the table has no row."""
    to = TRANSITIONS.get((phase, event))
    if to is None:
        where = phase.value if phase is not None else "no operation"
        raise Conflict(f"{model or 'the model'} is {where}: '{event.value}' does not apply there")
    return to


def allows(phase: Phase | None, event: Event) -> bool:
    """Whether the table has a row for ``event`` in ``phase``."""
    return (phase, event) in TRANSITIONS
