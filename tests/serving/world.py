"""A world for gateway tests: a store with iris releases, a gateway serving them on
loopback, and a client that speaks to it."""

from __future__ import annotations

from pathlib import Path

import httpx

from backout.registry.manifest import Runtime, RuntimeKind
from backout.registry.releases import Registry
from backout.serving.app import Gateway
from backout.store import Store
from backout.telemetry.batches import Batch, read_batches
from backout.traffic.deployments import Deployments
from tests.waits import wait_for

ROW = [5.1, 3.5, 1.4, 0.2]


class World:
    """A store with iris releases, a gateway serving them on loopback, and a client."""

    def __init__(
        self,
        store: Store,
        registry: Registry,
        deployments: Deployments,
        url: str,
        gateway: Gateway,
        tmp: Path,
    ) -> None:
        self.store, self.registry, self.deployments = store, registry, deployments
        self.url, self.gateway, self.tmp = url, gateway, tmp
        self.http = httpx.Client(base_url=url, timeout=10)

    def predict(
        self, model: str = "iris", rows: list[list[float]] | None = None, **headers: str
    ) -> httpx.Response:
        return self.http.post(
            f"/models/{model}/predict", json={"instances": rows or [ROW]}, headers=headers
        )

    def set_traffic(self, weights: dict[str, float], **kw: object) -> None:
        table = self.deployments.set_traffic("iris", weights, actor="test", **kw)  # type: ignore[arg-type]
        self.wait_for_generation(table.generation)

    def wait_for_generation(self, _table_generation: int, timeout: float = 5.0) -> None:
        target = self.deployments.generation()
        wait_for(
            lambda: self.gateway.live.generation >= target,
            timeout,
            f"the gateway to pick up the new routes (generation {target})",
            interval=0.005,
        )

    def python_release(self, version: str, code: bytes) -> None:
        module = "m" + version.replace(".", "_")
        path = self.tmp / f"{module}.py"
        path.write_bytes(code)
        self.registry.register(
            "iris",
            version,
            [path],
            runtime=Runtime(kind=RuntimeKind.PYTHON, options={"entrypoint": f"{module}:predict"}),
            actor="test",
        )

    def batches(self, version: str) -> list[Batch]:
        """The telemetry batches of ``iris@version`` in the store, after a flush of this worker."""
        self.gateway.flush()
        return read_batches(self.store, "iris").get(version, [])
