"""Detection: gates and triggers over telemetry, and what the controller does when they fail.

A gate compares the release under test with its baseline over the current step (the judges
are built from the policy and kept per step); a trigger watches one release over its own
window. When either fails, the controller rolls back on its own — or, when there is no safe
way back, freezes the model and calls people. A live model with no operation is watched too.
"""

from __future__ import annotations

import logging
import math
from typing import Any

from backout.control import marks, triggers
from backout.control.commands import Commands
from backout.control.operations import Operation, Operations
from backout.control.phases import Event
from backout.control.policy import Action, Policy
from backout.control.weights import dominant
from backout.errors import ModelNotFound, ValidationError
from backout.judges import GateResult, Verdict, pair_by_time
from backout.store import audit
from backout.telemetry.batches import Batch

log = logging.getLogger("backout.controller")

# The baseline's telemetry before a step that its gate reads: the latency judges measure
# the baseline's level wander on it, so they are valid from the step's first batch.
HISTORY_S = 1800.0
MAX_GATES = 64  # gates kept between ticks (one per operation in progress)
HOLD_FACTOR = 4  # a step waits at most this many bakes for a judge that cannot see yet


def blind_judges(result: GateResult) -> list[Any]:
    """Judges that have no bound on either side yet: they have not seen enough to speak."""
    return [
        j for j in result.judgements
        if j.verdict == Verdict.CONTINUE and not math.isfinite(j.lower) and not math.isfinite(j.upper)
        and j.judge == "latency"  # the others give bounds from their first events (or warm up)
    ]  # fmt: skip


NO_TARGET = "trigger.fired-no-target"
CLEARED = "trigger.cleared"
# The events that change a "triggers fire and there is no way back" incident's state: after
# one of them, a trigger that fires with no target again is news and gets its own event.
EPISODE_KINDS = (NO_TARGET, CLEARED, "rollback.started", "freeze", "freeze.lifted", "drill.started")


def no_target_signature(live: str, fired: list[triggers.TriggerResult]) -> str:
    """What makes two no-target firings the same state: the release and which triggers fired."""
    return live + ":" + ",".join(sorted(t.name for t in fired))


def emergency_asked(policy: Policy, fired: list[triggers.TriggerResult]) -> bool | None:
    """True when a fired trigger asks for an emergency rollback; None: the policy's mode."""
    modes = {t.name or t.kind: t.mode for t in policy.triggers}
    return True if any(modes.get(f.name) == "emergency" for f in fired) else None


