"""Crash recovery for real: controllers in their own processes, killed with SIGKILL.

Each seeded run builds a store, starts a controller process (``crash_controller.py`` here,
real clock, one-second bakes), sends it commands from this process, kills it at a random
moment, checks the invariants, starts another controller and lets it finish; then checks
the invariants again and that every operation reached a terminal phase. Runs go four at a
time. A second test puts two controllers on one store and checks the lease: one acts at a
time, and the other takes over once the holder dies and its lease expires. Every test runs
on SQLite and on PostgreSQL (see ``tests/conftest.py``).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest
import sqlalchemy as sa

from backout.control import triggers
from backout.control.controller import Controller
from backout.control.notify import InMemoryNotifier
from backout.control.operations import Operation
from backout.control.phases import TERMINAL, TRANSITIONS, Event, Phase
from backout.control.policy import parse_policy
from backout.errors import BackoutError
from backout.registry.artifacts import LocalBlobStore
from backout.registry.releases import Registry
from backout.store import Store, audit, open_store, schema
from backout.telemetry.batches import read_batches
from backout.traffic.deployments import Deployments
from tests.control.world import POLICY as WORLD_POLICY
from tests.control.world import FakeProber, NewWorld, World, restart
from tests.waits import wait_for

SCRIPT = Path(__file__).with_name("crash_controller.py")
MODEL = "iris"
RUNS = int(os.environ.get("BACKOUT_CRASH_RUNS", 24))  # raise it for a longer soak
# Fewer on PostgreSQL, where each run costs a little more: the seeds are the first RUNS_PG of
# the SQLite ones, so both databases see the same scenarios.
RUNS_PG = int(os.environ.get("BACKOUT_CRASH_RUNS_PG", 8))
PARALLEL = 4
LEASE_S = 1.0
INTERVAL = 0.05
SETTLE_S = 25.0  # a run that has not finished this long after its last command is stuck
BAD = 0.5  # error rate of an unhealthy release; the trigger fires above 0.2

POLICY = """
rollout:
  steps: [50, 100]
  bake: 1s
  min_requests: 20
rollback:
  mode: staged
  steps: [50, 100]
  bake: 1s
  verification: {duration: 1s, min_requests: 20}
completion: {rollout: 1s}
triggers:
  - {name: errors, kind: error_rate, max_rate: 0.2, window: 2s, min_requests: 20}
escalation:
  after: 60s
  contacts: [{name: ana, email: ana@example.com}]
"""

_MIGRATE = threading.Lock()  # Alembic's migration context is process-global
_INITIAL = {"rollout": {Phase.ROLLING_OUT}, "rollback": {Phase.ROLLING_BACK, Phase.VERIFYING}}


# -- controller processes ------------------------------------------------------------------


class Spawner:
    """Starts controller processes through the fork server of ``crash_controller.py``."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        logs.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._pids: list[int] = []
        env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1")
        self.server = subprocess.Popen(
            [sys.executable, str(SCRIPT)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env
        )
        assert self._line() == "ready"

    def _line(self) -> str:
        assert self.server.stdout is not None
        return self.server.stdout.readline().decode().strip()

    def start(self, store: str, artifacts: Path, health: Path, holder: str, seed: int) -> Proc:
        log = self.logs / f"{holder}.log"
        cfg = {"store": store, "artifacts": str(artifacts), "health": str(health), "log": str(log),
               "holder": holder, "seed": seed, "interval": INTERVAL, "lease": LEASE_S}  # fmt: skip
        with self._lock:
            assert self.server.stdin is not None
            self.server.stdin.write(orjson.dumps(cfg) + b"\n")
            self.server.stdin.flush()
            pid = int(self._line())
            self._pids.append(pid)
        return Proc(pid, holder, log)

    def close(self) -> None:
        for pid in self._pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        assert self.server.stdin is not None and self.server.stdout is not None
        self.server.stdin.close()
        self.server.wait(timeout=10)
        self.server.stdout.close()


@dataclass
class Proc:
    """A controller process (a child of the fork server, reaped by the kernel)."""

    pid: int
    holder: str
    log: Path

    def alive(self) -> bool:
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        return True

    def _signal(self, sig: int, timeout: float) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, sig)
        wait_for(
            lambda: not self.alive(),
            timeout,
            f"{self.holder} (pid {self.pid}) to exit on signal {sig}",
            interval=0.005,
        )

    def kill(self) -> None:
        """kill -9: no cleanup, no goodbye."""
        self._signal(signal.SIGKILL, 5.0)

    def stop(self) -> None:
        self._signal(signal.SIGTERM, 10.0)

    def stderr(self) -> str:
        return self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""


