"""The rollback's phases: the target steps up behind its own gate, then is verified.

A staged rollback is itself a rollout in reverse: the target is judged against the release
it replaces at every step, and a target that does worse aborts the rollback (or, when the
release it left was unhealthy too, freezes the model). Every rollback ends in a
verification window on the target; a target that fails it freezes the model rather than
flapping back to a release already known to be bad.
"""

from __future__ import annotations

from typing import Any

from backout.control import marks
from backout.control.detection import Detection
from backout.control.operations import Operation
from backout.control.phases import Event
from backout.control.weights import split
from backout.judges import Verdict
from backout.registry import badmarks


class RollbackPhases(Detection):
    """Handlers for ROLLING_BACK and VERIFYING."""

    def tick_rolling_back(self, op: Operation, now: float) -> None:
        p = op.policy.rollback
        # The gate compares the target (as candidate) against the release it replaces.
        target_fired = self.fired_triggers(
            op.model, op.target, now, op.policy, since=op.step_started_at
        )
        if target_fired:
            self.target_unhealthy(op, "target tripped a trigger: " + "; ".join(t.summary for t in target_fired),
                                  {"triggers": [t.to_dict() for t in target_fired]})  # fmt: skip
            return
        result = self.gate(op, p.gate, op.target, op.stable, op.step_started_at)
        if (
            result is not None
            and result.verdict == Verdict.FAIL
            and op.policy.termination.abort_rollback_if_target_worse
        ):
            self.target_unhealthy(
                op, f"the target does worse than {op.stable}: {result.summary}", result.to_dict()
            )
            return
        if now - op.step_started_at < p.bake:
            return
        steps = [s for s in p.steps if s > op.weights.get(op.target, 0.0)]
        evidence = result.to_dict() if result else {"note": "no traffic in the bake window"}
        with self.store.write() as conn:
            if steps and steps[0] < 100:
                op.step += 1
                op.weights = split(op.stable, op.target, steps[0])
                self.transition(conn, op, Event.ROLLBACK_STEP_PASSED, self.actor,
                                f"rollback step: {op.target} at {steps[0]:g}%", evidence, new_step=True)  # fmt: skip
            else:
                op.weights = {op.target: 100.0}
                self.transition(conn, op, Event.ROLLBACK_LAST_STEP_PASSED, self.actor,
                                f"all traffic on {op.target}; verifying", evidence, new_step=True)  # fmt: skip
        self.push(op.model)

    def tick_verifying(self, op: Operation, now: float) -> None:
        v = op.policy.rollback.verification
        fired = self.fired_triggers(op.model, op.target, now, op.policy, since=op.step_started_at)
        if fired:
            # The target failed its verification: do not flap back to a release that was
            # already unhealthy — halt where we are and get a human.
            self.freeze(op, f"rollback target {op.target} failed verification: " + "; ".join(t.summary for t in fired),
                        {"triggers": [t.to_dict() for t in fired]})  # fmt: skip
            return
        elapsed = now - op.step_started_at
        if elapsed < v.duration:
            return
        per = self.batches(op.model, op.step_started_at)
        served = sum(b.requests for b in per.get(op.target, []))
        if served < v.min_requests and elapsed < 3 * v.duration:
            return  # not enough traffic to call it verified yet
        note = f"{op.target} healthy for {elapsed:.0f} s over {served:,} requests"
        if served < v.min_requests:
            note += f" (fewer than the {v.min_requests} the policy wants: verified on what came)"
        with self.store.write() as conn:
            self.transition(
                conn, op, Event.VERIFIED, self.actor, note, {"requests": served, "seconds": elapsed}
            )
            self.notify("completed", op.model, f"rollback of {op.model} to {op.target} complete",
                        note, op.id, conn=conn)  # fmt: skip

    def target_unhealthy(self, op: Operation, why: str, evidence: dict[str, Any]) -> None:
        triggered = bool(op.state.trigger)
        if triggered and op.policy.freeze.on_both_unhealthy:
            # The release we left tripped a trigger and the target does no better: flapping
            # between two unhealthy releases helps nobody. Freeze and escalate.
            self.freeze(
                op, f"both releases unhealthy: {op.stable} tripped a trigger and {why}", evidence
            )
            return
        with self.store.write() as conn:
            op.weights = {op.stable: 100.0}
            self.apply(conn, op, self.actor, f"rollback aborted: traffic back on {op.stable}")
            # Traffic leaves the target because its gate or trigger failed: it is bad now
            # (unless a drill injected the failure).
            if not marks.injected(conn, op.model, op.target, self.clock()):
                badmarks.record_bad(conn, op.model, op.target, evidence=f"rollback aborted: {why}",
                                    actor=self.actor, operation=op.id, source="rollback-gate",
                                    at=self.clock())  # fmt: skip
            self.transition(conn, op, Event.TARGET_UNHEALTHY, self.actor, f"rollback aborted: {why}", evidence,
                            move=False)  # fmt: skip
            self.notify("abort", op.model, f"rollback of {op.model} to {op.target} aborted", why,
                        op.id, severity="critical", conn=conn)  # fmt: skip
            self.alerts.escalation(conn, op, self.clock(), force=True)
        self.push(op.model)