class Detection(Commands):
    """Gates, triggers, and the automatic rollback or freeze they lead to."""

    def gate(
        self, op: Operation, spec: Any, candidate: str, baseline: str, since: float
    ) -> GateResult | None:
        """Evaluate the step's gate on telemetry since ``since``; None when the candidate has none."""
        per = self.batches(op.model, since)
        cand = per.get(candidate, [])
        base = per.get(baseline, [])
        if not cand:
            return None
        c, b = pair_by_time(cand, base)
        key = (op.id, op.step, op.phase.value)
        gate = self._gates.get(key)
        history: list[Batch] = []
        if gate is None:
            # One gate per operation at a time, and a bounded number in all: a gate holds
            # its window and the baseline's history, and an ended step's is never read
            # again (one dropped by the bound is rebuilt from the store, and judges alike).
            self.drop_gates(op.id)
            while len(self._gates) >= MAX_GATES:
                del self._gates[next(iter(self._gates))]  # the oldest
            gate = self._gates[key] = spec.build()
            past = self.batches(op.model, since - HISTORY_S, since).get(baseline, [])
            history = pair_by_time(past, past)[0] if past else []
        # The judges speak of "the candidate" and "the baseline": name the releases.
        result: GateResult = gate.evaluate(c, b, history=history).named(candidate, baseline)
        # Keep the latest verdict with the operation, for `backout status` and reports. Only
        # the verdict is ours to write: the rest of the state may have changed since this
        # tick read it (a pause records where it paused from).
        op.state.last_gate = {"at": self.clock(), "step": op.step, **result.to_dict()}
        with self.store.write() as conn:
            Operations.merge_state(conn, op.id, last_gate=op.state.last_gate)
        return result

    def fired_triggers(self, model: str, version: str, now: float, policy: Policy,
                       since: float = 0.0) -> list[triggers.TriggerResult]:  # fmt: skip
        """The policy's triggers that fire on ``version``'s traffic over their windows."""
        fired = []
        for t in policy.triggers:
            # Each window is read on its own: telemetry is merged per second after reading,
            # so cutting one wide read would drop the second the window starts in.
            start = max(now - t.window, since)
            per = self.batches(model, start)
            reference: list[Batch] = []
            if t.kind == "drift" or getattr(t, "use_judge", False):
                reference = self.batches(model, start - 10 * t.window, start).get(version, [])
            result = triggers.evaluate(
                t, per.get(version, []), reference=reference, metrics=self.metrics
            )
            if result.fired:
                fired.append(result)
        return fired

    def watch_idle(self, model: str, now: float) -> None:
        """A live model with no operation: roll it back when a trigger fires on it."""
        if self.frozen(model):
            return
        table = self.deployments.get(model)
        if table is None:
            return
        live = dominant(table.weights)
        policy = self.policy_for(model)
        fired = self.fired_triggers(model, live, now, policy)
        if not fired:
            self.no_target_cleared(model, live)
            return
        try:
            target = self.rollback_target(model, policy, exclude={live})
        except ModelNotFound:
            self.no_target(model, live, fired)
            return
        reason = "trigger: " + "; ".join(t.summary for t in fired)
        evidence = {"triggers": [t.to_dict() for t in fired]}
        try:
            # The live release is rolled back from because its trigger fired: it is bad.
            self.rollback(model, actor=self.actor, to=target, reason=reason, trigger=evidence,
                          emergency=emergency_asked(policy, fired), mark_bad=reason)  # fmt: skip
        except (ValidationError, ModelNotFound) as exc:
            # The live release is unhealthy and the way back is not safe either.
            self.freeze_model(model, f"{reason}; and no safe rollback: {exc.message}", evidence)

    def no_target(self, model: str, live: str, fired: list[triggers.TriggerResult]) -> None:
        """Record once that triggers fire on ``live`` with no release to roll back to.

        The tick sees the same thing twice a second for as long as it lasts: one event when
        the incident's state changes (these triggers start firing on this release), not one
        per tick, or the hash-chained log fills with copies (137 in 75 s, once).
        """
        signature = no_target_signature(live, fired)
        with self.store.write() as conn:
            last = audit.latest(conn, model, EPISODE_KINDS)
            if (
                last is not None
                and last.kind == NO_TARGET
                and last.data.get("signature") == signature
            ):
                self._no_target_open.add(model)
                return
            self.event(conn, NO_TARGET, model, self.actor,
                       "; ".join(t.summary for t in fired) + ": no known-good release to roll back to "
                       f"(mark one with `backout release mark-good {model}@VERSION`)",
                       {"triggers": [t.to_dict() for t in fired], "release": live,
                        "signature": signature})  # fmt: skip
        self._no_target_open.add(model)

    def no_target_cleared(self, model: str, live: str) -> None:
        """The triggers that fired with no way back stopped firing: say so, once."""
        if model not in self._no_target_open:
            return
        self._no_target_open.discard(model)
        with self.store.write() as conn:
            last = audit.latest(conn, model, EPISODE_KINDS)
            if last is None or last.kind != NO_TARGET:
                return
            self.event(conn, CLEARED, model, self.actor,
                       f"the triggers that fired on {live} with no rollback target stopped firing",
                       {"release": live})  # fmt: skip

    def trigger_rollback(self, op: Operation, fired: list[triggers.TriggerResult]) -> None:
        reason = "trigger: " + "; ".join(t.summary for t in fired)
        self.auto_rollback(op, reason, {"triggers": [t.to_dict() for t in fired]},
                           emergency=emergency_asked(op.policy, fired), mark_bad=reason)  # fmt: skip

    def gate_failed(self, op: Operation, result: GateResult) -> None:
        self.auto_rollback(
            op,
            f"gate failed at step {op.step + 1}: {result.summary}",
            {"gate": result.to_dict()},
            mark_bad=marks.gate_evidence(op.step + 1, result),
        )

    def auto_rollback(self, op: Operation, reason: str, trigger: dict[str, Any], *,
                      emergency: bool | None = None, mark_bad: str = "") -> None:  # fmt: skip
        """Roll ``op``'s model back to its stable release; freeze when that is not safe.

        ``mark_bad``: the failed gate's or trigger's evidence, kept on the release rolled
        back from. A stable release marked bad or quarantined since the operation started is
        no way back: the policy's target (the last known-good that is neither) is taken."""
        stable = self.registry.get(f"{op.model}@{op.stable}")
        to = op.stable if marks.usable_target(stable) else None
        try:
            self.rollback(op.model, actor=self.actor, to=to, reason=reason, trigger=trigger,
                          emergency=emergency, expect=op, mark_bad=mark_bad)  # fmt: skip
        except (ValidationError, ModelNotFound) as exc:
            # No safe way back (the target fails its checks): stop here and get a human.
            self.freeze(op, f"{reason}; and no safe rollback: {exc.message}", trigger)

    def act(self, op: Operation, action: Action, why: str, evidence: dict[str, Any]) -> None:
        """Do what the policy says for an inconclusive gate or missing data."""
        if action == Action.ROLLBACK:
            self.auto_rollback(op, f"{why}: the policy says roll back", {"gate": evidence})
        elif action == Action.ASK:
            with self.store.write() as conn:
                self.transition(conn, op, Event.DECISION_NEEDED, self.actor,
                                f"{why}: waiting for a human (`backout resume` or `backout rollback`)",
                                evidence, move=False)  # fmt: skip
                self.notify("phase", op.model, f"{op.model} needs a decision", why, op.id,
                            severity="warning", conn=conn)  # fmt: skip
        # WAIT: keep baking; the next tick looks again.

    def freeze(self, op: Operation, why: str, evidence: dict[str, Any]) -> None:
        """Halt ``op`` where it is and escalate: a rollback cannot fix this."""
        with self.store.write() as conn:
            Operations.add_freeze(conn, op.model, why, self.clock(), op.id)
            self.transition(conn, op, Event.FROZE, self.actor, why, evidence, move=False)
            self.notify("freeze", op.model, f"{op.model} is frozen", why, op.id,
                        severity="critical", conn=conn)  # fmt: skip
            self.alerts.escalation(conn, op, self.clock(), force=True)

    def freeze_model(self, model: str, why: str, evidence: dict[str, Any]) -> None:
        """Freeze a model that has no operation in progress (a trigger with no way back)."""
        with self.store.write() as conn:
            if not Operations.add_freeze(conn, model, why, self.clock(), None):
                return
            self.event(conn, "freeze", model, self.actor, why, evidence)
            self.notify(
                "freeze", model, f"{model} is frozen", why, 0, severity="critical", conn=conn
            )