@pytest.fixture(scope="module")
def spawner(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Spawner]:
    s = Spawner(tmp_path_factory.mktemp("controller-logs"))
    try:
        yield s
    finally:
        s.close()


# -- one store per run ---------------------------------------------------------------------


@dataclass
class Site:
    """One run's store, releases and the commands of an operator (this process)."""

    path: Path
    url: str
    store: Store
    registry: Registry
    ops: Controller
    health_file: Path
    log: list[str] = field(default_factory=list)
    t0: float = field(default_factory=time.time)

    def note(self, text: str) -> None:
        self.log.append(f"{time.time() - self.t0:6.2f}s {text}")

    def health(self, rates: dict[str, float]) -> None:
        """Error rates by version (the rest are healthy), read by the controller's traffic."""
        tmp = self.health_file.with_suffix(".tmp")
        tmp.write_bytes(orjson.dumps(rates))
        os.replace(tmp, self.health_file)
        self.note(f"health {rates}")

    def command(self, name: str, **kw: Any) -> None:
        """Run an operator command; a refusal is fine, as long as it is a BackoutError."""
        try:
            op = getattr(self.ops, name)(MODEL, actor="ops", **kw)
            self.note(f"{name} {kw} -> {_describe(op)}")
        except BackoutError as exc:
            self.note(f"{name} {kw} refused: {exc.message}")

    def force(self, weights: dict[str, float]) -> None:
        """What `backout traffic --force` does: pause the operation, then set the weights."""
        self.command("pause", reason="traffic forced by hand", forced=True)
        Deployments(self.store, self.registry).set_traffic(MODEL, weights, actor="ops")
        self.note(f"traffic forced to {weights}")

    def active(self) -> Operation | None:
        return self.ops.active(MODEL)

    def operations(self) -> list[Operation]:
        return list(reversed(self.ops.operations(MODEL, limit=1000)))


def make_site(path: Path, url: str) -> Site:
    path.mkdir(parents=True)
    with _MIGRATE:
        store = open_store(url, create=True)
    registry = Registry(store, LocalBlobStore(path / "artifacts"))
    for v in ("1.0.0", "1.1.0", "1.2.0"):
        f = path / f"model-{v}.bin"
        f.write_bytes(f"weights {v}".encode())
        registry.register(MODEL, v, [f], actor="test")
    ops = Controller(store, registry, notifier=InMemoryNotifier(), actor="ops", prober=FakeProber())
    # The releases are placeholder bytes: record them as loaded and answered, so the
    # controller processes (which probe for real) find them proven in the store.
    for v in ("1.0.0", "1.1.0", "1.2.0"):
        ops.prove(MODEL, [v], "test", "take traffic")
    ops.set_policy(MODEL, parse_policy(POLICY), source="test", actor="test")
    ops.deploy(MODEL, "1.0.0", actor="test")
    site = Site(path, url, store, registry, ops, path / "health.json")
    site.health({})
    return site


# -- the invariants ------------------------------------------------------------------------


def check_invariants(store: Store, *, final: bool = False) -> None:
    """What must hold whenever no controller is halfway through a tick."""
    with store.read() as conn:
        table = Deployments._get(conn, MODEL)
        releases = {
            r.version: r
            for r in conn.execute(
                sa.select(schema.releases).where(schema.releases.c.model == MODEL)
            )
        }
        ops = [
            _op_row(r)
            for r in conn.execute(sa.select(schema.operations).order_by(schema.operations.c.id))
        ]
        events = audit.list_events(conn)
        assert audit.verify_chain(conn) == [], "the event chain does not verify"
        frozen = conn.execute(
            sa.select(schema.freezes.c.model).where(schema.freezes.c.model == MODEL)
        ).scalar()
    assert table is not None
    assert sum(table.weights.values()) == 10_000, f"weights {table.weights} do not sum to 100%"
    for version in table.weights:
        assert version in releases, f"traffic on unregistered {version}"
        assert releases[version].quarantined is None, f"traffic on quarantined {version}"
    active = [op for op in ops if op.ended_at is None]
    assert len(active) <= 1, f"{len(active)} active operations: {[o.id for o in active]}"
    _check_phase_events(ops, events)
    for op in ops:
        if op.kind == "rollback" and op.outcome == Phase.ROLLED_BACK.value:
            _check_verified(store, op)
    froze = {int(e.data["operation"]) for e in events if e.kind == "phase.frozen"}
    lifted = {int(e.data["operation"]) for e in events if e.kind == "phase.unfrozen"}
    for op_id in froze - lifted:
        assert frozen, f"operation {op_id} froze but the model is not frozen"
    if final:
        escalated = {int(e.data["operation"]) for e in events if e.kind == "escalation"}
        missing = froze - escalated
        assert not missing, f"operations {sorted(missing)} froze without escalating to a contact"


