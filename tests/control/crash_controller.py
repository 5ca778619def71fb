"""A controller process for the crash tests, with a gateway's telemetry built in.

``test_controller_crash.py`` next to it runs this file as a script (``python
tests/control/crash_controller.py``): a fork server that imports everything once and then
forks one controller process per JSON line it reads on stdin (store URL, artifact folder,
lease holder, health file, log file, tick interval, lease length, seed), answering with the
child's pid. Each controller runs :meth:`Controller.run` on the real clock: while it holds
the lease, each tick first writes the traffic since the previous tick as telemetry batches
(split by the live route table, failing as often as the health file says) and then ticks
every model. It runs until it is killed; SIGTERM stops it cleanly.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from backout.control.controller import Controller
from backout.control.notify import InMemoryNotifier
from backout.control.operations import Operation
from backout.registry.artifacts import LocalBlobStore
from backout.registry.releases import Registry
from backout.store import Store, open_store
from backout.telemetry.batches import Batch, latency_bucket, write_batches
from backout.traffic.deployments import Deployments

RPS = 400  # requests per second across a model's releases
HEALTHY_ERROR_RATE = 0.01


class TrafficController(Controller):
    """A controller whose every tick is preceded by the traffic a gateway would have flushed."""

    def __init__(
        self, store: Store, registry: Registry, *, health: Path, seed: int, **kw: Any
    ) -> None:
        super().__init__(store, registry, **kw)
        self.health_file = health
        self.rng = np.random.default_rng(seed)
        self.traffic = Deployments(store, registry)
        self._last: float | None = None

    def tick_all(self) -> list[Operation]:
        self._write_traffic()
        return super().tick_all()

    def _health(self) -> dict[str, float]:
        try:
            doc = orjson.loads(self.health_file.read_bytes())
        except (OSError, orjson.JSONDecodeError):
            return {}
        return {str(k): float(v) for k, v in doc.items()}

    def _write_traffic(self) -> None:
        now = self.clock()
        last, self._last = self._last, now
        if last is None:
            return  # traffic is counted from this process's first tick on
        seconds = min(now - last, 1.0)
        health = self._health()
        batches = []
        for model in self.traffic.models():
            table = self.traffic.get(model)
            if table is None:
                continue
            for version, bp in table.weights.items():
                n = int(self.rng.binomial(int(RPS * seconds), bp / 10_000))
                if n:
                    rate = health.get(version, HEALTHY_ERROR_RATE)
                    batches.append(self._batch(model, version, n, rate, last, now))
        write_batches(self.store, batches, self.actor)

    def _batch(
        self, model: str, version: str, n: int, error_rate: float, start: float, end: float
    ) -> Batch:
        b = Batch(model, version, start=start, end=end, requests=n)
        errors = int(self.rng.binomial(n, error_rate))
        b.predictions = n - errors
        if errors:
            b.errors["model"] = errors
        lat = np.exp(self.rng.normal(np.log(0.005), 0.3, size=n))
        logs = np.log(lat)
        b.log_latency_sum = float(logs.sum())
        b.log_latency_sumsq = float((logs**2).sum())
        for x in lat:
            bucket = latency_bucket(float(x))
            b.latency[bucket] = b.latency.get(bucket, 0) + 1
        labels = self.rng.choice(["0", "1", "2"], size=b.predictions, p=[0.34, 0.33, 0.33])
        for label, count in zip(*np.unique(labels, return_counts=True), strict=True):
            b.outputs[str(label)] = int(count)
        return b


def run_controller(cfg: dict[str, Any]) -> None:
    """Run one controller until SIGTERM (or SIGKILL, which is the point)."""
    store = open_store(cfg["store"], migrate=False)
    registry = Registry(store, LocalBlobStore(Path(cfg["artifacts"])))
    controller = TrafficController(
        store,
        registry,
        health=Path(cfg["health"]),
        seed=int(cfg["seed"]),
        notifier=InMemoryNotifier(),
        clock=time.time,
        actor=cfg["holder"],
    )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    controller.run(
        stop, interval=float(cfg["interval"]), holder=cfg["holder"], lease_s=float(cfg["lease"])
    )


def main() -> None:
    """A fork server: one JSON line in, one controller process forked, its pid out.

    Importing backout takes a second or two; forking this already-imported, single-threaded
    process takes a millisecond, so a controller restarts as fast as a supervisor would
    restart it. Each child is a process of its own, killed by pid like any other.
    """
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # children are reaped by the kernel
    print("ready", flush=True)
    for line in sys.stdin:
        cfg = orjson.loads(line)
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                null = os.open(os.devnull, os.O_RDWR)
                log = os.open(cfg["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
                os.dup2(null, 0)
                os.dup2(null, 1)
                os.dup2(log, 2)
                run_controller(cfg)
            except BaseException:
                traceback.print_exc()
                code = 1
            finally:
                sys.stderr.flush()
                os._exit(code)
        print(pid, flush=True)


if __name__ == "__main__":
    main()
