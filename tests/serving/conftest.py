"""The gateway tests' world: iris@1.0.0 live, 1.1.0 (a much weaker model) registered."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from backout.registry.artifacts import LocalBlobStore
from backout.registry.releases import Registry
from backout.serving.app import Gateway, GatewaySettings
from backout.store import Store
from backout.traffic.deployments import Deployments
from tests.loopback import serve
from tests.models import register_iris
from tests.serving.world import World


@pytest.fixture
def world(
    store: Store, registry: Registry, blobs: LocalBlobStore, tmp_path: Path
) -> Iterator[World]:
    """A gateway on this test's database (see ``tests/conftest.py``), serving on loopback."""
    register_iris(registry, tmp_path / "models", "1.0.0", c=1.0)
    register_iris(registry, tmp_path / "models", "1.1.0", c=0.01)
    deployments = Deployments(store, registry)
    deployments.set_traffic("iris", {"1.0.0": 100}, actor="test")
    gateway = Gateway(
        store,
        blobs,
        GatewaySettings(
            poll_interval_s=0.005,
            flush_interval_s=0.2,
            max_body_bytes=64_000,
            predict_timeout_s=2.0,
        ),
    )
    with serve(gateway.app) as url:
        w = World(store, registry, deployments, url, gateway, tmp_path)
        yield w
        w.http.close()