def _op_row(r: Any) -> Operation:
    from backout.control.operations import from_row

    return from_row(r)


def _check_phase_events(ops: list[Operation], events: list[audit.Event]) -> None:
    """Every phase change of every operation is a ``phase.*`` event, and they chain."""
    per_op: dict[int, list[audit.Event]] = {}
    for e in events:
        if e.kind.startswith("phase."):
            per_op.setdefault(int(e.data["operation"]), []).append(e)
    for op in ops:
        evs = per_op.pop(op.id, [])
        first_deploy = op.kind == "rollout" and op.stable == op.target
        if first_deploy:
            assert not evs and op.phase == Phase.SUCCEEDED
            continue
        phase = Phase(evs[0].data["from"]) if evs else op.phase
        assert phase in _INITIAL[op.kind], f"op {op.id} ({op.kind}) started {phase.value}"
        for e in evs:
            came_from, to = Phase(e.data["from"]), Phase(e.data["to"])
            assert came_from == phase, (
                f"op {op.id}: event {e.seq} moves from {came_from.value} but the operation was "
                f"{phase.value}: a phase change has no event"
            )
            assert e.kind == f"phase.{to.value}"
            assert TRANSITIONS[(came_from, Event(e.data["event"]))] == to, e.data
            phase = to
        assert phase == op.phase, (
            f"op {op.id} is {op.phase.value} but its last phase event says {phase.value}"
        )
        assert (op.ended_at is not None) == (op.phase in TERMINAL), f"op {op.id} ended badly"
        assert op.outcome == (op.phase.value if op.ended_at is not None else None)
    assert not per_op, f"phase events of unknown operations {sorted(per_op)}"


def _check_verified(store: Store, op: Operation) -> None:
    """A completed rollback's target tripped no trigger in any window of its verification."""
    assert op.ended_at is not None
    served = read_batches(store, MODEL, since=op.step_started_at, until=op.ended_at).get(
        op.target, []
    )
    for trig in op.policy.triggers:
        for i, first in enumerate(served):
            window = [b for b in served[i:] if b.start < first.start + trig.window]
            result = triggers.evaluate(trig, window)
            assert not result.fired, (
                f"rollback {op.id} completed although {op.target} failed its verification "
                f"window: {result.summary}"
            )


# -- the crash runs ------------------------------------------------------------------------

Action = tuple[float, str, Callable[[], None]]


def _plan(site: Site, rng: random.Random) -> tuple[str, list[Action]]:
    """A scenario: what the operator does, and when (seconds after the first command)."""
    deploy: Action = (0.0, "deploy", lambda: site.command("deploy", version="1.1.0"))
    scenario = rng.choice(
        ["rollout", "bad-candidate", "both-bad", "rollback", "pause", "forced", "abort", "promote"]
    )
    actions = [deploy]
    if scenario == "bad-candidate":
        actions.insert(0, (0.0, "health", lambda: site.health({"1.1.0": BAD})))
    elif scenario == "both-bad":
        actions.insert(0, (0.0, "health", lambda: site.health({"1.1.0": BAD, "1.0.0": BAD})))
    elif scenario == "rollback":
        emergency = rng.random() < 0.5
        actions.append((rng.uniform(0.1, 3.0), "rollback",
                        lambda: site.command("rollback", emergency=emergency, reason="pager")))  # fmt: skip
    elif scenario == "pause":
        at = rng.uniform(0.0, 2.0)
        actions.append((at, "pause", lambda: site.command("pause")))
        actions.append((at + rng.uniform(0.2, 2.0), "resume", lambda: site.command("resume")))
    elif scenario == "forced":  # `backout traffic --force`: pause the rollout, set the weights
        at = rng.uniform(0.0, 2.0)
        actions.append((at, "force", lambda: site.force({"1.0.0": 100.0})))
        actions.append((at + rng.uniform(0.2, 2.0), "resume", lambda: site.command("resume")))
    elif scenario == "abort":
        actions.append((rng.uniform(0.0, 2.5), "abort", lambda: site.command("abort")))
    elif scenario == "promote":
        actions.append((rng.uniform(0.0, 1.5), "promote", lambda: site.command("promote")))
    return scenario, actions


