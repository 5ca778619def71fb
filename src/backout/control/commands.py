"""What people (and the controller's own decisions) ask of the controller.

Deploy, roll back, abort, promote, pause, resume, unfreeze, set a policy, and set traffic by
hand. Each command checks what it needs before it writes anything, then changes phase only
through the state machine's table, in one transaction with its route table and events; a
refused command leaves the store as it was.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy.engine import Connection

from backout.control import capabilities, preflight
from backout.control.base import ControllerBase
from backout.control.operations import Operation, Operations, OperationState
from backout.control.phases import RESUMED, Event, Phase, allows
from backout.control.policy import Policy
from backout.control.weights import dominant, fmt_weights, next_rollback_step, split
from backout.errors import Conflict, Frozen, ModelNotFound, OperationInProgress, ValidationError
from backout.registry import signing
from backout.traffic.router import Capability
from backout.traffic.routes import RouteTable


class Commands(ControllerBase):
    """The commands: each one checked, then written in one transaction."""

    def set_policy(self, model: str, policy: Policy, *, source: str, actor: str) -> None:
        """Store ``policy`` as the model's runbook (refused if its router cannot carry it)."""
        capabilities.check(policy, self.router.name, self.router.capabilities)
        doc = policy.model_dump(mode="json")
        with self.store.write() as conn:
            Operations.save_policy(conn, model, doc, source)
            self.event(conn, "policy.set", model, actor, f"policy from {source}", {"policy": doc})

    def deploy(self, model: str, version: str, *, actor: str, policy: Policy | None = None,
               reason: str = "") -> Operation:  # fmt: skip
        """Start a gated rollout of ``model@version`` (or make it live if nothing is)."""
        self.refuse_if_frozen(model)
        policy = policy or self.policy_for(model)
        capabilities.check(policy, self.router.name, self.router.capabilities)
        report = self.registry.verify(f"{model}@{version}")
        if not report.ok:
            raise ValidationError(
                f"{model}@{version} failed verification and cannot be deployed: {report.problems[0]}"
            )
        signing.require_signed(self.store, f"{model}@{version}", required=policy.signing.required,
                               why=f"{model}@{version} cannot be deployed")  # fmt: skip
        table = self.deployments.get(model)
        if table is not None:
            stable = dominant(table.weights)
            checks = [preflight.compat_check(self.store, self.registry, model, stable, version),
                      preflight.replay_check(self.store, self.registry, model, version, policy.replay)]  # fmt: skip
            self.record_checks(model, actor, f"{model}@{version}", checks)
            failed = [c for c in checks if c.failed]
            if failed:
                raise ValidationError(
                    f"{model}@{version} cannot take {stable}'s traffic: "
                    + "; ".join(c.summary for c in failed)
                )
        now = self.clock()
        with self.store.write() as conn:
            self.refuse_if_busy(conn, model)
            if table is None:
                self.deployments.set_traffic(model, {version: 100}, actor=actor, reason=reason or f"first deploy of {model}@{version}",
                                             kind="deploy.first", verify=False, conn=conn)  # fmt: skip
                self.registry.record_mark(conn, model, version, actor=actor,
                                          reason="first release of the model", at=now)  # fmt: skip
                return self.start(conn, model, "rollout", Event.FIRST_DEPLOY, version, version,
                                  {version: 100.0}, policy, reason or "first deploy", actor, now)  # fmt: skip
            stable = dominant(table.weights)
            if stable == version:
                raise Conflict(f"{model}@{version} already takes most of the traffic")
            first = policy.rollout.steps[0]
            op = self.start(conn, model, "rollout", Event.ROLLOUT_STARTED, stable, version,
                            split(stable, version, first), policy, reason or f"deploy {model}@{version}",
                            actor, now)  # fmt: skip
            self.apply(conn, op, actor, f"rollout step 1: {version} at {first:g}%")
            self.event(conn, "rollout.started", model, actor, op.reason,
                       {"operation": op.id, "stable": stable, "candidate": version,
                        "steps": list(policy.rollout.steps)})  # fmt: skip
            self.notify("phase", model, f"rollout of {model}@{version} started",
                        f"{version} at {first:g}%, stable {stable}", op.id, conn=conn)  # fmt: skip
        self.push(model)
        return op

    def rollback(self, model: str, *, actor: str, to: str | None = None, emergency: bool | None = None,
                 reason: str = "", trigger: dict[str, Any] | None = None,
                 expect: Operation | None = None) -> Operation:  # fmt: skip
        """Start a rollback of ``model`` to ``to`` (default: the policy's target).

        ``expect``: the operation a tick decided to roll back, as it read it; if it changed
        since, the decision is void (raises the tick's stale-state signal).
        """
        self.refuse_if_frozen(model)
        table = self.deployments.require(model)
        current = self.active(model)
        if current is not None and current.kind == "rollback":
            # Said first: otherwise the target search below reports a misleading reason.
            raise OperationInProgress(
                f"{model} is already rolling back to {current.target} (phase {current.phase.value})"
            )
        policy = current.policy if current else self.policy_for(model)
        live = {v: w / 100 for v, w in table.weights.items()}  # percent
        from_version = current.target if current is not None else dominant(live)
        target = to or self.rollback_target(model, policy, exclude={from_version})
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
        signing.require_signed(self.store, f"{model}@{target}", required=policy.signing.required,
                               why=f"rollback target {model}@{target} refused")  # fmt: skip
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
        self.record_checks(model, actor, f"{model}@{target}", checks)
        failed = [c for c in checks if c.failed]
        if failed:
            raise ValidationError(f"rollback target {model}@{target} cannot take {from_version}'s traffic: "
                                  + "; ".join(c.summary for c in failed))  # fmt: skip
        warm = self.warm_note(model, target)
        skip_gates = mode == "staged" and self.in_rollback_window(model, target, policy, now)
        with self.store.write() as conn:
            # The incident started at the request (``now``); its first step's bake starts when
            # traffic actually moves, after the checks above.
            moved_at = self.clock()
            cur = Operations.active_in(conn, model)
            if expect is not None:
                Operations.check_fresh(conn, expect)
            if cur is not None and cur.kind == "rollback":
                raise OperationInProgress(
                    f"{model} is already rolling back to {cur.target} (phase {cur.phase.value})"
                )
            if cur is not None:
                # The rollout ends here; the rollback is a new operation (its own incident).
                self.transition(conn, cur, Event.SUPERSEDED, actor,
                                f"superseded by a rollback to {target}", {}, move=False)  # fmt: skip
            state = OperationState(trigger=trigger, mode=mode, warm=warm, from_weights=live,
                                   superseded=cur.id if cur is not None else None,
                                   skip_gates=skip_gates)  # fmt: skip
            first = 100.0 if mode == "emergency" or skip_gates else next_rollback_step(
                list(policy.rollback.steps), live.get(target, 0.0))  # fmt: skip
            if first < 100:
                event, weights = Event.ROLLBACK_STARTED, split(from_version, target, first)
            else:
                event, weights = Event.ROLLBACK_STARTED_AT_ONCE, {target: 100.0}
            op = self.start(conn, model, "rollback", event, from_version, target, weights, policy,
                            reason or f"rollback to {target}", actor, now, state=state, step_at=moved_at)  # fmt: skip
            self.event(conn, "rollback.started", model, actor, op.reason,
                       {"operation": op.id, "from": from_version, "target": target, "mode": mode,
                        "trigger": trigger, "warm": warm, "skip_gates": skip_gates,
                        "weights_before": live})  # fmt: skip
            self.apply(conn, op, actor, f"{mode} rollback: {fmt_weights(weights)}")
            self.notify("trigger" if trigger else "phase", model, f"{mode} rollback of {model} to {target} started",
                        op.reason + (f" ({warm})" if warm else ""), op.id, severity="critical", conn=conn)  # fmt: skip
        self.push(model)
        return op

    def abort(self, model: str, *, actor: str, reason: str = "") -> Operation:
        """Stop the operation: a rollout returns to stable, a rollback to where it came from."""
        with self.store.write() as conn:
            op = self.require_active(conn, model)
            if not allows(op.phase, Event.ABORTED) or op.state.paused_from == Phase.VERIFYING:
                raise Conflict(not_abortable(op))
            back = op.stable
            op.weights = {back: 100.0}
            self.apply(conn, op, actor, f"abort: all traffic back on {back}")
            self.transition(conn, op, Event.ABORTED, actor, reason or "aborted by hand",
                            {"traffic": back}, move=False)  # fmt: skip
            self.notify("abort", model, f"{op.kind} of {model} aborted", reason or f"traffic back on {back}",
                        op.id, severity="warning", conn=conn)  # fmt: skip
        self.push(model)
        return op

    def promote(self, model: str, *, actor: str, reason: str = "") -> Operation:
        """Skip a rollout's remaining steps: the candidate takes 100% and completes."""
        with self.store.write() as conn:
            op = self.require_active(conn, model)
            if op.kind != "rollout":
                raise Conflict(f"{model} is rolling back; there is nothing to promote")
            if op.phase == Phase.COMPLETING:
                raise Conflict(
                    f"{model}@{op.target} already takes all traffic and is completing: "
                    "nothing left to promote"
                )
            op.weights = {op.target: 100.0}
            op.state.paused_from = None
            op.state.forced = False
            self.transition(conn, op, Event.PROMOTED, actor, reason or "promoted by hand", {},
                            new_step=True)  # fmt: skip
        self.push(model)
        return op

    def pause(self, model: str, *, actor: str, reason: str = "", forced: bool = False) -> Operation:
        """Hold the operation where it is: nothing moves until it is resumed."""
        with self.store.write() as conn:
            op = self.require_active(conn, model)
            self.pause_in(conn, op, actor, reason or "paused by hand", forced=forced)
        return op

    def pause_in(
        self, conn: Connection, op: Operation, actor: str, reason: str, *, forced: bool
    ) -> None:
        if op.phase == Phase.PAUSED:
            return
        if not allows(op.phase, Event.PAUSED):
            raise Conflict(f"{op.model} is {op.phase.value}: it cannot be paused")
        op.state.paused_from = op.phase
        op.state.forced = forced
        self.transition(conn, op, Event.PAUSED, actor, reason, {}, move=False)

    def resume(self, model: str, *, actor: str, reason: str = "") -> Operation:
        """Resume a paused operation, or approve one awaiting approval."""
        with self.store.write() as conn:
            op = self.require_active(conn, model)
            if op.phase == Phase.PAUSED:
                back = op.state.paused_from or Phase.ROLLING_OUT
                op.state.paused_from = None
                op.state.forced = False
                self.transition(conn, op, RESUMED[back], actor, reason or "resumed by hand", {},
                                new_step=True)  # fmt: skip
            elif op.phase == Phase.AWAITING_APPROVAL:
                op.state.approved_step = op.step
                self.transition(conn, op, Event.APPROVED, actor, reason or "approved by hand", {})
            else:
                raise Conflict(f"{model} is {op.phase.value}, not paused or awaiting approval")
        self.push(model)
        return op

    def unfreeze(self, model: str, *, actor: str, reason: str) -> None:
        """Lift a freeze. Only this command does."""
        with self.store.write() as conn:
            if not Operations.remove_freeze(conn, model):
                raise Conflict(f"{model} is not frozen")
            op = Operations.active_in(conn, model)
            if op is not None and op.phase == Phase.FROZEN:
                self.transition(conn, op, Event.UNFROZE, actor, reason, {}, move=False)
            self.event(conn, "freeze.lifted", model, actor, reason)

    def set_traffic(self, model: str, weights: Mapping[str, float], *, actor: str, reason: str = "",
                    shadow: tuple[str, float] | None = None, pins: Mapping[str, str] | None = None,
                    force: bool = False) -> RouteTable:  # fmt: skip
        """Set a model's traffic by hand. A running operation would fight the change, so it is
        refused, or with ``force`` the operation is paused (as forced) in the same write."""
        self.refuse_if_frozen(model)
        if pins and Capability.PINS not in self.router.capabilities:
            raise ValidationError(f"the {self.router.name} router cannot pin keys: drop --pin")
        if shadow and shadow[1] > 0 and Capability.MIRRORING not in self.router.capabilities:
            raise ValidationError(
                f"the {self.router.name} router cannot mirror traffic: drop --shadow"
            )
        # Bad input is refused before anything else: --force must not pause an operation for
        # a route change that is then rejected.
        self.deployments.check_traffic(model, weights, shadow=shadow, pins=pins)
        with self.store.write() as conn:
            op = Operations.active_in(conn, model)
            if op is not None and op.phase != Phase.PAUSED:
                if not force:
                    raise OperationInProgress(
                        f"{model} has a {op.kind} in progress ({op.phase.value}): traffic set by hand would "
                        "fight it; `backout pause` it first or pass --force (which pauses it)"
                    )
                shown = " ".join(f"{v}={w:g}" for v, w in weights.items())
                self.pause_in(conn, op, actor, f"traffic forced by hand: {shown}", forced=True)
            table = self.deployments.set_traffic(model, weights, shadow=shadow, pins=pins, actor=actor,
                                                 reason=reason, conn=conn)  # fmt: skip
        self.push(model)
        return table

    # -- what the commands check -------------------------------------------------------

    def record_checks(
        self, model: str, actor: str, ref: str, checks: list[preflight.Check]
    ) -> None:
        with self.store.write() as conn:
            for c in checks:
                self.event(conn, f"{c.name}.{c.verdict}", model, actor, f"{ref}: {c.summary}",
                           {"summary": c.summary, "verdict": c.verdict, "check": c.name,
                            "evidence": c.evidence})  # fmt: skip

    def rollback_target(self, model: str, policy: Policy, exclude: set[str]) -> str:
        """The release a rollback goes to when none is named: the policy's, or last-known-good."""
        if policy.rollback.target != "last-known-good":
            return str(policy.rollback.target)
        for rel in self.registry.list(model, known_good=True):
            if rel.version not in exclude and not rel.quarantined:
                return rel.version
        raise ModelNotFound(
            f"{model} has no known-good release to roll back to: mark one with `backout release mark-good`"
        )

    def in_rollback_window(self, model: str, target: str, policy: Policy, now: float) -> bool:
        """Whether ``target`` became known-good recently enough to skip a staged rollback's gates."""
        window = policy.rollback.window
        if window <= 0:
            return False
        rel = self.registry.get(f"{model}@{target}")
        if not rel.known_good:
            return False
        marks = [m for m in self.registry.marks(rel.ref) if m.action == "mark"]
        return bool(marks) and now - marks[-1].at.timestamp() <= window

    def warm_note(self, model: str, target: str) -> str:
        known = [r.version for r in self.registry.list(model, known_good=True)[:2]]
        table = self.deployments.get(model)
        if target in known or (table is not None and target in table.versions):
            return ""
        return f"{target} is not a warm rollback point: gateways load it before switching"

    def refuse_if_frozen(self, model: str) -> None:
        why = self.frozen(model)
        if why:
            raise Frozen(
                f"{model} is frozen ({why}): lift it with `backout unfreeze {model} --reason ...`"
            )

    @staticmethod
    def refuse_if_busy(conn: Connection, model: str) -> None:
        cur = Operations.active_in(conn, model)
        if cur is not None:
            raise OperationInProgress(
                f"{model} already has a {cur.kind} in progress ({cur.phase.value}, target {cur.target}): abort it first"
            )

    @staticmethod
    def require_active(conn: Connection, model: str) -> Operation:
        op = Operations.active_in(conn, model)
        if op is None:
            raise Conflict(f"{model} has no rollout or rollback in progress")
        return op


def not_abortable(op: Operation) -> str:
    """Why ``op`` cannot be aborted, and what to do instead."""
    if op.phase == Phase.FROZEN:
        return f"{op.model} is frozen: lift it with `backout unfreeze {op.model} --reason ...`"
    return (
        f"{op.model}'s rollback is {Phase.VERIFYING.value} {op.target} with all traffic on it and "
        "cannot be aborted: wait for its verification to end, then deploy the release you want"
    )
