"""A store and tokens for the page tests: iris@1.0.0 known-good, a rollout of 1.1.0 running.

Traffic is synthetic telemetry (as a gateway would flush it), written by :class:`Traffic`
in a thread; a real :class:`~backout.control.controller.Controller` runs on the real clock.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from backout.api import tokens
from backout.api.roles import make_grant
from backout.control.controller import Controller
from backout.control.policy import parse_policy
from backout.registry.artifacts import LocalBlobStore
from backout.registry.releases import Registry
from backout.store import Store, open_store
from backout.telemetry.batches import Batch, latency_bucket, write_batches
from backout.traffic.deployments import Deployments
from tests.control.world import FakeProber

# Short bakes, so a staged rollback ends within seconds on the real clock.
POLICY = """
rollout: {steps: [10, 50, 100], bake: 1h, min_requests: 10}
rollback:
  mode: staged
  steps: [50, 100]
  bake: 2s
  verification: {duration: 3s, min_requests: 10}
completion: {rollout: 2s}
termination: {max_rollback_duration: 1m}
triggers: []
status_page: {component: "Iris <b>scoring</b>"}
"""


@dataclass
class Pages:
    """The world of the page tests."""

    url: str
    folder: Path
    store: Store
    registry: Registry
    controller: Controller
    tokens: dict[str, str] = field(default_factory=dict)  # role -> token


def make_pages(folder: Path, url: str | None = None, policy: str = POLICY) -> Pages:
    url = url or f"sqlite:///{folder / 'store.db'}"
    store = open_store(url, create=True)
    registry = Registry(store, LocalBlobStore(folder / "artifacts"))
    ctl = Controller(store, registry, prober=FakeProber())
    for v in ("1.0.0", "1.1.0"):
        f = folder / f"iris-{v}.bin"
        f.write_bytes(f"iris weights {v}".encode())
        registry.register("iris", v, [f], actor="setup")
    ctl.set_policy("iris", parse_policy(policy), source="test", actor="setup")
    ctl.deploy("iris", "1.0.0", actor="setup")
    ctl.deploy("iris", "1.1.0", actor="setup")
    pages = Pages(url, folder, store, registry, ctl)
    for role in ("viewer", "responder", "releaser", "admin"):
        issued = tokens.create(store, [make_grant(role, ["*"])], actor="setup", name=role)
        pages.tokens[role] = issued.token
    return pages


class Traffic:
    """About 200 healthy requests a second split by the live table, until stopped."""

    def __init__(self, store: Store, registry: Registry) -> None:
        self.store = store
        self.deployments = Deployments(store, registry)
        self.stop = threading.Event()
        self.rng = np.random.default_rng(3)
        self.thread = threading.Thread(target=self.run, name="fake-traffic", daemon=True)

    def __enter__(self) -> Traffic:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(10)

    def run(self) -> None:
        import time

        while not self.stop.wait(0.5):
            table = self.deployments.get("iris")
            now = time.time()
            batches = []
            for version, bp in (table.weights if table else {}).items():
                n = int(self.rng.binomial(100, bp / 10_000))
                if n:
                    b = Batch("iris", version, start=now - 0.5, end=now)
                    b.requests = b.predictions = n
                    for x in np.exp(self.rng.normal(np.log(0.005), 0.2, size=n)):
                        bucket = latency_bucket(float(x))
                        b.latency[bucket] = b.latency.get(bucket, 0) + 1
                        b.log_latency_sum += float(np.log(x))
                        b.log_latency_sumsq += float(np.log(x)) ** 2
                    b.outputs["1"] = n
                    batches.append(b)
            write_batches(self.store, batches, "test")