def crash_run(spawner: Spawner, path: Path, url: str, seed: int) -> None:
    rng = random.Random(seed)
    site = make_site(path, url)
    scenario, actions = _plan(site, rng)

    def start(holder: str) -> Proc:
        return spawner.start(site.url, path / "artifacts", site.health_file, holder, seed)

    procs = [start(f"ctl-{seed}-a")]
    time.sleep(rng.uniform(0.0, 0.5))  # on purpose: the first command lands at a random moment
    kills = sorted(rng.uniform(0.0, 2.5) for _ in range(rng.choice([1, 1, 2])))
    site.t0 = time.time()
    site.note(f"scenario {scenario}, kills at {', '.join(f'{k:.2f}s' for k in kills)}")
    try:
        plan = [*actions, *((k, "kill", lambda: None) for k in kills)]
        for n, (at, name, act) in enumerate(sorted(plan, key=lambda a: a[0])):
            time.sleep(max(0.0, site.t0 + at - time.time()))  # on purpose: act on schedule
            if name != "kill":
                act()
                continue
            procs[-1].kill()
            site.note(f"killed {procs[-1].holder}; active: {_describe(site.active())}")
            check_invariants(site.store)
            procs.append(start(f"ctl-{seed}-{n}"))
        _settle(site)
        procs[-1].stop()
        check_invariants(site.store, final=True)
        _check_outcome(site, scenario)
    except Exception as exc:
        for p in procs:
            p.kill()
        raise AssertionError(
            f"seed {seed}: {type(exc).__name__}: {exc}\n" + "\n".join(site.log) + "\n" + _timeline(site)
            + "".join(f"\n--- {p.holder} stderr ---\n{p.stderr()}" for p in procs)
        ) from None  # fmt: skip
    finally:
        site.store.dispose()


def _settle(site: Site) -> None:
    """Wait for the operation to end; lift a freeze (after checking it escalated) on the way."""

    def ended() -> bool:
        op = site.active()
        if op is None:
            return True
        if op.phase == Phase.FROZEN and _escalated(site, op.id):
            site.command("unfreeze", reason="the test lifts it")
        elif op.phase in (Phase.PAUSED, Phase.AWAITING_APPROVAL) and op.actor == "ops":
            site.command("resume")
        return False

    wait_for(ended, SETTLE_S, "a terminal phase", interval=0.1,
             detail=lambda: f"active: {_describe(site.active())}")  # fmt: skip


def _escalated(site: Site, op_id: int) -> bool:
    with site.store.read() as conn:
        return any(
            e.data.get("operation") == op_id
            for e in audit.list_events(conn, MODEL, kinds=["escalation"])
        )


def _check_outcome(site: Site, scenario: str) -> None:
    """The resumed controller finished what the scenario started, the way it would have."""
    ops = site.operations()
    last = ops[-1]
    weights = Deployments(site.store, site.registry).require(MODEL).weights
    live = {v: w / 100 for v, w in weights.items()}
    if last.outcome != Phase.UNFROZEN.value:
        assert live == {v: w for v, w in last.weights.items() if w > 0}, (
            f"live {live} differs from the last operation's weights {last.weights}"
        )
    kinds = [(o.kind, o.outcome) for o in ops[1:]]
    if scenario in ("rollout", "promote"):
        assert kinds == [("rollout", "succeeded")], kinds
        assert live == {"1.1.0": 100}
    elif scenario == "bad-candidate":
        assert kinds == [("rollout", "aborted"), ("rollback", "rolled-back")], kinds
        assert live == {"1.0.0": 100}
    elif scenario == "both-bad":
        assert ("rollback", "unfrozen") in kinds, kinds
    elif scenario == "rollback":
        assert kinds[-1] == ("rollback", "rolled-back"), kinds
        assert live == {"1.0.0": 100}
    elif scenario == "abort":
        assert kinds in ([("rollout", "aborted")], [("rollout", "succeeded")]), kinds
    elif scenario in ("pause", "forced"):
        assert kinds == [("rollout", "succeeded")], kinds


