"""Fixtures for the gateway's tests: a store with iris releases and a gateway on loopback."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from backout.registry.artifacts import LocalBlobStore
from backout.registry.manifest import Runtime, RuntimeKind
from backout.registry.releases import Registry
from backout.serving.app import Gateway, GatewaySettings
from backout.store import Store, open_store
from backout.telemetry.batches import Batch, read_batches
from backout.traffic.deployments import Deployments
from tests.loopback import serve
from tests.models import register_iris

ROW = [5.1, 3.5, 1.4, 0.2]


class GatewayWorld:
    """A store with iris 1.0.0 and 1.1.0, a gateway serving 1.0.0 on loopback, a client."""

    def __init__(
        self, store: Store, blobs: LocalBlobStore, gateway: Gateway, url: str, tmp: Path
    ) -> None:
        self.store, self.blobs, self.gateway, self.url, self.tmp = store, blobs, gateway, url, tmp
        self.registry = Registry(store, blobs)
        self.deployments = Deployments(store, self.registry)
        self.http = httpx.Client(base_url=url, timeout=10)

    def predict(self, rows: list[list[float]] | None = None, **headers: str) -> httpx.Response:
        return self.http.post(
            "/models/iris/predict", json={"instances": rows or [ROW]}, headers=headers
        )

    def set_traffic(self, weights: dict[str, float]) -> None:
        self.deployments.set_traffic("iris", weights, actor="test")
        self.wait_for_routes()

    def wait_for_routes(self, timeout: float = 10.0) -> None:
        target = self.deployments.generation()
        deadline = time.monotonic() + timeout
        while self.gateway.live.generation < target:
            assert time.monotonic() < deadline, "the gateway did not pick up the new routes"
            time.sleep(0.005)

    def python_release(self, version: str, code: bytes, **register: object) -> None:
        """Register ``iris@version`` as a Python module with ``code``."""
        module = "m" + version.replace(".", "_")
        path = self.tmp / f"{module}.py"
        path.write_bytes(code)
        self.registry.register(
            "iris",
            version,
            [path],
            runtime=Runtime(kind=RuntimeKind.PYTHON, options={"entrypoint": f"{module}:predict"}),
            actor="test",
            **register,  # type: ignore[arg-type]
        )

    def batches(self, version: str) -> list[Batch]:
        self.gateway.flush()
        return read_batches(self.store, "iris").get(version, [])


@pytest.fixture
def gw(tmp_path: Path) -> Iterator[GatewayWorld]:
    store = open_store(f"sqlite:///{tmp_path / 'store.db'}")
    blobs = LocalBlobStore(tmp_path / "artifacts")
    registry = Registry(store, blobs)
    register_iris(registry, tmp_path / "models", "1.0.0", c=1.0)
    register_iris(registry, tmp_path / "models", "1.1.0", c=0.01)
    Deployments(store, registry).set_traffic("iris", {"1.0.0": 100}, actor="test")
    settings = GatewaySettings(
        poll_interval_s=0.005, flush_interval_s=0.2, max_body_bytes=64_000, predict_timeout_s=2.0
    )
    gateway = Gateway(store, blobs, settings)
    with serve(gateway.app) as url:
        world = GatewayWorld(store, blobs, gateway, url, tmp_path)
        yield world
        world.http.close()
    store.dispose()
