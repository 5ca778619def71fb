"""The rollout's phases: a candidate steps up behind its gate, then proves itself at 100%.

One handler per phase, each called by the tick with the operation as stored: it decides at
most one event and hands it to the state machine. Triggers are watched in every phase
where the candidate takes traffic.
"""

from __future__ import annotations

from backout.control.detection import HOLD_FACTOR, Detection, blind_judges
from backout.control.operations import Operation
from backout.control.phases import Event
from backout.control.weights import split
from backout.judges import GateResult, Verdict
from backout.registry import badmarks
from backout.store import audit


class RolloutPhases(Detection):
    """Handlers for ROLLING_OUT, AWAITING_APPROVAL and COMPLETING."""

    def tick_rolling_out(self, op: Operation, now: float) -> None:
        p = op.policy.rollout
        if self.marked_bad_meanwhile(op):
            return
        fired = self.fired_triggers(op.model, op.target, now, op.policy)
        if fired:
            self.trigger_rollback(op, fired)
            return
        result = self.gate(op, p.gate, op.target, op.stable, op.step_started_at)
        elapsed = now - op.step_started_at
        if result is None:
            if elapsed >= p.missing_data_after:
                self.act(
                    op, p.on_missing_data, f"no traffic reached {op.target} for {elapsed:.0f} s", {}
                )
            return
        evidence = result.to_dict()
        requests = max((j.samples for j in result.judgements), default=0)
        approved = op.state.approved_step == op.step
        if result.verdict == Verdict.FAIL:
            self.gate_failed(op, result)
            return
        if result.verdict == Verdict.INCONCLUSIVE and not approved:
            self.act(op, p.on_inconclusive, result.summary, evidence)
            return
        if requests < p.min_requests:
            return
        # A gate that proved the candidate no worse moves on at once; one that has seen no
        # regression yet moves on once the bake time is over (the sequential test keeps
        # watching at the next step, so a late regression still fails it). But a step never
        # ends while a judge has not seen enough to say anything at all (the mean-latency
        # test needs a few blocks of batches before it has any bound): a bake shorter than
        # that would move traffic on before the test could look. The wait is capped.
        blind = blind_judges(result)
        baked = elapsed >= p.bake and (not blind or elapsed >= p.bake * HOLD_FACTOR)
        if result.verdict == Verdict.PASS or approved or baked:
            self.next_rollout_step(op, result)

    def next_rollout_step(self, op: Operation, result: GateResult) -> None:
        steps = op.policy.rollout.steps
        with self.store.write() as conn:
            if op.step + 1 < len(steps) and steps[op.step + 1] < 100:
                op.step += 1
                op.weights = split(op.stable, op.target, steps[op.step])
                self.transition(conn, op, Event.STEP_PASSED, self.actor,
                                f"gate passed; step {op.step + 1}: {op.target} at {steps[op.step]:g}%",
                                result.to_dict(), new_step=True)  # fmt: skip
            else:
                op.weights = {op.target: 100.0}
                self.transition(conn, op, Event.LAST_STEP_PASSED, self.actor,
                                f"gate passed; {op.target} takes all traffic", result.to_dict(),
                                new_step=True)  # fmt: skip
        self.push(op.model)

    def marked_bad_meanwhile(self, op: Operation) -> bool:
        """Roll back a candidate that was marked bad while it rolled out (by a person, say).

        A deploy refuses a bad release unless it overrides the mark, so a mark that this
        operation did not override is newer than the rollout: it must not go on, let alone
        become known-good at completion. True when it rolled back (or froze)."""
        rel = self.registry.get(f"{op.model}@{op.target}")
        if rel.bad is None:
            return False
        with self.store.read() as conn:
            override = audit.latest(conn, op.model, (badmarks.OVERRIDDEN,))
        if (
            override is not None
            and override.data.get("operation") == op.id
            and override.data.get("bad", {}).get("at") == rel.bad.at.isoformat()
        ):
            return False  # the mark this rollout was started over, on purpose
        self.auto_rollback(op, f"{rel.ref} was marked bad during its rollout: {rel.bad.describe()}",
                           {"bad": rel.bad.to_dict()})  # fmt: skip
        return True

    def tick_awaiting_approval(self, op: Operation, now: float) -> None:
        # The candidate still takes its step's traffic while people decide: a trigger that
        # fires on it rolls back without waiting for them.
        if self.marked_bad_meanwhile(op):
            return
        fired = self.fired_triggers(op.model, op.target, now, op.policy)
        if fired:
            self.trigger_rollback(op, fired)

    def tick_completing(self, op: Operation, now: float) -> None:
        if self.marked_bad_meanwhile(op):
            return
        fired = self.fired_triggers(op.model, op.target, now, op.policy)
        if fired:
            self.trigger_rollback(op, fired)
            return
        if now - op.step_started_at < op.policy.completion.rollout:
            return
        with self.store.write() as conn:
            self.registry.record_mark(conn, op.model, op.target, actor=self.actor,
                                      reason=f"rollout {op.id} completed", at=now)  # fmt: skip
            self.transition(conn, op, Event.COMPLETED, self.actor,
                            f"{op.target} healthy at 100% for {op.policy.completion.rollout:g} s", {})  # fmt: skip
            self.notify("completed", op.model, f"rollout of {op.model}@{op.target} complete",
                        "marked known-good", op.id, conn=conn)  # fmt: skip