def _describe(op: Operation | None) -> str:
    return "none" if op is None else f"op {op.id} {op.kind} {op.phase.value} {op.weights}"


def _timeline(site: Site) -> str:
    with site.store.read() as conn:
        events = audit.list_events(conn, MODEL)
    return "\n".join(
        f"  {e.seq:4} {e.at:%H:%M:%S.%f} {e.actor:<12} {e.kind:<22} {e.reason[:90]}" for e in events
    )


def test_kill_9_at_random_moments_keeps_the_invariants_and_the_next_controller_finishes(
    spawner: Spawner, tmp_path: Path, new_store_url: Callable[[], str], database: str
) -> None:
    """RUNS seeded runs, PARALLEL at a time: kill -9 the controller mid-run, restart, finish."""
    runs = RUNS if database == "sqlite" else RUNS_PG
    with ThreadPoolExecutor(PARALLEL) as pool:
        futures = [
            pool.submit(crash_run, spawner, tmp_path / f"run{s}", new_store_url(), s)
            for s in range(runs)
        ]
    failures = [str(f.exception()) for f in futures if f.exception() is not None]
    assert not failures, f"{len(failures)} of {runs} runs failed:\n\n" + "\n\n".join(failures)


# -- the lease -----------------------------------------------------------------------------


@contextmanager
def _watch_lease(store: Store) -> Iterator[list[tuple[float, str, float]]]:
    """Record every change of the controller lease: (seen at, holder, expires at)."""
    seen: list[tuple[float, str, float]] = []
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            with store.read() as conn:
                row = conn.execute(
                    sa.select(schema.leases).where(schema.leases.c.name == "controller")
                ).first()
            if row is not None and (not seen or seen[-1][1:] != (row.holder, row.expires_at)):
                seen.append((time.time(), row.holder, row.expires_at))
            stop.wait(0.01)

    t = threading.Thread(target=watch)
    t.start()
    try:
        yield seen
    finally:
        stop.set()
        t.join()


def _wait_for_event(
    site: Site, predicate: Callable[[audit.Event], bool], what: str, timeout: float = 10.0
) -> audit.Event:
    def found() -> audit.Event | None:
        with site.store.read() as conn:
            return next((e for e in audit.list_events(conn, MODEL) if predicate(e)), None)

    return wait_for(found, timeout, what, detail=lambda: _timeline(site))


def test_one_controller_acts_per_store_and_the_other_takes_over_when_it_dies(
    spawner: Spawner, tmp_path: Path, store_url: str
) -> None:
    site = make_site(tmp_path / "site", store_url)
    try:
        with _watch_lease(site.store) as lease:
            a = spawner.start(
                site.url, tmp_path / "site" / "artifacts", site.health_file, "ctl-a", 1
            )
            b = spawner.start(
                site.url, tmp_path / "site" / "artifacts", site.health_file, "ctl-b", 2
            )
            site.command("deploy", version="1.1.0")
            first = _wait_for_event(
                site,
                lambda e: e.kind.startswith("phase.") and e.actor != "ops",
                "a controller's first phase event",
            )
            holder, other = (a, b) if first.actor == "ctl-a" else (b, a)
            holder.kill()
            died = time.time()
            expires = lease[-1][2]
            _settle(site)
            other.stop()
        check_invariants(site.store, final=True)
        with site.store.read() as conn:
            acted = [e for e in audit.list_events(conn, MODEL) if e.actor in ("ctl-a", "ctl-b")]
        actors = [e.actor for e in acted]
        # Only one acts at a time: all of the first holder's events, then all of the other's.
        assert actors == sorted(actors, key=lambda x: x != holder.holder), actors
        assert holder.holder in actors and other.holder in actors
        first_of_other = next(e for e in acted if e.actor == other.holder)
        assert first_of_other.at.timestamp() >= expires, "the other acted before the lease expired"
        assert first_of_other.at.timestamp() - died < LEASE_S + 2.0, "the takeover was slow"
        holders = [h for _, h, _ in lease]
        assert [k for k, _ in itertools.groupby(holders)] == [holder.holder, other.holder]
        assert site.operations()[-1].outcome == "succeeded"
    finally:
        site.store.dispose()


