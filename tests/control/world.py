"""A world for controller scenarios: a store with releases, a fake clock, synthetic traffic.

Traffic is written as telemetry batches, one per second per release, split by the live
route table's weights, so the controller sees exactly what a gateway would have flushed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from backout.control.controller import Controller
from backout.control.notify import InMemoryNotifier
from backout.control.operations import Operation
from backout.control.policy import Policy, parse_policy
from backout.registry.artifacts import BlobStore, LocalBlobStore
from backout.registry.manifest import ReleaseManifest
from backout.registry.releases import Registry
from backout.runtimes.probe import Probe
from backout.store import Store, audit, open_store
from backout.telemetry.batches import Batch, latency_bucket, write_batches
from backout.traffic.deployments import Deployments

POLICY = """
rollout:
  steps: [10, 50, 100]
  bake: 10s
  min_requests: 100
  missing_data_after: 30s
rollback:
  mode: staged
  steps: [50, 100]
  bake: 10s
  verification: {duration: 20s, min_requests: 50}
completion: {rollout: 20s}
triggers:
  - {name: errors, kind: error_rate, max_rate: 0.2, window: 10s}
  - {name: integrity, kind: integrity, window: 10s}
escalation:
  after: 60s
  contacts: [{name: ana, email: ana@example.com}, {name: bo, email: bo@example.com}]
"""


class FakeProber:
    """The load-and-answer check, in memory: every release answers unless named in ``broken``."""

    def __init__(self) -> None:
        self.broken: dict[str, str] = {}  # ref -> why it fails
        self.calls: list[str] = []

    def __call__(self, manifest: ReleaseManifest, blobs: BlobStore, *, timeout_s: float) -> Probe:
        self.calls.append(manifest.ref)
        why = self.broken.get(manifest.ref)
        if why is not None:
            return Probe(manifest.ref, False, "load", why)
        return Probe(manifest.ref, True, "answer", "loaded and answered the contract's input")


class Clock:
    def __init__(self, t: float = 1_800_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


@dataclass
class Health:
    """How a release behaves: error rate, median latency, NaN rate."""

    error_rate: float = 0.01
    latency_ms: float = 5.0
    nan_rate: float = 0.0


@dataclass
class World:
    store: Store
    registry: Registry
    deployments: Deployments
    controller: Controller
    notifier: InMemoryNotifier
    clock: Clock
    prober: FakeProber
    health: dict[str, Health] = field(default_factory=dict)
    rng: np.random.Generator = field(default_factory=lambda: np.random.default_rng(7))
    rps: int = 200

    def set_health(self, version: str, **kw: float) -> None:
        self.health[version] = Health(**kw)

    def second(self) -> None:
        """One second of traffic split by the live table, then one controller tick."""
        table = self.deployments.get("iris")
        now = self.clock()
        batches = []
        if table is not None:
            for version, bp in table.weights.items():
                n = int(self.rng.binomial(self.rps, bp / 10_000))
                if n:
                    batches.append(self._batch(version, n, now))
        write_batches(self.store, batches, "test")
        self.clock.t += 1.0
        self.controller.tick_all()

    def run(self, seconds: int) -> None:
        for _ in range(seconds):
            self.second()

    def run_until(self, predicate: object, limit: int = 600) -> int:
        for i in range(limit):
            if predicate():  # type: ignore[operator]
                return i
            self.second()
        raise AssertionError("the condition never held")

    def _batch(self, version: str, n: int, now: float) -> Batch:
        h = self.health.get(version, Health())
        b = Batch("iris", version, start=now, end=now + 1)
        errors = int(self.rng.binomial(n, h.error_rate))
        nans = int(self.rng.binomial(n - errors, h.nan_rate))
        ok = n - errors - nans
        lat = np.exp(self.rng.normal(np.log(h.latency_ms / 1000), 0.3, size=n))
        for i, x in enumerate(lat):
            bucket = latency_bucket(float(x))
            b.latency[bucket] = b.latency.get(bucket, 0) + 1
            b.log_latency_sum += float(np.log(x))
            b.log_latency_sumsq += float(np.log(x)) ** 2
            del i
        b.requests = n
        b.predictions = ok
        if errors:
            b.errors["model"] = errors
        if nans:
            b.errors["nonfinite"] = nans
        labels = self.rng.choice(["0", "1", "2"], size=ok, p=[0.34, 0.33, 0.33])
        for label, count in zip(*np.unique(labels, return_counts=True), strict=True):
            b.outputs[str(label)] = int(count)
        return b

    # -- checks --------------------------------------------------------------------------

    def op(self) -> Operation | None:
        return self.controller.active("iris")

    def last_op(self) -> Operation:
        return self.controller.operations("iris", limit=1)[0]

    def weights(self) -> dict[str, float]:
        table = self.deployments.require("iris")
        return {v: w / 100 for v, w in table.weights.items()}

    def event_kinds(self) -> list[str]:
        with self.store.read() as conn:
            return [e.kind for e in audit.list_events(conn, "iris")]

    def check_invariants(self) -> None:
        """What must hold after any sequence of commands, faults and crashes."""
        table = self.deployments.get("iris")
        if table is not None:
            assert sum(table.weights.values()) == 10_000
            for version in table.weights:
                rel = self.registry.get(f"iris@{version}")
                assert rel.quarantined is None
        with self.store.read() as conn:
            assert audit.verify_chain(conn) == []
            import sqlalchemy as sa

            from backout.store import schema

            active = conn.execute(
                sa.select(sa.func.count())
                .select_from(schema.operations)
                .where(schema.operations.c.ended_at.is_(None))
            ).scalar()
            assert active is not None and active <= 1


def make_world(tmp_path: Path, policy_text: str = POLICY, *, url: str | None = None) -> World:
    store = open_store(url or f"sqlite:///{tmp_path / 'store.db'}", create=True)
    blobs = LocalBlobStore(tmp_path / "artifacts")
    registry = Registry(store, blobs)
    for v in ("1.0.0", "1.1.0", "1.2.0"):
        f = tmp_path / f"model-{v}.bin"
        f.write_bytes(f"weights {v}".encode())
        registry.register("iris", v, [f], actor="test")
    clock = Clock()
    notifier = InMemoryNotifier()
    prober = FakeProber()
    controller = Controller(store, registry, notifier=notifier, clock=clock, prober=prober)
    policy: Policy = parse_policy(policy_text)
    controller.set_policy("iris", policy, source="test", actor="test")
    controller.deploy("iris", "1.0.0", actor="test")  # first deploy: live at 100%, known-good
    return World(store, registry, Deployments(store, registry), controller, notifier, clock, prober)


class NewWorld(Protocol):
    """The ``new_world`` fixture: a new world, with its own store, under a policy."""

    def __call__(self, policy_text: str = POLICY) -> World: ...


def restart(world: World) -> None:
    """A new controller process: nothing carried over but the store."""
    world.controller = Controller(
        world.store, world.registry, notifier=world.notifier, clock=world.clock, prober=world.prober
    )


def weights_of(table: Mapping[str, int]) -> dict[str, float]:
    return {v: w / 100 for v, w in table.items()}
