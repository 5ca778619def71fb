"""The controller: gated rollouts, staged and emergency rollbacks, triggers and freeze.

An explicit state machine (:mod:`backout.control.phases`). Each model has at most one
*operation* in progress; its phase, step, weights and typed state live in the store.
``tick()`` re-reads that state, re-applies the weights, asks the handler of the phase to
decide, and moves at most one step. Every phase has a handler in :data:`HANDLERS` or is
terminal, held (paused, frozen: only escalation runs) — a test checks it. A controller
killed at any moment resumes exactly where the last one was, because nothing it needs
lives only in memory.

The parts: :mod:`~backout.control.base` (collaborators, ``transition()``),
:mod:`~backout.control.commands` (what people ask), :mod:`~backout.control.detection`
(gates, triggers, automatic rollback and freeze), :mod:`~backout.control.rollout` and
:mod:`~backout.control.rollback` (the phase handlers).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Callable

from backout.control import lease
from backout.control.operations import Operation, Operations, Stale
from backout.control.phases import Phase
from backout.control.rollback import RollbackPhases
from backout.control.rollout import RolloutPhases
from backout.control.weights import clean
from backout.errors import ModelNotFound, StoreUnavailable
from backout.store import Outage, retention

log = logging.getLogger("backout.controller")


class Controller(RolloutPhases, RollbackPhases):
    """Drives every model's operation. Safe to run several; only the lease holder acts."""

    def operation(self, op_id: int) -> Operation:
        op = self.ops.get(op_id)
        if op is None:
            raise ModelNotFound(f"operation {op_id} does not exist")
        return op

    # -- the tick ----------------------------------------------------------------------

    def tick_all(self) -> list[Operation]:
        """One tick for every live model."""
        moved: list[Operation] = []
        for model in self.deployments.models():
            try:
                op = self.tick(model)
            except StoreUnavailable:  # the store's fault, not the model's: the loop reports it
                raise
            except lease.LeaseLost:  # another controller leads now: write nothing more
                log.warning("the controller lease passed to another holder; stopping this tick")
                return moved
            except Exception as exc:  # one model's trouble must not stop the others
                try:
                    self.tick_failed(model, exc)
                except lease.LeaseLost:  # recording it is a write too: the same refusal
                    return moved
                continue
            self._last_error.pop(model, None)
            if op is not None:
                moved.append(op)
        return moved

    def tick_failed(self, model: str, exc: Exception) -> None:
        """Record a tick's failure once: the same failure on every tick is one state, not news."""
        what = f"{type(exc).__name__}: {exc}"
        if self._last_error.get(model) == what:
            log.debug("tick of %s failed again: %s", model, what)
            return
        log.exception("tick of %s failed", model)
        with self.store.write() as conn:
            self.event(conn, "controller.error", model, self.actor, what)
        self._last_error[model] = what

    def tick(self, model: str) -> Operation | None:
        """Re-read, re-apply, decide, and move at most one step. Safe to repeat."""
        now = self.clock()
        op = self.active(model)
        if op is None:
            try:
                self.watch_idle(model, now)
            except lease.LeaseLost:
                raise
            except Stale:
                log.info("%s: lease lost during the tick; writing nothing", model)
            return None
        handler = HANDLERS.get(op.phase)
        if handler is None:  # held: paused by a person, or frozen; nothing moves
            self.escalate(op, now)
            return op
        try:
            if self.reapply(op):
                handler(self, op, now)
        except lease.LeaseLost:
            raise
        except Stale:
            log.info("%s: operation %d changed during the tick; deciding again", model, op.id)
            return self.active(model)
        self.escalate(op, now)
        return self.active(model) or op

    def reapply(self, op: Operation) -> bool:
        """Make what is live match the operation; True when the router serves it.

        The stored route table is rewritten if it drifted from the operation's weights (a
        change behind the controller's back), and the router is given it again. A phase
        decides nothing while its traffic is not what the operation says.
        """
        table = self.deployments.get(op.model)
        if table is not None and {v: w / 100 for v, w in table.weights.items()} != clean(
            op.weights
        ):
            with self.store.write() as conn:
                Operations.check_fresh(conn, op)
                self.apply(
                    conn,
                    op,
                    self.actor,
                    "re-applied the operation's weights (the live table differed)",
                )
        return self.push(op.model)

    # -- running -----------------------------------------------------------------------

    def run(self, stop: threading.Event, *, interval: float = 0.5, holder: str | None = None,
            lease_s: float = 5.0) -> None:  # fmt: skip
        """Tick every ``interval`` while holding the store's controller lease.

        Several controllers may run on one store: the one holding the lease ticks, the
        others ask for it every ``interval`` and take it over once it has run out
        (``lease_s`` after its holder's last renewal). On a clean stop the lease is given
        up at once.
        """
        holder = holder or default_holder()
        leading = threading.Event()  # set while this controller holds the lease
        threading.Thread(
            target=self.warm_preflight, name="backout-controller-warm", daemon=True
        ).start()
        # Notifications queued in the outbox are delivered by the leader only, off the tick:
        # a slow webhook or mail server never delays a decision.
        outbox = self.alerts.outbox
        delivery = threading.Thread(
            target=outbox.run, args=(stop,), kwargs={"active": leading.is_set},
            name="backout-outbox", daemon=True,
        )  # fmt: skip
        delivery.start()
        outage = Outage(log, "controller loop")
        unfenced = self.store.inner  # the lease itself is taken outside the fence
        try:
            while not stop.is_set():
                try:
                    held = lease.acquire_lease(
                        unfenced, lease.CONTROLLER, holder, lease_s, self.clock()
                    )
                    self._leadership(holder, held)
                    if held is not None:
                        leading.set()
                        self.tick_all()
                        self.housekeeping()
                    else:
                        leading.clear()
                except Exception as exc:  # a store briefly unreachable must not end the controller
                    leading.clear()
                    outage.failed(exc, f"retrying every {max(interval, 1.0):.1f} s")
                    stop.wait(max(interval, 1.0))
                else:
                    outage.recovered()
                stop.wait(interval)
        finally:
            held, self.lease = self.lease, None
            if held is not None:
                try:
                    with unfenced.write() as conn:
                        lease.release(conn, lease.CONTROLLER, held, self.clock())
                except Exception:  # the lease then runs out by itself
                    log.warning("could not give up the controller lease", exc_info=True)
            outbox.wake()
            delivery.join(timeout=10.0)

    def _leadership(self, holder: str, held: lease.Held | None) -> None:
        """Tick under ``held``, saying so in one log line whenever leadership changes."""
        before = self.lease
        self.lead(held)
        if held is not None:
            if before != held:
                self._waiting_for = None
                log.warning("controller %s leads (lease generation %d)", holder, held.generation)
            return
        if before is not None:
            log.warning("controller %s lost the lease", holder)
        other = lease.current(self.store)
        who = None if other is None else (other.holder, other.generation)
        if who != self._waiting_for:
            self._waiting_for = who
            log.warning(
                "controller %s waits: %s leads (lease generation %d); taking over if it stops",
                holder, *(who or ("no one", 0)),
            )  # fmt: skip

    _waiting_for: tuple[str, int] | None = None  # the leader last reported while waiting

    # Retention runs at a low rate: once an hour, or a batch a minute while catching up.
    prune_every: float = 3600.0
    prune_catch_up: float = 60.0
    _next_prune: float = 0.0

    def housekeeping(self) -> None:
        """Low-rate chores of the leader between ticks: retention's pruning, one bounded
        batch at a time, so a store with a year of backlog never stalls a tick for long."""
        now = self.clock()
        if now < self._next_prune:
            return
        self._next_prune = now + self.prune_every
        try:
            report = retention.prune(self.store, now=now, actor=self.actor)
        except Exception:  # pruning can wait; deciding cannot
            log.exception("retention pruning failed; trying again in %.0f s", self.prune_every)
            return
        if report.total:
            log.info("retention pruned %s", report.to_dict())
        if report.more:
            self._next_prune = now + self.prune_catch_up

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
                    # Prove it now (once per digest), not in the middle of the incident.
                    self.prove(model, [rel.version], self.actor, "be a rollback target")
                    predictor = load_release(rel.manifest, self.registry.blobs)
                    asyncio.run(predictor.aclose())
                except Exception:  # its own pre-flight will fail and say why, in the timeline
                    log.warning("could not warm %s", rel.ref, exc_info=True)


def default_holder() -> str:
    """The lease holder id of a controller process: ``HOST:PID``."""
    return f"{socket.gethostname()}:{os.getpid()}"


Handler = Callable[[Controller, Operation, float], None]

# Every phase an operation can be in, and who decides there. Terminal phases end the
# operation; PAUSED and FROZEN are held by people, so only escalation runs for them.
HANDLERS: dict[Phase, Handler] = {
    Phase.ROLLING_OUT: Controller.tick_rolling_out,
    Phase.AWAITING_APPROVAL: Controller.tick_awaiting_approval,
    Phase.COMPLETING: Controller.tick_completing,
    Phase.ROLLING_BACK: Controller.tick_rolling_back,
    Phase.VERIFYING: Controller.tick_verifying,
}
HELD: frozenset[Phase] = frozenset({Phase.PAUSED, Phase.FROZEN})