# -- every crash point, deterministically ---------------------------------------------------


class Killed(BaseException):
    """The process died here (a BaseException, so nothing in the controller catches it)."""


class DyingStore(Store):
    """A store whose ``write()`` kills its caller right after the N-th commit."""

    def __init__(self, store: Store, die_after: int) -> None:
        super().__init__(store.engine)
        self.left = die_after

    @contextmanager
    def write(self) -> Iterator[sa.Connection]:
        with super().write() as conn:
            yield conn
        self.left -= 1
        if self.left == 0:
            raise Killed


def _crash_world(new_world: NewWorld, die_after: int | None) -> tuple[World, int]:
    """Both releases go bad during a rollout: trigger, rollback, freeze. The controller dies
    after its ``die_after``-th commit; a new one finishes. Returns the world and the commits
    of the first controller."""
    w = new_world(WORLD_POLICY.replace("10s", "2s").replace("20s", "2s"))
    w.controller.deploy("iris", "1.1.0", actor="ana")
    dying = DyingStore(w.store, die_after or 10**9)
    w.controller = Controller(
        dying, w.registry, notifier=w.notifier, clock=w.clock, prober=w.prober
    )
    w.set_health("1.1.0", error_rate=0.5)
    w.set_health("1.0.0", error_rate=0.5)
    commits = 0
    for _ in range(60):
        try:
            w.second()
        except Killed:
            restart(w)
            check_invariants(w.store)
        op = w.op()
        if op is not None and op.phase == Phase.FROZEN:
            break
    commits = 10**9 - dying.left if die_after is None else die_after
    w.run(3)  # the controller that is alive now escalates, if nobody did
    return w, commits


def test_a_controller_killed_after_any_commit_is_resumed_by_the_next(new_world: NewWorld) -> None:
    """Crash after each of the controller's commits in turn: the invariants hold and the next
    controller finishes the job (here: a freeze that escalated)."""
    _, commits = _crash_world(new_world, None)
    assert commits > 5
    for k in range(1, commits + 1):
        w, _ = _crash_world(new_world, k)
        op = w.op()
        assert op is not None and op.phase == Phase.FROZEN, f"crash after commit {k}: {op}"
        check_invariants(w.store, final=True)
        w.controller.unfreeze("iris", actor="lead", reason="fixed")
        check_invariants(w.store, final=True)


# -- commands that land in the middle of a tick ---------------------------------------------


def _command_mid_tick(w: World, command: Callable[[], object]) -> dict[str, float]:
    """Run ``command`` (another process's) in each tick after it has read the operation and
    before it writes its decision, until a tick would have moved a step; returns the weights
    the command left."""
    source = w.controller.telemetry
    left: dict[str, float] = {}

    class Interrupting:
        """The world's telemetry, with another process's command landing during the read."""

        def batches(
            self, model: str, since: float, until: float | None = None
        ) -> dict[str, list[Any]]:
            op = w.op()
            if (
                not left
                and op is not None
                and w.clock() - op.step_started_at >= op.policy.rollout.bake
            ):
                command()
                left.update(w.weights())
            return source.batches(model, since, until)

    w.controller.telemetry = Interrupting()
    w.run_until(lambda: bool(left), limit=30)
    return left


@pytest.mark.parametrize("command", ["pause", "abort"])
def test_a_command_landing_mid_tick_is_not_overwritten_by_the_tick(
    world: World, command: str
) -> None:
    w = world
    w.controller.deploy("iris", "1.1.0", actor="ana")
    other = Controller(
        w.store, w.registry, notifier=w.notifier, clock=w.clock, actor="ops", prober=w.prober
    )
    left = _command_mid_tick(w, lambda: getattr(other, command)("iris", actor="bo"))
    check_invariants(w.store)
    last = w.last_op()
    assert last.phase == (Phase.PAUSED if command == "pause" else Phase.ABORTED)
    assert w.weights() == left
    w.run(15)
    check_invariants(w.store)
    assert w.last_op().phase == last.phase, "the command was lost"
    assert w.weights() == left
