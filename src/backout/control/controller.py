"""The controller: gated rollouts, staged and emergency rollbacks, triggers and freeze.

An explicit state machine. Each model has at most one *operation* (a rollout or a
rollback) in progress; its phase, step, weights and counters live in the store. ``tick()``
re-reads that state, re-applies the weights, evaluates gates and triggers, and moves at
most one step. Every phase change goes through :meth:`Controller._transition`, which checks
the transition table, writes the route table and an event in the same transaction, and
notifies after commit. A controller killed at any moment resumes exactly where the last
one was, because nothing it needs lives only in memory.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from backout.control import preflight, triggers
from backout.control.alerts import Alerts
from backout.control.notify import Notice, Notifier
from backout.control.operations import (
    OPS,
    TERMINAL,
    TRANSITIONS,
    Operation,
    Phase,
    _active,
    _check_fresh,
    _clean,
    _dominant,
    _fmt_weights,
    _op,
    _split,
    _Stale,
    acquire_lease,
)
from backout.control.policy import Action, Policy, default_policy
from backout.errors import Conflict, Frozen, ModelNotFound, OperationInProgress, ValidationError
from backout.judges import GateResult, Verdict, pair_by_time
from backout.registry.releases import Registry
from backout.store import Store, audit, schema
from backout.telemetry.batches import Batch, read_batches
from backout.traffic.deployments import Deployments

log = logging.getLogger("backout.controller")


class Controller:
    """Drives every model's operation. Safe to run several; only the lease holder acts."""

    def __init__(
        self,
        store: Store,
        registry: Registry,
        *,
        notifier: Notifier | None = None,
        clock: Callable[[], float] = time.time,
        metrics: triggers.MetricSource | None = None,
        actor: str = "controller",
    ) -> None:
        self.store = store
        self.registry = registry
        self.deployments = Deployments(store, registry)
        self.notifier = notifier  # None: each model's policy names its webhooks
        self.alerts = Alerts(store, actor=actor, notifier=notifier)
        self._holder: str | None = None  # the lease this controller ticks under, in run()
        self.clock = clock
        self.metrics = metrics
        self.actor = actor
        self._gates: dict[tuple[int, int, str], Any] = {}
        self._policy_cache: dict[str, Policy] = {}

    # -- reading -----------------------------------------------------------------------

    def active(self, model: str) -> Operation | None:
        with self.store.read() as conn:
            return _active(conn, model)

    def operations(self, model: str, limit: int = 20) -> list[Operation]:
        with self.store.read() as conn:
            rows = conn.execute(
                sa.select(OPS).where(OPS.c.model == model).order_by(OPS.c.id.desc()).limit(limit)
            )
            return [_op(r) for r in rows]

    def operation(self, op_id: int) -> Operation:
        with self.store.read() as conn:
            row = conn.execute(sa.select(OPS).where(OPS.c.id == op_id)).first()
        if row is None:
            raise ModelNotFound(f"operation {op_id} does not exist")
        return _op(row)

    def policy_for(self, model: str) -> Policy:
        P = schema.policies
        with self.store.read() as conn:
            row = conn.execute(sa.select(P.c.policy).where(P.c.model == model)).first()
        return Policy.model_validate(row.policy) if row else default_policy(model)

    def frozen(self, model: str) -> str | None:
        F = schema.freezes
        with self.store.read() as conn:
            return conn.execute(sa.select(F.c.reason).where(F.c.model == model)).scalar()

    # -- commands ----------------------------------------------------------------------

    def set_policy(self, model: str, policy: Policy, *, source: str, actor: str) -> None:
        from datetime import UTC, datetime

        P = schema.policies
        with self.store.write() as conn:
            doc = policy.model_dump(mode="json")
            if conn.execute(sa.select(P.c.model).where(P.c.model == model)).first():
                conn.execute(
                    P.update()
                    .where(P.c.model == model)
                    .values(policy=doc, source=source, updated_at=datetime.now(UTC))
                )
            else:
                conn.execute(
                    P.insert().values(
                        model=model, policy=doc, source=source, updated_at=datetime.now(UTC)
                    )
                )
            audit.append(
                conn,
                "policy.set",
                model=model,
                actor=actor,
                reason=f"policy from {source}",
                data={"policy": doc},
            )

    def deploy(
        self,
        model: str,
        version: str,
        *,
        actor: str,
        policy: Policy | None = None,
        reason: str = "",
    ) -> Operation:
        """Start a gated rollout of ``model@version`` (or make it live if nothing is)."""
        self._refuse_if_frozen(model)
        policy = policy or self.policy_for(model)
        report = self.registry.verify(f"{model}@{version}")
        if not report.ok:
            raise ValidationError(
                f"{model}@{version} failed verification and cannot be deployed: {report.problems[0]}"
            )
        table = self.deployments.get(model)
        if table is not None:
            stable = _dominant(table.weights)
            checks = [preflight.compat_check(self.store, self.registry, model, stable, version),
                      preflight.replay_check(self.store, self.registry, model, version, policy.replay)]  # fmt: skip
            self._record_checks(model, actor, f"{model}@{version}", checks)
            failed = [c for c in checks if c.failed]
            if failed:
                raise ValidationError(
                    f"{model}@{version} cannot take {stable}'s traffic: "
                    + "; ".join(c.summary for c in failed)
                )
        now = self.clock()
        with self.store.write() as conn:
            self._refuse_if_busy(conn, model)
            if table is None:
                self.deployments.set_traffic(model, {version: 100}, actor=actor, reason=reason or f"first deploy of {model}@{version}",
                                             kind="deploy.first", verify=False, conn=conn)  # fmt: skip
                Registry.record_mark(
                    conn, model, version, actor=actor, reason="first release of the model"
                )
                return self._insert(
                    conn,
                    model,
                    "rollout",
                    Phase.SUCCEEDED,
                    version,
                    version,
                    {version: 100.0},
                    policy,
                    reason or "first deploy",
                    actor,
                    now,
                    ended=True,
                )
            stable = _dominant(table.weights)
            if stable == version:
                raise Conflict(f"{model}@{version} already takes most of the traffic")
            first = policy.rollout.steps[0]
            weights = _split(stable, version, first)
            op = self._insert(
                conn,
                model,
                "rollout",
                Phase.ROLLING_OUT,
                stable,
                version,
                weights,
                policy,
                reason or f"deploy {model}@{version}",
                actor,
                now,
            )
            self._apply(conn, op, actor, f"rollout step 1: {version} at {first:g}%")
            audit.append(conn, "rollout.started", model=model, actor=actor, reason=op.reason,
                         data={"operation": op.id, "stable": stable, "candidate": version, "steps": list(policy.rollout.steps)})  # fmt: skip
        self._notify(
            "phase",
            model,
            f"rollout of {model}@{version} started",
            f"{version} at {first:g}%, stable {stable}",
            op.id,
        )
        return op

    def rollback(self, model: str, *, actor: str, to: str | None = None, emergency: bool | None = None,
                 reason: str = "", trigger: dict[str, Any] | None = None,
                 expect: Operation | None = None) -> Operation:  # fmt: skip
        """Start a rollback of ``model`` to ``to`` (default: the policy's target).

        ``expect``: the operation a tick decided to roll back, as it read it; if it changed
        since, the decision is void (raises the tick's stale-state signal).
        """
        self._refuse_if_frozen(model)
        table = self.deployments.require(model)
        current = self.active(model)
        if current is not None and current.kind == "rollback":
            # Said first: otherwise the target search below reports a misleading reason.
            raise OperationInProgress(
                f"{model} is already rolling back to {current.target} (phase {current.phase.value})"
            )
        policy = current.policy if current else self.policy_for(model)
        live = {v: w / 100 for v, w in table.weights.items()}  # percent
        if current is not None and current.kind == "rollout":
            from_version = current.target
        else:
            from_version = _dominant(live)
        target = to or self._target(model, policy, exclude={from_version})
        if target == from_version:
            raise ValidationError(
                f"{model}@{target} is the release being rolled back from: name another with --to"
            )
        report = self.registry.verify(f"{model}@{target}")
        now = self.clock()
        mode = (
            "emergency" if emergency else (policy.rollback.mode if emergency is None else "staged")
        )
        if not report.ok:
            # Going back to a release whose bytes changed would trade one incident for another.
            raise ValidationError(
                f"rollback target {model}@{target} failed verification: {report.problems[0]}"
            )
        checks = [preflight.compat_check(self.store, self.registry, model, from_version, target)]
        if mode == "emergency" and policy.rollback.skip_replay_in_emergency:
            checks.append(
                preflight.Check(
                    "replay", "skipped", "emergency rollback: the policy skips the replay"
                )
            )
        else:
            checks.append(
                preflight.replay_check(self.store, self.registry, model, target, policy.replay)
            )
        self._record_checks(model, actor, f"{model}@{target}", checks)
        failed = [c for c in checks if c.failed]
        if failed:
            raise ValidationError(f"rollback target {model}@{target} cannot take {from_version}'s traffic: "
                                  + "; ".join(c.summary for c in failed))  # fmt: skip
        warm = self._warm_note(model, target)
        skip_gates = mode == "staged" and self._in_rollback_window(model, target, policy, now)
        with self.store.write() as conn:
            # The incident started at the request (``now``); its first step's bake starts when
            # traffic actually moves, after the checks above.
            moved_at = self.clock()
            cur = _active(conn, model)
            if expect is not None:
                _check_fresh(conn, expect)
            if cur is not None and cur.kind == "rollback":
                raise OperationInProgress(
                    f"{model} is already rolling back to {cur.target} (phase {cur.phase.value})"
                )
            if cur is not None:
                # The rollout ends here; the rollback is a new operation (its own incident).
                self._end(
                    conn, cur, Phase.ABORTED, actor, f"superseded by a rollback to {target}", {}
                )
            state = {"trigger": trigger, "mode": mode, "warm": warm, "from_weights": live,
                     "superseded": cur.id if cur is not None else None}  # fmt: skip
            if mode == "emergency" or skip_gates:
                weights = {target: 100.0}
                phase = Phase.VERIFYING
            else:
                first = next((s for s in policy.rollback.steps if s > live.get(target, 0.0)), 100.0)
                weights = _split(from_version, target, first) if first < 100 else {target: 100.0}
                phase = Phase.ROLLING_BACK if first < 100 else Phase.VERIFYING
            op = self._insert(conn, model, "rollback", phase, from_version, target, weights, policy,
                              reason or f"rollback to {target}", actor, now, state=state,
                step_at=moved_at)  # fmt: skip
            audit.append(conn, "rollback.started", model=model, actor=actor, reason=op.reason,
                         data={"operation": op.id, "from": from_version, "target": target, "mode": mode,
                               "trigger": trigger, "warm": warm, "skip_gates": skip_gates,
                               "weights_before": live})  # fmt: skip
            self._apply(conn, op, actor, f"{mode} rollback: {_fmt_weights(weights)}")
        self._notify("trigger" if trigger else "phase", model,
                                 f"{mode} rollback of {model} to {target} started",
                                 op.reason + (f" ({warm})" if warm else ""), op.id, severity="critical")  # fmt: skip
        return op

    def _record_checks(
        self, model: str, actor: str, ref: str, checks: list[preflight.Check]
    ) -> None:
        with self.store.write() as conn:
            for c in checks:
                audit.append(conn, f"{c.name}.{c.verdict}", model=model, actor=actor,
                             reason=f"{ref}: {c.summary}", data={"summary": c.summary, "verdict": c.verdict,
                                                                "check": c.name, "evidence": c.evidence})  # fmt: skip

    def abort(self, model: str, *, actor: str, reason: str = "") -> Operation:
        """Stop the operation: a rollout returns to stable, a rollback to where it came from."""
        with self.store.write() as conn:
            op = self._require_active(conn, model)
            if Phase.ABORTED not in TRANSITIONS[op.phase]:
                raise Conflict(_not_abortable(op))
            back = op.stable
            op.weights = {back: 100.0}
            self._apply(conn, op, actor, f"abort: all traffic back on {back}")
            self._end(
                conn, op, Phase.ABORTED, actor, reason or "aborted by hand", {"traffic": back}
            )
        self._notify(
            "abort",
            model,
            f"{op.kind} of {model} aborted",
            reason or f"traffic back on {back}",
            op.id,
            severity="warning",
        )
        return op

    def promote(self, model: str, *, actor: str, reason: str = "") -> Operation:
        """Skip a rollout's remaining steps: the candidate takes 100% and completes."""
        with self.store.write() as conn:
            op = self._require_active(conn, model)
            if op.kind != "rollout":
                raise Conflict(f"{model} is rolling back; there is nothing to promote")
            if op.phase == Phase.COMPLETING:
                raise Conflict(
                    f"{model}@{op.target} already takes all traffic and is completing: "
                    "nothing left to promote"
                )
            op.weights = {op.target: 100.0}
            self._transition(
                conn, op, Phase.COMPLETING, actor, reason or "promoted by hand", {}, new_step=True
            )
        return op

    def pause(self, model: str, *, actor: str, reason: str = "", forced: bool = False) -> Operation:
        with self.store.write() as conn:
            op = self._require_active(conn, model)
            if op.phase == Phase.PAUSED:
                return op
            op.state["paused_from"] = op.phase.value
            op.state["forced"] = forced
            self._transition(
                conn, op, Phase.PAUSED, actor, reason or "paused by hand", {}, apply=False
            )
        return op

    def resume(self, model: str, *, actor: str, reason: str = "") -> Operation:
        """Resume a paused operation, or approve one awaiting approval."""
        with self.store.write() as conn:
            op = self._require_active(conn, model)
            if op.phase == Phase.PAUSED:
                to = Phase(op.state.pop("paused_from", Phase.ROLLING_OUT.value))
                op.state.pop("forced", None)
                self._transition(
                    conn, op, to, actor, reason or "resumed by hand", {}, new_step=True
                )
            elif op.phase == Phase.AWAITING_APPROVAL:
                op.state["approved_step"] = op.step
                self._transition(
                    conn, op, Phase.ROLLING_OUT, actor, reason or "approved by hand", {}
                )
            else:
                raise Conflict(f"{model} is {op.phase.value}, not paused or awaiting approval")
        return op

    def unfreeze(self, model: str, *, actor: str, reason: str) -> None:
        """Lift a freeze. Only this command does."""
        F = schema.freezes
        with self.store.write() as conn:
            if conn.execute(sa.select(F.c.model).where(F.c.model == model)).first() is None:
                raise Conflict(f"{model} is not frozen")
            conn.execute(F.delete().where(F.c.model == model))
            op = _active(conn, model)
            if op is not None and op.phase == Phase.FROZEN:
                self._end(conn, op, Phase.UNFROZEN, actor, reason, {})
            audit.append(conn, "freeze.lifted", model=model, actor=actor, reason=reason)

    # -- the tick ----------------------------------------------------------------------

    def tick_all(self) -> list[Operation]:
        """One tick for every live model."""
        moved = []
        for model in self.deployments.models():
            try:
                op = self.tick(model)
            except Exception as exc:  # one model's trouble must not stop the others
                log.exception("tick of %s failed", model)
                with self.store.write() as conn:
                    audit.append(
                        conn,
                        "controller.error",
                        model=model,
                        actor=self.actor,
                        reason=f"{type(exc).__name__}: {exc}",
                    )
                continue
            if op is not None:
                moved.append(op)
        return moved

    def tick(self, model: str) -> Operation | None:
        """Re-read, re-apply, decide, and move at most one step. Safe to repeat."""
        now = self.clock()
        op = self.active(model)
        if op is None:
            try:
                self._watch_idle(model, now)
            except _Stale:
                log.info("%s: lease lost during the tick; writing nothing", model)
            return None
        if op.phase in (Phase.PAUSED, Phase.FROZEN):
            self._escalate(op, now)
            return op
        try:
            self._step(op, now)
        except _Stale:
            log.info("%s: operation %d changed during the tick; deciding again", model, op.id)
            return self.active(model)
        self._escalate(op, now)
        return self.active(model) or op

    def _step(self, op: Operation, now: float) -> None:
        table = self.deployments.get(op.model)
        if table is not None and {v: w / 100 for v, w in table.weights.items()} != _clean(
            op.weights
        ):
            with self.store.write() as conn:
                _check_fresh(conn, op)
                self._apply(
                    conn,
                    op,
                    self.actor,
                    "re-applied the operation's weights (the live table differed)",
                )
        if op.phase == Phase.ROLLING_OUT:
            self._tick_rollout(op, now)
        elif op.phase == Phase.COMPLETING:
            self._tick_completing(op, now)
        elif op.phase == Phase.ROLLING_BACK:
            self._tick_rolling_back(op, now)
        elif op.phase == Phase.VERIFYING:
            self._tick_verifying(op, now)

    def _batches(
        self, model: str, since: float, until: float | None = None
    ) -> dict[str, list[Batch]]:
        return read_batches(self.store, model, since=since, until=until)

    def _gate(
        self, op: Operation, spec: Any, candidate: str, baseline: str, since: float
    ) -> GateResult | None:
        per = self._batches(op.model, since)
        cand = per.get(candidate, [])
        base = per.get(baseline, [])
        if not cand:
            return None
        c, b = pair_by_time(cand, base)
        key = (op.id, op.step, op.phase.value)
        gate = self._gates.get(key)
        if gate is None:
            gate = self._gates[key] = spec.build()
        result: GateResult = gate.evaluate(c, b)
        # Keep the latest verdict with the operation, for `backout status` and reports.
        op.state["last_gate"] = {"at": self.clock(), "step": op.step, **result.to_dict()}
        with self.store.write() as conn:
            # Only the verdict is ours to write: the rest of the state may have changed since
            # this tick read it (a pause records where it paused from).
            stored = conn.execute(
                sa.select(OPS.c.state).where(OPS.c.id == op.id, OPS.c.ended_at.is_(None))
            ).scalar()
            if stored is not None:
                conn.execute(
                    OPS.update()
                    .where(OPS.c.id == op.id)
                    .values(state={**stored, "last_gate": op.state["last_gate"]})
                )
        return result

    def _tick_rollout(self, op: Operation, now: float) -> None:
        p = op.policy.rollout
        fired = self._fired_triggers(op.model, op.target, now, op.policy)
        if fired:
            self._trigger_rollback(op, fired)
            return
        result = self._gate(op, p.gate, op.target, op.stable, op.step_started_at)
        elapsed = now - op.step_started_at
        if result is None:
            if elapsed >= p.missing_data_after:
                self._act(
                    op, p.on_missing_data, f"no traffic reached {op.target} for {elapsed:.0f} s", {}
                )
            return
        evidence = result.to_dict()
        requests = max((j.samples for j in result.judgements), default=0)
        if result.verdict == Verdict.FAIL:
            self._gate_failed(op, result)
            return
        if result.verdict == Verdict.INCONCLUSIVE and op.state.get("approved_step") != op.step:
            self._act(op, p.on_inconclusive, result.summary, evidence)
            return
        if requests < p.min_requests:
            return
        approved = op.state.get("approved_step") == op.step
        # A gate that proved the candidate no worse moves on at once; one that has seen no
        # regression yet moves on once the bake time is over (the sequential test keeps
        # watching at the next step, so a late regression still fails it). But a step never
        # ends while a judge has not seen enough to say anything at all (the mean-latency
        # test needs a few blocks of batches before it has any bound): a bake shorter than
        # that would move traffic on before the test could look. The wait is capped.
        blind = blind_judges(result)
        baked = elapsed >= p.bake and (not blind or elapsed >= p.bake * HOLD_FACTOR)
        if result.verdict == Verdict.PASS or approved or baked:
            self._next_rollout_step(op, result)

    def _next_rollout_step(self, op: Operation, result: GateResult) -> None:
        steps = op.policy.rollout.steps
        with self.store.write() as conn:
            if op.step + 1 < len(steps) and steps[op.step + 1] < 100:
                op.step += 1
                op.weights = _split(op.stable, op.target, steps[op.step])
                self._transition(conn, op, Phase.ROLLING_OUT, self.actor,
                                 f"gate passed; step {op.step + 1}: {op.target} at {steps[op.step]:g}%",
                                 result.to_dict(), new_step=True)  # fmt: skip
            else:
                op.weights = {op.target: 100.0}
                self._transition(conn, op, Phase.COMPLETING, self.actor,
                                 f"gate passed; {op.target} takes all traffic", result.to_dict(), new_step=True)  # fmt: skip

    def _tick_completing(self, op: Operation, now: float) -> None:
        fired = self._fired_triggers(op.model, op.target, now, op.policy)
        if fired:
            self._trigger_rollback(op, fired)
            return
        if now - op.step_started_at >= op.policy.completion.rollout:
            with self.store.write() as conn:
                Registry.record_mark(
                    conn, op.model, op.target, actor=self.actor, reason=f"rollout {op.id} completed"
                )
                self._end(
                    conn,
                    op,
                    Phase.SUCCEEDED,
                    self.actor,
                    f"{op.target} healthy at 100% for {op.policy.completion.rollout:g} s",
                    {},
                )
            self._notify(
                "completed",
                op.model,
                f"rollout of {op.model}@{op.target} complete",
                "marked known-good",
                op.id,
            )

    def _tick_rolling_back(self, op: Operation, now: float) -> None:
        p = op.policy.rollback
        # The gate compares the target (as candidate) against the release it replaces.
        target_fired = self._fired_triggers(
            op.model, op.target, now, op.policy, since=op.step_started_at
        )
        if target_fired:
            self._target_unhealthy(
                op,
                "target tripped a trigger: " + "; ".join(t.summary for t in target_fired),
                {"triggers": [t.to_dict() for t in target_fired]},
            )
            return
        result = self._gate(op, p.gate, op.target, op.stable, op.step_started_at)
        elapsed = now - op.step_started_at
        if (
            result is not None
            and result.verdict == Verdict.FAIL
            and op.policy.termination.abort_rollback_if_target_worse
        ):
            self._target_unhealthy(
                op, f"the target does worse than {op.stable}: {result.summary}", result.to_dict()
            )
            return
        if elapsed < p.bake:
            return
        steps = [s for s in p.steps if s > op.weights.get(op.target, 0.0)]
        with self.store.write() as conn:
            evidence = result.to_dict() if result else {"note": "no traffic in the bake window"}
            if steps and steps[0] < 100:
                op.step += 1
                op.weights = _split(op.stable, op.target, steps[0])
                self._transition(
                    conn,
                    op,
                    Phase.ROLLING_BACK,
                    self.actor,
                    f"rollback step: {op.target} at {steps[0]:g}%",
                    evidence,
                    new_step=True,
                )
            else:
                op.weights = {op.target: 100.0}
                self._transition(
                    conn,
                    op,
                    Phase.VERIFYING,
                    self.actor,
                    f"all traffic on {op.target}; verifying",
                    evidence,
                    new_step=True,
                )

    def _tick_verifying(self, op: Operation, now: float) -> None:
        v = op.policy.rollback.verification
        fired = self._fired_triggers(op.model, op.target, now, op.policy, since=op.step_started_at)
        if fired:
            # The target failed its verification: do not flap back to a release that was
            # already unhealthy — halt where we are and get a human.
            self._freeze(
                op,
                f"rollback target {op.target} failed verification: "
                + "; ".join(t.summary for t in fired),
                {"triggers": [t.to_dict() for t in fired]},
            )
            return
        elapsed = now - op.step_started_at
        if elapsed < v.duration:
            return
        per = self._batches(op.model, op.step_started_at)
        served = sum(b.requests for b in per.get(op.target, []))
        if served < v.min_requests and elapsed < 3 * v.duration:
            return  # not enough traffic to call it verified yet
        with self.store.write() as conn:
            note = f"{op.target} healthy for {elapsed:.0f} s over {served:,} requests"
            if served < v.min_requests:
                note += (
                    f" (fewer than the {v.min_requests} the policy wants: verified on what came)"
                )
            self._end(
                conn,
                op,
                Phase.ROLLED_BACK,
                self.actor,
                note,
                {"requests": served, "seconds": elapsed},
            )
        self._notify(
            "completed",
            op.model,
            f"rollback of {op.model} to {op.target} complete",
            note,
            op.id,
        )

    # -- decisions ---------------------------------------------------------------------

    def _fired_triggers(
        self, model: str, version: str, now: float, policy: Policy, since: float = 0.0
    ) -> list[triggers.TriggerResult]:
        """The policy's triggers that fire on ``version``'s traffic over their windows."""
        fired = []
        for t in policy.triggers:
            # Each window is read on its own: telemetry is merged per second after reading,
            # so cutting one wide read would drop the second the window starts in.
            start = max(now - t.window, since)
            per = self._batches(model, start)
            reference: list[Batch] = []
            if t.kind == "drift" or getattr(t, "use_judge", False):
                reference = self._batches(model, start - 10 * t.window, start).get(version, [])
            result = triggers.evaluate(
                t, per.get(version, []), reference=reference, metrics=self.metrics
            )
            if result.fired:
                fired.append(result)
        return fired

    def _watch_idle(self, model: str, now: float) -> None:
        if self.frozen(model):
            return
        table = self.deployments.get(model)
        if table is None:
            return
        live = _dominant(table.weights)
        policy = self.policy_for(model)
        fired = self._fired_triggers(model, live, now, policy)
        if fired:
            try:
                target = self._target(model, policy, exclude={live})
            except ModelNotFound:
                with self.store.write() as conn:
                    audit.append(conn, "trigger.fired-no-target", model=model, actor=self.actor,
                                 reason="; ".join(t.summary for t in fired) + ": no known-good release to roll back to",
                                 data={"triggers": [t.to_dict() for t in fired]})  # fmt: skip
                return
            reason = "trigger: " + "; ".join(t.summary for t in fired)
            evidence = {"triggers": [t.to_dict() for t in fired]}
            try:
                self.rollback(model, actor=self.actor, to=target, reason=reason, trigger=evidence,
                              emergency=_emergency(policy, fired))  # fmt: skip
            except (ValidationError, ModelNotFound) as exc:
                # The live release is unhealthy and the way back is not safe either.
                self._freeze_model(
                    model, f"{reason}; and no safe rollback: {exc.message}", evidence
                )

    def _trigger_rollback(self, op: Operation, fired: list[triggers.TriggerResult]) -> None:
        reason = "trigger: " + "; ".join(t.summary for t in fired)
        self._auto_rollback(op, reason, {"triggers": [t.to_dict() for t in fired]},
                            emergency=_emergency(op.policy, fired))  # fmt: skip

    def _gate_failed(self, op: Operation, result: GateResult) -> None:
        self._auto_rollback(
            op, f"gate failed at step {op.step + 1}: {result.summary}", {"gate": result.to_dict()}
        )

    def _auto_rollback(
        self, op: Operation, reason: str, trigger: dict[str, Any], *, emergency: bool | None = None
    ) -> None:
        try:
            self.rollback(
                op.model,
                actor=self.actor,
                to=op.stable,
                reason=reason,
                trigger=trigger,
                emergency=emergency,
                expect=op,
            )
        except (ValidationError, ModelNotFound) as exc:
            # No safe way back (the target fails its checks): stop here and get a human.
            self._freeze(op, f"{reason}; and no safe rollback: {exc.message}", trigger)

    def _act(self, op: Operation, action: Action, why: str, evidence: dict[str, Any]) -> None:
        if action == Action.ROLLBACK:
            self._auto_rollback(op, f"{why}: the policy says roll back", {"gate": evidence})
        elif action == Action.ASK:
            with self.store.write() as conn:
                self._transition(
                    conn,
                    op,
                    Phase.AWAITING_APPROVAL,
                    self.actor,
                    f"{why}: waiting for a human (`backout resume` or `backout rollback`)",
                    evidence,
                    apply=False,
                )
            self._notify(
                "phase",
                op.model,
                f"{op.model} needs a decision",
                why,
                op.id,
                severity="warning",
            )
        # WAIT: keep baking; the next tick looks again.

    def _target_unhealthy(self, op: Operation, why: str, evidence: dict[str, Any]) -> None:
        triggered = bool(op.state.get("trigger"))
        if triggered and op.policy.freeze.on_both_unhealthy:
            # The release we left tripped a trigger and the target does no better: flapping
            # between two unhealthy releases helps nobody. Freeze and escalate.
            self._freeze(
                op, f"both releases unhealthy: {op.stable} tripped a trigger and {why}", evidence
            )
            return
        with self.store.write() as conn:
            op.weights = {op.stable: 100.0}
            self._apply(conn, op, self.actor, f"rollback aborted: traffic back on {op.stable}")
            self._end(conn, op, Phase.ABORTED, self.actor, f"rollback aborted: {why}", evidence)
            escalation = self._escalation(conn, op, self.clock(), force=True)
        self._notify(
            "abort",
            op.model,
            f"rollback of {op.model} to {op.target} aborted",
            why,
            op.id,
            severity="critical",
        )
        if escalation is not None:
            self._send(op.model, op.policy, escalation)

    def _freeze(self, op: Operation, why: str, evidence: dict[str, Any]) -> None:
        F = schema.freezes
        with self.store.write() as conn:
            if conn.execute(sa.select(F.c.model).where(F.c.model == op.model)).first() is None:
                conn.execute(
                    F.insert().values(
                        model=op.model, reason=why, at=self.clock(), operation_id=op.id
                    )
                )
            self._transition(conn, op, Phase.FROZEN, self.actor, why, evidence, apply=False)
            escalation = self._escalation(conn, op, self.clock(), force=True)
        self._notify("freeze", op.model, f"{op.model} is frozen", why, op.id, severity="critical")
        if escalation is not None:
            self._send(op.model, op.policy, escalation)

    def _freeze_model(self, model: str, why: str, evidence: dict[str, Any]) -> None:
        """Freeze a model that has no operation in progress (a trigger with no way back)."""
        F = schema.freezes
        with self.store.write() as conn:
            if conn.execute(sa.select(F.c.model).where(F.c.model == model)).first() is not None:
                return
            conn.execute(
                F.insert().values(model=model, reason=why, at=self.clock(), operation_id=None)
            )
            audit.append(conn, "freeze", model=model, actor=self.actor, reason=why, data=evidence)
        self._notify("freeze", model, f"{model} is frozen", why, 0, severity="critical")

    def _escalate(self, op: Operation, now: float, *, force: bool = False) -> None:
        """Call the next contact when recovery is late (or at once, with ``force``)."""
        with self.store.write() as conn:
            notice = self._escalation(conn, op, now, force=force)
        if notice is not None:
            self._send(op.model, op.policy, notice)

    def _escalation(
        self, conn: Connection, op: Operation, now: float, *, force: bool = False
    ) -> Notice | None:
        return self.alerts.escalation(conn, op, now, force=force)

    # -- mechanics ---------------------------------------------------------------------

    def _transition(self, conn: Connection, op: Operation, to: Phase, actor: str, reason: str,
                    evidence: Mapping[str, Any], *, new_step: bool = False, apply: bool = True) -> None:  # fmt: skip
        """The one place a phase changes: checked, applied, recorded, in the caller's write."""
        if to not in TRANSITIONS[op.phase]:
            raise Conflict(f"{op.model}: cannot go from {op.phase.value} to {to.value}")
        before, seen = op.phase, op.updated_at
        op.phase = to
        now = self.clock()
        if new_step:
            op.step_started_at = now
        op.updated_at = now
        if to in TERMINAL:
            op.ended_at = now
            op.outcome = to.value
        # Only if the operation is still as this controller read it: a tick decides on what
        # it read before this write began, and a command from another process (pause, abort)
        # may have landed in between; writing over it would undo the command.
        self._fence(conn)
        written = conn.execute(OPS.update().where(
            OPS.c.id == op.id, OPS.c.phase == before.value, OPS.c.updated_at == seen, OPS.c.ended_at.is_(None),
        ).values(
            phase=op.phase.value, step=op.step, weights=op.weights, state=op.state,
            step_started_at=op.step_started_at, updated_at=now, ended_at=op.ended_at, outcome=op.outcome,
        )).rowcount  # fmt: skip
        if written != 1:
            raise _Stale(op.id)
        if apply and to not in (Phase.FROZEN, Phase.PAUSED):
            self._apply(conn, op, actor, reason)
        audit.append(conn, f"phase.{to.value}", model=op.model, actor=actor, reason=reason,
                     data={"operation": op.id, "kind": op.kind, "from": before.value, "to": to.value,
                           "step": op.step, "weights": op.weights, "evidence": dict(evidence)})  # fmt: skip
        if to != before:
            self._notify("phase", op.model, f"{op.model} {op.kind}: {to.value}", reason, op.id,
                                     severity="critical" if to == Phase.FROZEN else "info")  # fmt: skip

    def _end(
        self,
        conn: Connection,
        op: Operation,
        to: Phase,
        actor: str,
        reason: str,
        evidence: Mapping[str, Any],
    ) -> None:
        self._transition(conn, op, to, actor, reason, evidence, apply=False)

    def _fence(self, conn: Connection) -> None:
        """Refuse to write for a controller whose lease has lapsed (fencing).

        A controller paused rather than killed (a long GC pause, a stopped process) may wake
        after its lease expired and another controller took it over; its tick must not write.
        Commands run by people (no holder) are not fenced.
        """
        if self._holder is None:
            return
        L = schema.leases
        row = conn.execute(
            sa.select(L.c.holder, L.c.expires_at).where(L.c.name == "controller")
        ).first()
        # Only another holder fences us out: a lease that merely ran out during a long tick
        # (a big replay) with no one taking over still belongs to this controller.
        if row is not None and row.holder != self._holder:
            raise _Stale(0)

    def _apply(self, conn: Connection, op: Operation, actor: str, reason: str) -> None:
        self._fence(conn)
        self.deployments.set_traffic(op.model, op.weights, actor=actor, reason=reason, kind="traffic.applied",
                                     data={"operation": op.id}, verify=False, conn=conn)  # fmt: skip

    def _insert(self, conn: Connection, model: str, kind: str, phase: Phase, stable: str, target: str,
                weights: dict[str, float], policy: Policy, reason: str, actor: str, now: float, *,
                state: dict[str, Any] | None = None, ended: bool = False,
                step_at: float | None = None) -> Operation:  # fmt: skip
        values = dict(model=model, kind=kind, phase=phase.value, step=0, stable=stable, target=target,
                      weights=weights, state=state or {}, policy=policy.model_dump(mode="json"), reason=reason,
                      actor=actor, started_at=now, step_started_at=step_at or now, updated_at=now,
                      ended_at=now if ended else None, outcome=phase.value if ended else None)  # fmt: skip
        key = conn.execute(OPS.insert().values(**values)).inserted_primary_key
        assert key is not None
        op_id = key[0]
        return Operation(id=int(op_id), model=model, kind=kind, phase=phase, step=0, stable=stable, target=target,
                         weights=weights, state=state or {}, policy=policy, reason=reason, actor=actor,
                         started_at=now, step_started_at=step_at or now, updated_at=now,
                         ended_at=now if ended else None, outcome=phase.value if ended else None)  # fmt: skip

    def _target(self, model: str, policy: Policy, exclude: set[str]) -> str:
        if policy.rollback.target != "last-known-good":
            return str(policy.rollback.target)
        for rel in self.registry.list(model, known_good=True):
            if rel.version not in exclude and not rel.quarantined:
                return rel.version
        raise ModelNotFound(
            f"{model} has no known-good release to roll back to: mark one with `backout release mark-good`"
        )

    def _in_rollback_window(self, model: str, target: str, policy: Policy, now: float) -> bool:
        window = policy.rollback.window
        if window <= 0:
            return False
        rel = self.registry.get(f"{model}@{target}")
        if not rel.known_good:
            return False
        marks = [m for m in self.registry.marks(rel.ref) if m.action == "mark"]
        return bool(marks) and now - marks[-1].at.timestamp() <= window

    def _warm_note(self, model: str, target: str) -> str:
        known = [r.version for r in self.registry.list(model, known_good=True)[:2]]
        table = self.deployments.get(model)
        if target in known or (table is not None and target in table.versions):
            return ""
        return f"{target} is not a warm rollback point: gateways load it before switching"

    def _refuse_if_frozen(self, model: str) -> None:
        why = self.frozen(model)
        if why:
            raise Frozen(
                f"{model} is frozen ({why}): lift it with `backout unfreeze {model} --reason ...`"
            )

    def _refuse_if_busy(self, conn: Connection, model: str) -> None:
        cur = _active(conn, model)
        if cur is not None:
            raise OperationInProgress(
                f"{model} already has a {cur.kind} in progress ({cur.phase.value}, target {cur.target}): abort it first"
            )

    def _require_active(self, conn: Connection, model: str) -> Operation:
        op = _active(conn, model)
        if op is None:
            raise Conflict(f"{model} has no rollout or rollback in progress")
        return op

    def _notify(
        self, kind: str, model: str, title: str, text: str, op_id: int, *, severity: str = "info"
    ) -> None:
        policy = self._policy_cache.get(model) or self.policy_for(model)
        self.alerts.notify(kind, model, title, text, op_id, policy=policy, severity=severity)

    def _send(self, model: str, policy: Policy, notice: Notice) -> None:
        self.alerts.send(model, policy, notice)

    def close(self) -> None:
        """Drain pending notifications (at shutdown)."""
        self.alerts.close()

    # -- running -----------------------------------------------------------------------

    def run(
        self,
        stop: threading.Event,
        *,
        interval: float = 0.5,
        holder: str | None = None,
        lease_s: float = 5.0,
    ) -> None:
        """Tick every ``interval`` while holding the store's controller lease."""
        import os
        import socket

        holder = holder or f"{socket.gethostname()}:{os.getpid()}"
        self._holder = holder
        threading.Thread(
            target=self.warm_preflight, name="backout-controller-warm", daemon=True
        ).start()
        while not stop.is_set():
            try:
                if acquire_lease(self.store, "controller", holder, lease_s, self.clock()):
                    self.tick_all()
            except Exception:  # a store that is briefly unreachable must not end the controller
                log.exception("controller loop failed; retrying in %.1f s", max(interval, 1.0))
                stop.wait(max(interval, 1.0))
            stop.wait(interval)

    def warm_preflight(self) -> None:
        """Load every model's rollback points once and drop them, ahead of any incident.

        A pre-flight replay loads the target in this process. The first one used to pay for
        importing the runtime's libraries (scikit-learn and what it unpickles): 6 to 9 s on a
        loaded 2-core machine, all of it before a staged rollback's first step could move
        traffic. Doing it at start leaves the imports cached; the models themselves are freed.
        """
        import asyncio

        from backout.registry.manifest import RuntimeKind
        from backout.runtimes import load_release

        try:
            models = self.deployments.models()
        except Exception:  # warming is an optimisation: never let it take the controller down
            log.warning("could not list models to warm the pre-flight", exc_info=True)
            return
        for model in models:
            try:
                releases = self.registry.list(model, known_good=True)[:2]
            except Exception:
                log.warning("could not list %s's rollback points to warm", model, exc_info=True)
                continue
            for rel in releases:
                if rel.manifest.runtime.kind == RuntimeKind.HTTP:
                    continue  # an upstream server: nothing to import or load here
                try:
                    predictor = load_release(rel.manifest, self.registry.blobs)
                    asyncio.run(predictor.aclose())
                except Exception:  # its own pre-flight will fail and say why, in the timeline
                    log.warning("could not warm %s", rel.ref, exc_info=True)


def _not_abortable(op: Operation) -> str:
    if op.phase == Phase.FROZEN:
        return f"{op.model} is frozen: lift it with `backout unfreeze {op.model} --reason ...`"
    return (
        f"{op.model}'s rollback is {op.phase.value} {op.target} with all traffic on it and "
        "cannot be aborted: wait for its verification to end, then deploy the release you want"
    )


HOLD_FACTOR = 4  # a step waits at most this many bakes for a judge that cannot see yet


def blind_judges(result: GateResult) -> list[Any]:
    """Judges that have no bound on either side yet: they have not seen enough to speak."""
    return [
        j for j in result.judgements
        if j.verdict == Verdict.CONTINUE and not math.isfinite(j.lower) and not math.isfinite(j.upper)
        and j.judge == "latency"  # the others give bounds from their first events (or warm up)
    ]  # fmt: skip


def _emergency(policy: Policy, fired: list[triggers.TriggerResult]) -> bool | None:
    """True when a fired trigger asks for an emergency rollback; None: the policy's mode."""
    modes = {t.name or t.kind: t.mode for t in policy.triggers}
    return True if any(modes.get(f.name) == "emergency" for f in fired) else None
