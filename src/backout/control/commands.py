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

from backout.control import capabilities, marks, preflight
from backout.control.base import ControllerBase
from backout.control.operations import Operation, Operations, OperationState
from backout.control.phases import RESUMED, Event, Phase, allows
from backout.control.policy import Policy
from backout.control.weights import dominant, fmt_weights, next_rollback_step, split
from backout.errors import (
    Conflict,
    Frozen,
    ModelNotFound,
    OperationInProgress,
    ReleaseMarkedBad,
    ValidationError,
)
from backout.registry import badmarks, signing
from backout.registry.manifest import parse_ref
from backout.registry.releases import Release
from backout.traffic.livestate import announce_warm
from backout.traffic.router import Capability
from backout.traffic.routes import RouteTable


class Commands(ControllerBase):
    """The commands: each one checked, then written in one transaction."""

    def set_policy(self, model: str, policy: Policy, *, source: str, actor: str) -> None:
        """Store ``policy`` as the model's runbook (refused if its router cannot carry it)."""
        capabilities.check(policy, *self.router_kind(model, policy))
        doc = policy.model_dump(mode="json")
        with self.store.write() as conn:
            Operations.save_policy(conn, model, doc, source)
            self.event(conn, "policy.set", model, actor, f"policy from {source}", {"policy": doc})

    def deploy(self, model: str, version: str, *, actor: str, policy: Policy | None = None,
               reason: str = "", override_bad: bool = False) -> Operation:  # fmt: skip
        """Start a gated rollout of ``model@version`` (or make it live if nothing is).

        A release marked bad is refused unless ``override_bad`` with a ``reason``, which is
        audited in the same write as the rollout's start."""
        self.refuse_if_frozen(model)
        rel = self.registry.get(f"{model}@{version}")
        overridden = marks.deploy_override(rel, override_bad, reason)
        policy = policy or self.policy_for(model)
        capabilities.check(policy, *self.router_kind(model, policy))
        report = self.registry.verify(f"{model}@{version}")
        if not report.ok:
            raise ValidationError(
                f"{model}@{version} failed verification and cannot be deployed: {report.problems[0]}"
            )
        signing.require_signed(self.store, f"{model}@{version}", required=policy.signing.required,
                               why=f"{model}@{version} cannot be deployed")  # fmt: skip
        # Replicas load the release while the checks below run, so the route change that
        # moves traffic to it does not wait on their loads (a hint: they load it then anyway).
        announce_warm(self.store, [(model, version)])
        table = self.deployments.get(model)
        self.prove(model, [version], actor, "be deployed")
        if table is not None:
            stable = dominant(table.weights)
            checks = [preflight.compat_check(self.store, self.registry, model, stable, version),
                      preflight.replay_check(self.store, self.registry, model, version, policy.replay,
                                             baseline=stable)]  # fmt: skip
            self.record_checks(model, actor, f"{model}@{version}", checks)
            failed = [c for c in checks if c.failed]
            if failed:
                raise ValidationError(
                    f"{model}@{version} cannot take {stable}'s traffic: "
                    + "; ".join(c.summary for c in failed)
                )
        now = self.clock()
        if table is None:
            with self.store.write() as conn:
                self.refuse_if_busy(conn, model)
                self.deployments.set_traffic(model, {version: 100}, actor=actor, reason=reason or f"first deploy of {model}@{version}",
                                             kind="deploy.first", verify=False, conn=conn)  # fmt: skip
                self.registry.record_mark(conn, model, version, actor=actor,
                                          reason="first release of the model", at=now)  # fmt: skip
                op = self.start(conn, model, "rollout", Event.FIRST_DEPLOY, version, version,
                                {version: 100.0}, policy, reason or "first deploy", actor, now)  # fmt: skip
                if overridden is not None:
                    marks.record_override(conn, rel, overridden, actor=actor, reason=reason,
                                          operation=op.id)  # fmt: skip
            self.push(model)  # an external router learns of the model here, after the commit
            return op
        with self.store.write() as conn:
            self.refuse_if_busy(conn, model)
            stable = dominant(table.weights)
            if stable == version:
                raise Conflict(f"{model}@{version} already takes most of the traffic")
            first = policy.rollout.steps[0]
            op = self.start(conn, model, "rollout", Event.ROLLOUT_STARTED, stable, version,
                            split(stable, version, first), policy, reason or f"deploy {model}@{version}",
                            actor, now)  # fmt: skip
            self.apply(conn, op, actor, f"rollout step 1: {version} at {first:g}%")
            if overridden is not None:
                marks.record_override(conn, rel, overridden, actor=actor, reason=reason,
                                      operation=op.id)  # fmt: skip
            self.event(conn, "rollout.started", model, actor, op.reason,
                       {"operation": op.id, "stable": stable, "candidate": version,
                        "steps": list(policy.rollout.steps)})  # fmt: skip
            self.notify("phase", model, f"rollout of {model}@{version} started",
                        f"{version} at {first:g}%, stable {stable}", op.id, conn=conn)  # fmt: skip
        self.push(model)
        return op

    def rollback(self, model: str, *, actor: str, to: str | None = None, emergency: bool | None = None,
                 reason: str = "", trigger: dict[str, Any] | None = None,
                 expect: Operation | None = None, mark_bad: str = "") -> Operation:  # fmt: skip
        """Start a rollback of ``model`` to ``to`` (default: the policy's target).

        ``expect``: the operation a tick decided to roll back, as it read it; if it changed
        since, the decision is void (raises the tick's stale-state signal). ``mark_bad``:
        the evidence of the failed gate or trigger that decided it; the release rolled back
        from is marked bad with it in the rollback's own write. A bad or quarantined
        release is never the target.

        A frozen model refuses every traffic change but one: a person's emergency rollback.
        A freeze means no automatic way out is safe, which is exactly when a responder needs
        a manual one; it lifts the freeze in the same write, recorded as break-glass.
        """
        # A person's emergency rollback is the responder's way out of every state: it takes
        # over a frozen operation or a running rollback too (the controller's own never does).
        by_hand = emergency is True and trigger is None and expect is None
        why_frozen = self.frozen(model)
        lifts_freeze = why_frozen is not None and by_hand
        if why_frozen is not None and not lifts_freeze:
            raise Frozen(frozen_message(model, why_frozen))
        table = self.deployments.require(model)
        current = self.active(model)
        if current is not None and takes_over_refused(current, by_hand):
            # Said first: otherwise the target search below reports a misleading reason.
            raise OperationInProgress(rolling_back_message(current))
        policy = current.policy if current else self.policy_for(model)
        live = {v: w / 100 for v, w in table.weights.items()}  # percent
        target, from_version = self.rollback_pair(model, policy, current, live, to)
        if (
            current is not None
            and current.kind == "rollback"
            and current.phase != Phase.FROZEN
            and target == current.target
            and live == {target: 100.0}
        ):
            # Already all on that target, being verified: starting over would only restart it.
            raise OperationInProgress(rolling_back_message(current))
        if target == from_version:
            if current is None:
                raise Conflict(
                    f"{model}@{target} already takes all traffic: there is nothing to roll back "
                    "from; name another release with --to"
                )
            raise ValidationError(
                f"{model}@{target} is the release being rolled back from: name another with --to"
            )
        marks.refuse_target(self.registry.get(f"{model}@{target}"))
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
        self.prove(model, [target], actor, "be a rollback target")
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
                preflight.replay_check(
                    self.store, self.registry, model, target, policy.replay, baseline=from_version
                )
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
            if cur is not None and takes_over_refused(cur, by_hand):
                raise OperationInProgress(rolling_back_message(cur))
            if cur is not None:
                # The rollout (or frozen operation) ends here; the rollback is a new operation.
                self.transition(conn, cur, Event.SUPERSEDED, actor,
                                f"superseded by a rollback to {target}", {}, move=False)  # fmt: skip
            if lifts_freeze:
                Operations.remove_freeze(conn, model)
                self.event(conn, "freeze.lifted", model, actor,
                           f"break-glass: an emergency rollback to {target} by {actor} lifted the freeze ({why_frozen})",
                           {"by": "rollback --emergency", "target": target, "freeze": why_frozen,
                            "break_glass": True})  # fmt: skip
            state = OperationState(trigger=trigger, mode=mode, warm=warm, from_weights=live,
                                   superseded=cur.id if cur is not None else None,
                                   skip_gates=skip_gates, lifted_freeze=why_frozen)  # fmt: skip
            first = 100.0 if mode == "emergency" or skip_gates else next_rollback_step(
                list(policy.rollback.steps), live.get(target, 0.0))  # fmt: skip
            if first < 100:
                event, weights = Event.ROLLBACK_STARTED, split(from_version, target, first)
            else:
                event, weights = Event.ROLLBACK_STARTED_AT_ONCE, {target: 100.0}
            op = self.start(conn, model, "rollback", event, from_version, target, weights, policy,
                            reason or f"rollback to {target}", actor, now, state=state, step_at=moved_at)  # fmt: skip
            drilled = marks.injected(conn, model, from_version, moved_at) if mark_bad else None
            self.event(conn, "rollback.started", model, actor, op.reason,
                       {"operation": op.id, "from": from_version, "target": target, "mode": mode,
                        "trigger": trigger, "warm": warm, "skip_gates": skip_gates,
                        "weights_before": live, "marked_bad": from_version if mark_bad and not drilled else None,
                        "drill_fault": drilled})  # fmt: skip
            if mark_bad and not drilled:
                badmarks.record_bad(conn, model, from_version, evidence=mark_bad, actor=actor,
                                    operation=op.id, at=moved_at,
                                    source="gate" if trigger and "gate" in trigger else "trigger")  # fmt: skip
            self.apply(conn, op, actor, f"{mode} rollback: {fmt_weights(weights)}")
            self.notify("trigger" if trigger else "phase", model, f"{mode} rollback of {model} to {target} started",
                        op.reason + (f" ({warm})" if warm else ""), op.id, severity="critical", conn=conn)  # fmt: skip
        self.push(model)
        return op

    def abort(self, model: str, *, actor: str, reason: str = "") -> Operation:
        """Stop the operation: a rollout returns to stable, a rollback to where it came from.

        Never onto a bad or quarantined release: aborting the rollback away from a release
        the gate failed would undo the decision, so it is refused with the ways out."""
        seen = self.active(model)
        if seen is not None and seen.stable:
            back_rel = self.registry.get(f"{model}@{seen.stable}")
            if not marks.usable_target(back_rel):
                raise Conflict(marks.abort_refused(seen, back_rel))
        with self.store.write() as conn:
            op = Operations.active_in(conn, model)
            if op is None:
                raise Conflict(self.nothing_to_abort(model))
            if seen is None or op.id != seen.id or op.stable != seen.stable:
                raise Conflict(f"{model}'s operation changed while abort checked it: run it again")
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

    def freeze_by_hand(self, model: str, *, actor: str, reason: str) -> None:
        """Freeze a model by hand: every traffic change halts until an unfreeze (or a person's
        emergency rollback). A running operation is held where it is, and people are called."""
        self.deployments.require(model)
        why = reason or f"frozen by {actor}"
        with self.store.write() as conn:
            op = Operations.active_in(conn, model)
            if op is not None and op.phase != Phase.FROZEN and not allows(op.phase, Event.FROZE):
                raise Conflict(f"{model}'s {op.kind} is {op.phase.value} and cannot be frozen now")
            if not Operations.add_freeze(conn, model, why, self.clock(), op.id if op else None):
                raise Conflict(f"{model} is frozen already ({self.ops.freeze_reason(conn, model)})")
            if op is not None and op.phase != Phase.FROZEN:
                self.transition(conn, op, Event.FROZE, actor, why, {"by": actor}, move=False)
            else:
                self.event(conn, "freeze", model, actor, why, {"by": actor})
            self.notify("freeze", model, f"{model} is frozen", why, op.id if op else 0,
                        severity="critical", conn=conn)  # fmt: skip

    def unfreeze(self, model: str, *, actor: str, reason: str) -> None:
        """Lift a freeze. Only this command does (and a person's emergency rollback).

        Traffic stays where it is: :meth:`split_hint` says what puts it on one release."""
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
        name, can = self.router_kind(model)
        if pins and Capability.PINS not in can:
            raise ValidationError(f"the {name} router cannot pin keys: drop --pin")
        if shadow and shadow[1] > 0 and Capability.MIRRORING not in can:
            raise ValidationError(f"the {name} router cannot mirror traffic: drop --shadow")
        # Bad input is refused before anything else: --force must not pause an operation for
        # a route change that is then rejected.
        self.deployments.check_traffic(model, weights, shadow=shadow, pins=pins)
        # A release marked bad takes no user traffic by hand (a shadow copy answers no one):
        # the audited way past the mark is `deploy --override-bad --reason`.
        for version in sorted(
            {v for v, w in weights.items() if w > 0} | set((pins or {}).values())
        ):
            rel = self.registry.get(f"{model}@{version}")
            if rel.bad is not None:
                raise ReleaseMarkedBad(badmarks.refusal(
                    rel.ref, rel.bad, "take traffic by hand",
                    f"deploy it with `backout deploy {rel.ref} --override-bad --reason TEXT`, or lift the mark "
                    f"with `backout release clear-bad {rel.ref} --reason TEXT`",
                ))  # fmt: skip
        self.prove(model, [v for v, w in weights.items() if w > 0] + sorted(set((pins or {}).values())),
                   actor, "take traffic")  # fmt: skip
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

    def mark_good(self, ref: str, *, actor: str, reason: str = "", good: bool = True) -> Release:
        """Mark ``ref`` known-good (a rollback point) once it loads and answers; or unmark it."""
        if good:
            model, version = parse_ref(ref)
            self.prove(model, [version], actor, "be marked known-good")
        return self.registry.mark_good(ref, actor=actor, reason=reason, good=good)

    # -- what the commands check -------------------------------------------------------

    def prove(self, model: str, versions: list[str], actor: str, what: str) -> None:
        """Refuse unless each release in ``versions`` loads and answers (checked once per digest).

        A release that is only bytes (an empty file, random data, the wrong pickle) must never
        take traffic or become a rollback point; the refusal names it and what failed.
        """
        for version in dict.fromkeys(versions):
            ref = f"{model}@{version}"
            check = preflight.load_check(self.store, self.registry, ref, prober=self.prober,
                                         timeout_s=self.probe_timeout_s)  # fmt: skip
            if not check.evidence.get("cached"):  # a pass found in the log is not news
                self.record_checks(model, actor, ref, [check])
            if check.failed:
                raise ValidationError(f"{ref} cannot {what}: {check.summary}")

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
            if rel.version not in exclude and marks.usable_target(rel):
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
            raise Frozen(frozen_message(model, why))

    def rollback_pair(self, model: str, policy: Policy, current: Operation | None,
                      live: Mapping[str, float], to: str | None) -> tuple[str, str]:  # fmt: skip
        """A rollback's target and the release it rolls back from."""
        if current is not None and current.kind == "rollout":
            return to or self.rollback_target(
                model, policy, exclude={current.target}
            ), current.target
        if current is not None:
            # A rollback taken over (by hand): all at once to its target if that is a rollback
            # point, else to the last known-good release that is not its target.
            if to is None:
                to = current.target if self.is_rollback_point(model, current.target) else (
                    self.rollback_target(model, policy, exclude={current.target}))  # fmt: skip
            return to, current.stable if current.stable != to else current.target
        top = dominant(live)
        if to is None:
            if (
                len(live) > 1
                and policy.rollback.target == "last-known-good"
                and self.is_rollback_point(model, top)
            ):
                # Traffic split with no operation (a freeze lifted mid-rollout, traffic set by
                # hand): the known-good release carrying most of it takes the rest.
                to = top
            else:
                to = self.rollback_target(model, policy, exclude={top})
        others = {v: w for v, w in live.items() if v != to}
        return to, dominant(others) if others else to

    def is_rollback_point(self, model: str, version: str) -> bool:
        rel = self.registry.get(f"{model}@{version}")
        return rel.known_good and marks.usable_target(rel)

    def split_hint(self, model: str) -> str:
        """The command that puts a split model's traffic on one known-good release, or ""."""
        table = self.deployments.get(model)
        if (
            table is None
            or len(table.weights) < 2
            or Operations(self.store).active(model) is not None
        ):
            return ""
        live = {v: w / 100 for v, w in table.weights.items()}
        try:
            target, _ = self.rollback_pair(model, self.policy_for(model), None, live, None)
        except ModelNotFound:
            return f"its traffic is split ({fmt_weights(live)}) and it has no known-good release: mark one with `backout release mark-good`"
        return f"its traffic is split ({fmt_weights(live)}): `backout rollback {model}` puts all of it on {target}"

    def nothing_to_abort(self, model: str) -> str:
        why = self.frozen(model)
        if why:
            return frozen_message(model, why)
        hint = self.split_hint(model)
        return f"{model} has no rollout or rollback in progress" + (
            f"; {hint}" if hint else ": nothing to abort"
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


def frozen_message(model: str, why: str) -> str:
    """Why a frozen model refuses a command, and the two ways out."""
    return (
        f"{model} is frozen ({why}): `backout rollback {model} --emergency` puts all traffic on "
        f"its last known-good release now, or lift it with `backout unfreeze {model} --reason ...`"
    )


def takes_over_refused(op: Operation | None, by_hand: bool) -> bool:
    """Whether a new rollback must be refused because ``op``, a rollback, is running.

    A frozen operation is held, not running; a person's emergency rollback takes over.
    """
    return op is not None and op.kind == "rollback" and op.phase != Phase.FROZEN and not by_hand


def rolling_back_message(op: Operation) -> str:
    """Why a second rollback is refused while one runs, and what to run instead."""
    m = op.model
    head = f"{m} is already rolling back to {op.target} (phase {op.phase.value})"
    if op.phase == Phase.VERIFYING or op.state.paused_from == Phase.VERIFYING:
        return head + (f": all traffic is on {op.target} while it is verified (`backout status {m}`); "
                       f"`backout rollback {m} --emergency --to VERSION` moves it all to another release now")  # fmt: skip
    if op.phase == Phase.PAUSED:
        return head + (f": `backout resume {m}` continues it, `backout abort {m}` stops it, "
                       f"`backout rollback {m} --emergency` puts all traffic on {op.target} now")  # fmt: skip
    return head + (f": `backout rollback {m} --emergency` puts all traffic on {op.target} now; "
                   f"`backout abort {m}` stops it (traffic back on {op.stable})")  # fmt: skip


def not_abortable(op: Operation) -> str:
    """Why ``op`` cannot be aborted, and what to do instead."""
    if op.phase == Phase.FROZEN:
        return frozen_message(op.model, "both releases unhealthy" if not op.reason else op.reason)
    return (
        f"{op.model}'s rollback is {Phase.VERIFYING.value} {op.target} with all traffic on it and "
        f"cannot be aborted: wait for its verification to end, or `backout rollback {op.model} "
        "--emergency --to VERSION` moves all traffic to another release now"
    )
