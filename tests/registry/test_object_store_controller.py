"""The controller with its artifacts in object storage that goes down during an incident."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from backout.control.controller import Controller
from backout.control.notify import InMemoryNotifier
from backout.control.phases import Phase
from backout.control.policy import parse_policy
from backout.registry.objectstore import S3BlobStore
from backout.registry.releases import Registry
from backout.store import audit, open_store
from backout.traffic.deployments import Deployments
from tests.control.world import POLICY, Clock, FakeProber, World
from tests.loopback import free_port
from tests.registry.conftest import MakeS3Blobs


def s3_world(tmp_path: Path, blobs_factory: MakeS3Blobs) -> World:
    """The controller scenarios' world, its releases in a bucket; 1.1.0 rolling out."""
    store = open_store(f"sqlite:///{tmp_path / 'store.db'}", create=True)
    blobs = blobs_factory()
    registry = Registry(store, blobs)
    for v in ("1.0.0", "1.1.0"):
        f = tmp_path / f"model-{v}.bin"
        f.write_bytes(f"weights {v}".encode())
        registry.register("iris", v, [f], actor="test")
    clock, notifier, prober = Clock(), InMemoryNotifier(), FakeProber()
    controller = Controller(store, registry, notifier=notifier, clock=clock, prober=prober)
    controller.set_policy("iris", parse_policy(POLICY), source="test", actor="test")
    controller.deploy("iris", "1.0.0", actor="test")
    controller.deploy("iris", "1.1.0", actor="test")
    return World(store, registry, Deployments(store, registry), controller, notifier, clock, prober)


def go_down(w: World, *, empty_cache: bool = False) -> S3BlobStore:
    """The object store stops answering: this host's endpoint refuses connections. Its
    cache stays, unless ``empty_cache`` (a controller on a new host). Returns the working
    store, to bring it back with."""
    up = w.registry.blobs
    assert isinstance(up, S3BlobStore)
    if empty_cache:
        shutil.rmtree(up.cache.root)
    dead = f"http://127.0.0.1:{free_port()}"
    w.registry.blobs = S3BlobStore(up.bucket, "releases", endpoint=dead, cache=up.cache)
    return up


def store_errors(w: World) -> list[str]:
    with w.store.read() as conn:
        return [e.reason for e in audit.list_events(conn, "iris", kinds=("controller.error",))]


@pytest.mark.slow
def test_a_rollback_waits_for_the_object_store_and_says_why_in_the_events(
    tmp_path: Path, make_s3_blobs: MakeS3Blobs
) -> None:
    w = s3_world(tmp_path, make_s3_blobs)
    w.run(3)
    assert w.weights() == {"1.0.0": 90.0, "1.1.0": 10.0}
    up = go_down(w, empty_cache=True)
    w.set_health("1.1.0", error_rate=0.6)  # the trigger fires; its target cannot be checked
    w.run(15)
    errors = store_errors(w)
    assert len(errors) == 1  # one event for the fault, not one per tick
    assert errors[0].startswith("ArtifactStoreUnavailable: artifact store s3://")
    assert "cannot be reached" in errors[0] and "\n" not in errors[0]
    op = w.op()
    assert op is not None and op.phase == Phase.ROLLING_OUT  # nothing moved it cannot verify
    w.registry.blobs = up  # the object store answers again
    w.run_until(lambda: w.weights().get("1.0.0", 0) == 100.0, limit=120)


def test_a_rollback_to_a_release_this_host_holds_goes_ahead_while_the_store_is_down(
    tmp_path: Path, make_s3_blobs: MakeS3Blobs
) -> None:
    w = s3_world(tmp_path, make_s3_blobs)
    go_down(w)  # 1.0.0 was verified on this host when it was deployed: it is in the cache
    op = w.controller.rollback("iris", actor="bo", emergency=True, reason="errors")
    assert op.target == "1.0.0" and w.weights() == {"1.0.0": 100.0}
    assert store_errors(w) == []
