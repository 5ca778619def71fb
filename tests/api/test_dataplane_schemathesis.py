"""Schemathesis against the data path (the gateway's /v2 and predict routes), described by
:func:`backout.serving.openapi.openapi`: no server error, no answer that breaks it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import schemathesis

from backout.registry.artifacts import LocalBlobStore
from backout.registry.releases import Registry
from backout.serving.app import Gateway, GatewaySettings
from backout.serving.openapi import openapi
from backout.store import Store
from backout.traffic.deployments import Deployments
from tests.api.test_schemathesis import fuzz
from tests.loopback import serve
from tests.models import register_iris
from tests.waits import wait_for

pytestmark = [pytest.mark.databases("sqlite"), pytest.mark.slow]


@pytest.fixture
def gateway_url(
    store: Store, registry: Registry, blobs: LocalBlobStore, tmp_path: Path
) -> Iterator[str]:
    register_iris(registry, tmp_path / "models", "1.0.0")
    Deployments(store, registry).set_traffic("iris", {"1.0.0": 100}, actor="test")
    gateway = Gateway(store, blobs, GatewaySettings(poll_interval_s=0.05, max_body_bytes=64_000,
                                                    predict_timeout_s=2.0))  # fmt: skip
    with serve(gateway.app) as url:
        ready = lambda: httpx.get(f"{url}/v2/health/ready").status_code == 200  # noqa: E731
        wait_for(ready, 30, "the gateway to load iris@1.0.0")
        yield url


def test_data_path_conforms(gateway_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    schema = schemathesis.openapi.from_dict(openapi())
    schema.config.update(base_url=gateway_url)
    summary = fuzz(schema, {}, max_examples=8, path={"model": "iris", "version": "1.0.0"})
    with capsys.disabled():
        print(f"\nschemathesis data path: {summary['operations']} operations, {summary['calls']} "
              f"calls, statuses {dict(sorted(summary['statuses'].items()))}, "
              f"{len(summary['failures'])} failures")  # fmt: skip
    assert not summary["failures"], "\n".join(summary["failures"])
