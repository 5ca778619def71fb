"""The controller's mechanics: its collaborators, and the one place a phase changes.

Everything the commands and the phase handlers share: the store and the repository of
operations, the injected clock, the :class:`~backout.traffic.router.TrafficRouter` that
carries traffic and the :class:`~backout.telemetry.source.TelemetrySource` that reports
it, notifications, and :meth:`ControllerBase.transition`, which looks the change up in the
state machine's table, writes it (fenced, and only over the state it was decided on), moves
traffic and records an event, all in the caller's transaction.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.engine import Connection

from backout.control import incidents, lease, routing
from backout.control.alerts import Alerts
from backout.control.notify import Notice, Notifier
from backout.control.operations import Operation, Operations, OperationState
from backout.control.phases import TERMINAL, Event, Phase, next_phase
from backout.control.policy import Policy
from backout.control.triggers import MetricSource
from backout.errors import RouterError, TelemetryUnavailable
from backout.registry.releases import Registry
from backout.runtimes.probe import PROBE_TIMEOUT_S, Prober, probe_release
from backout.store import Store, audit
from backout.telemetry.batches import Batch
from backout.telemetry.source import StoreTelemetry, TelemetrySource
from backout.traffic.deployments import Deployments
from backout.traffic.router import Capability, GatewayRouter, TrafficRouter
from backout.types import Clock

log = logging.getLogger("backout.controller")


class ControllerBase:
    """The collaborators and the mechanics every part of the controller uses."""

    def __init__(
        self,
        store: Store,
        registry: Registry,
        *,
        notifier: Notifier | None = None,
        clock: Clock | None = None,
        metrics: MetricSource | None = None,
        router: TrafficRouter | None = None,
        telemetry: TelemetrySource | None = None,
        prober: Prober | None = None,
        actor: str = "controller",
    ) -> None:
        # Every write of the controller's loop is fenced by the lease it holds (see
        # backout.control.lease); people's commands through this object are not.
        self.store = lease.FencedStore(store, lambda: self.lease)
        self.lease: lease.Held | None = None  # what the loop holds while it leads
        self.registry = registry
        # One clock for the controller, the registry's marks and the audit log it writes.
        self.clock: Clock = clock or registry.clock
        if clock is not None:
            registry.clock = clock
        self.ops = Operations(self.store)
        self.deployments = Deployments(self.store, registry)
        # A router or telemetry source given here serves every model; otherwise each model's
        # comes from its policy's `router` and `telemetry` sections (control/routing.py).
        self.router: TrafficRouter = router or GatewayRouter(self.deployments)
        self.telemetry: TelemetrySource = telemetry or StoreTelemetry(self.store)
        self._fixed_router = router is not None
        self._fixed_telemetry = telemetry is not None
        self._routers: dict[str, tuple[str, TrafficRouter]] = {}  # model -> (its spec, router)
        self._sources: dict[str, tuple[str, TelemetrySource]] = {}
        self._routing_policies: dict[str, tuple[dict[str, Any] | None, Policy]] = {}
        self.notifier = notifier  # None: each model's policy names its webhooks
        self.alerts = Alerts(self.store, actor=actor, notifier=notifier, clock=self.clock)
        self.metrics = metrics
        # Loads a release apart from this process and asks it one question, before it takes
        # traffic or becomes known-good (see backout.runtimes.probe).
        self.prober: Prober = prober or probe_release
        self.probe_timeout_s = PROBE_TIMEOUT_S
        self.actor = actor
        self._gates: dict[tuple[int, int, str], Any] = {}
        self._policy_cache: dict[str, Policy] = {}
        self._router_trouble: dict[str, str] = {}  # model -> the router error last recorded
        self._no_target_open: set[str] = set()  # models whose triggers fire with no way back
        self._last_error: dict[str, str] = {}  # model -> the tick error last recorded
        self._telemetry_trouble: dict[str, str] = {}  # model -> the telemetry error recorded

    # -- reading -----------------------------------------------------------------------

    def active(self, model: str) -> Operation | None:
        """The model's operation in progress, or None."""
        return self.ops.active(model)

    def operations(self, model: str, limit: int = 20) -> list[Operation]:
        """The model's operations, newest first."""
        return self.ops.recent(model, limit)

    def policy_for(self, model: str) -> Policy:
        """The policy the model runs by (its stored one, or the default)."""
        return self.ops.policy_for(model)

    def frozen(self, model: str) -> str | None:
        """Why the model is frozen, or None."""
        return self.ops.frozen(model)

    def now_utc(self) -> datetime:
        """The controller's clock as an aware datetime, for events."""
        return datetime.fromtimestamp(self.clock(), UTC)

    def batches(
        self, model: str, since: float, until: float | None = None
    ) -> dict[str, list[Batch]]:
        """Per-release telemetry of ``model`` from its telemetry source."""
        source = self.telemetry_for(model)
        if until is None and not isinstance(source, StoreTelemetry):
            # A metric system is asked up to the controller's now, the one clock of its
            # decisions (the store's batches need no bound: none lie in the future).
            until = self.clock()
        batches = source.batches(model, since, until)
        if self._telemetry_trouble.pop(model, None) is not None:
            with self.store.write() as conn:
                self.event(conn, "telemetry.recovered", model, self.actor,
                           "telemetry can be read again; deciding resumes")  # fmt: skip
        return batches

    def routing_policy(self, model: str) -> Policy:
        """The model's stored policy, which its router and telemetry are built from. Read at
        every call — a policy stored by any process counts at once — but validated again only
        when the stored document changed (a tick asks several times)."""
        doc = self.ops.policy_doc(model)
        held = self._routing_policies.get(model)
        if held is None or held[0] != doc:
            policy = Policy.model_validate(doc) if doc is not None else self.policy_for(model)
            held = self._routing_policies[model] = (doc, policy)
        return held[1]

    def observe(self, model: str, since: float) -> dict[str, Any]:
        """What ``status`` shows beside the route table, read live and written nowhere: the
        model's ``batches`` since ``since`` from its telemetry source, what its ``router``
        serves (for an external one: ``served``, ``verified`` against the committed table),
        and each source's ``error`` when it cannot be read — an error, never a crash."""
        kind, _ = self.router_kind(model)
        router: dict[str, Any] = {"kind": kind, "served": None, "verified": None, "error": None}
        table = self.deployments.get(model)
        if kind != "gateway" and table is not None:
            try:
                served = self.router_for(model).served(model)
            except RouterError as exc:
                router["error"] = exc.message
            else:
                router["served"] = served
                router["verified"] = served == {v: w / 100 for v, w in table.weights.items()}
        telemetry: dict[str, Any] = {
            "kind": self.routing_policy(model).telemetry.kind,
            "error": None,
        }
        batches: dict[str, list[Batch]] = {}
        try:
            batches = self.telemetry_for(model).batches(model, since)
        except TelemetryUnavailable as exc:
            telemetry["error"] = exc.message
        return {"batches": batches, "router": router, "telemetry": telemetry}

    def router_kind(
        self, model: str, policy: Policy | None = None
    ) -> tuple[str, frozenset[Capability]]:
        """The name and capabilities of the router that carries (or, under ``policy``, would
        carry) ``model``'s traffic, without reaching it."""
        if self._fixed_router:
            return self.router.name, self.router.capabilities
        spec = (policy or self.routing_policy(model)).router
        return spec.kind, routing.capabilities_of(spec)

    def router_for(self, model: str) -> TrafficRouter:
        """The router that carries ``model``'s traffic, built from its policy (and kept while
        the policy's ``router`` section stays the same)."""
        if self._fixed_router:
            return self.router
        spec = self.routing_policy(model).router
        if isinstance(spec, routing.GatewayRouting):
            return self.router
        key = spec.model_dump_json()
        held = self._routers.get(model)
        if held is None or held[0] != key:
            if held is not None:
                _close(held[1])
            held = self._routers[model] = (key, routing.build_router(spec, model, self.deployments))
        return held[1]

    def telemetry_for(self, model: str) -> TelemetrySource:
        """The telemetry source that reports ``model``'s traffic, from its policy."""
        if self._fixed_telemetry:
            return self.telemetry
        spec = self.routing_policy(model).telemetry
        if isinstance(spec, routing.GatewayTelemetry):
            return self.telemetry
        key = spec.model_dump_json()
        held = self._sources.get(model)
        if held is None or held[0] != key:
            if held is not None:
                _close(held[1])
            held = self._sources[model] = (key, routing.build_telemetry(spec, self.store))
        return held[1]

    # -- the one place a phase changes -------------------------------------------------

    def drop_gates(self, op_id: int) -> None:
        """Forget the gates kept for operation ``op_id`` (each holds its window's batches)."""
        for key in [k for k in self._gates if k[0] == op_id]:
            del self._gates[key]

    def transition(self, conn: Connection, op: Operation, event: Event, actor: str, reason: str,
                   evidence: Mapping[str, Any], *, new_step: bool = False, move: bool = True) -> None:  # fmt: skip
        """Apply ``event`` to ``op``: the table names the next phase; checked, written, moved
        (unless ``move`` is False or the new phase holds traffic still) and recorded, in the
        caller's write."""
        to = next_phase(op.phase, event, model=op.model)
        before, seen = op.phase, op.updated_at
        op.phase = to
        now = self.clock()
        if new_step:
            op.step_started_at = now
        op.updated_at = now
        if to in TERMINAL:
            op.ended_at = now
            op.outcome = to.value
            self.drop_gates(op.id)  # an ended operation's gates are never read again
        self.fence(conn)
        self.ops.update_if_unchanged(conn, op, before, seen)
        if move and to not in (Phase.FROZEN, Phase.PAUSED) and to not in TERMINAL:
            self.apply(conn, op, actor, reason)
        self.event(conn, f"phase.{to.value}", op.model, actor, reason,
                   {"operation": op.id, "kind": op.kind, "event": event.value, "from": before.value,
                    "to": to.value, "step": op.step, "weights": op.weights, "evidence": dict(evidence)})  # fmt: skip
        incidents.follow(conn, op, event, now, actor)  # the public status follows the phase
        if to != before:
            self.notify("phase", op.model, f"{op.model} {op.kind}: {to.value}", reason, op.id,
                        severity="critical" if to == Phase.FROZEN else "info", conn=conn)  # fmt: skip

    def start(self, conn: Connection, model: str, kind: str, event: Event, stable: str, target: str,
              weights: dict[str, float], policy: Policy, reason: str, actor: str, now: float, *,
              state: OperationState | None = None, step_at: float | None = None) -> Operation:  # fmt: skip
        """Begin an operation by ``event`` (from "no operation" in the table)."""
        phase = next_phase(None, event, model=model)
        self.fence(conn)
        op = self.ops.insert(conn, model, kind, phase, stable, target, weights, policy, reason,
                             actor, now, state=state, step_at=step_at)  # fmt: skip
        incidents.follow(conn, op, event, now, actor)  # a rollback opens an incident
        return op

    def lead(self, held: lease.Held | None) -> None:
        """Tick under ``held`` (None: not leading): from now on every write of the calling
        thread checks that the stored lease is still ``held``, else :class:`LeaseLost`."""
        self.lease = held
        self.store.fence_thread()

    def fence(self, conn: Connection) -> None:
        """Refuse to write for a controller whose lease another holder took (fencing).

        A controller paused rather than killed (a long GC pause, a stopped process) may wake
        after its lease expired and another controller took it over; its tick must not write.
        The store checks it at the start of each write of the loop too; this names the check
        where a decision is written. Commands run by people are not fenced.
        """
        held = self.store.fenced()
        if held is not None:
            lease.check(conn, lease.CONTROLLER, held)

    def apply(self, conn: Connection, op: Operation, actor: str, reason: str) -> None:
        """Write the operation's weights as the model's route table, in the caller's write.

        The router is asked to serve it after the commit (:meth:`push`): the store is the
        source of truth, and a router that missed a table is given it again on the next tick.
        """
        self.fence(conn)
        self.deployments.set_traffic(op.model, op.weights, actor=actor, reason=reason, kind="traffic.applied",
                                     data={"operation": op.id}, verify=False, conn=conn)  # fmt: skip

    def push(self, model: str) -> bool:
        """Ask the router to serve the committed table; True when it serves it.

        A router that cannot be reached is logged and recorded, not raised: the decision is
        committed and the next tick pushes again. No step moves while what is served differs.
        The event is written when the trouble starts or changes, and when it ends — not on
        every tick it lasts.
        """
        table = self.deployments.get(model)
        if table is None:
            return True
        want = {v: w / 100 for v, w in table.weights.items()}
        name = self.router_kind(model)[0]
        try:
            router = self.router_for(model)
            name = router.name
            ok = router.served(model) == want
            if not ok:
                router.apply(table)
                ok = router.served(model) == want
        except RouterError as exc:
            log.warning("%s: router %s: %s", model, name, exc.message)
            if self._router_trouble.get(model) != exc.message:
                self._router_trouble[model] = exc.message
                with self.store.write() as conn:
                    self.event(conn, "router.error", model, self.actor,
                               f"router {name}: {exc.message}; traffic holds still "
                               "until it serves the committed table",
                               {"router": name, "generation": table.generation})  # fmt: skip
            return False
        if ok and self._router_trouble.pop(model, None) is not None:
            with self.store.write() as conn:
                self.event(conn, "router.recovered", model, self.actor,
                           f"router {name} serves the committed table again",
                           {"router": name, "generation": table.generation,
                            "weights": want})  # fmt: skip
        return ok

    def event(self, conn: Connection, kind: str, model: str | None, actor: str, reason: str = "",
              data: Mapping[str, Any] | None = None) -> None:  # fmt: skip
        """Append an audit event stamped with the controller's clock."""
        audit.append(conn, kind, model=model, actor=actor, reason=reason, data=dict(data or {}),
                     at=self.now_utc())  # fmt: skip
        if kind in ("freeze", "freeze.lifted") and model is not None:
            # A freeze no operation carries is an incident too (the public sees an outage).
            policy = Operations.policy_in(conn, model)[0]
            incidents.follow_freeze(conn, model, policy, kind == "freeze", self.clock(), actor)

    # -- notifications and escalation ----------------------------------------------------

    def notify(self, kind: str, model: str, title: str, text: str, op_id: int, *,
               severity: str = "info", conn: Connection | None = None) -> None:  # fmt: skip
        """Queue a notice; pass ``conn`` to queue it in the transaction of the decision it
        reports (the outbox then delivers it even if this process dies after the commit)."""
        policy = self._policy_cache.get(model) or self.policy_for(model)
        self.alerts.notify(kind, model, title, text, op_id, policy=policy, severity=severity,
                           conn=conn)  # fmt: skip

    def escalate(self, op: Operation, now: float, *, force: bool = False) -> None:
        """Call the next contact when recovery is late (or at once, with ``force``)."""
        with self.store.write() as conn:
            self.alerts.escalation(conn, op, now, force=force)

    def send(self, model: str, policy: Policy, notice: Notice, *,
             conn: Connection | None = None) -> None:  # fmt: skip
        self.alerts.send(model, policy, notice, conn=conn)

    def close(self) -> None:
        """Drain pending notifications (at shutdown) and close the routers and sources built
        from policies."""
        self.alerts.close()
        self.close_routers()

    def close_routers(self) -> None:
        """Close the routers and telemetry sources built from policies (their connections)."""
        for _, held in [*self._routers.values(), *self._sources.values()]:
            _close(held)
        self._routers.clear()
        self._sources.clear()


def _close(thing: object) -> None:
    close = getattr(thing, "close", None)
    if callable(close):
        close()
