"""``backout status`` keeps the callers' mistakes apart from the release's errors, and names
the kind of a release's errors (``load``: it cannot be loaded)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from backout.registry.artifacts import LocalBlobStore
from backout.registry.releases import Registry
from backout.store import open_store
from backout.telemetry.batches import Batch, ClientErrorKind, ErrorKind, write_batches
from backout.traffic.deployments import Deployments
from tests.cli.runner import Cli
from tests.models import register_iris


def test_status_shows_client_errors_on_their_own_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'store.db'}"
    store = open_store(url, create=True)
    registry = Registry(store, LocalBlobStore(tmp_path / "artifacts"))
    register_iris(registry, tmp_path / "models", "1.0.0")
    register_iris(registry, tmp_path / "models", "1.1.0")
    Deployments(store, registry).set_traffic("iris", {"1.0.0": 90, "1.1.0": 10}, actor="t")
    now = time.time()
    good = Batch("iris", "1.0.0", start=now - 5, end=now - 4)
    for _ in range(200):
        good.refuse(ClientErrorKind.INPUT)  # 200 wrong-shape requests
    good.refuse(ClientErrorKind.MALFORMED)
    for _ in range(20):
        good.observe(0.002)
    broken = Batch("iris", "1.1.0", start=now - 5, end=now - 4)
    for _ in range(4):
        broken.observe(0.00001, error=ErrorKind.LOAD)
    write_batches(store, [good, broken], "w1")
    store.dispose()
    cli = Cli(capsys, url, tmp_path)
    code, out, err = cli("status", "iris")
    assert (code, err) == (0, "")
    assert out == (
        "iris: 1.0.0=90% 1.1.0=10%  (generation 1)\n"
        " release  weight  requests/60s          errors  p50 ms  p99 ms \n"
        " 1.0.0       90%            20           0.00%    1.99    1.99 \n"
        " 1.1.0       10%             4  100.00% (load)    0.01    0.01 \n"
        "client errors (refused as the callers' fault, not counted above): 1.0.0 200 input, "
        "1 malformed\n"
    )
    doc = cli.json("status", "iris")
    assert isinstance(doc, dict)
    first, second = doc["releases"]
    assert (first["error_rate"], first["errors"], first["client_errors"]) == (
        0.0, {}, {"input": 200, "malformed": 1},
    )  # fmt: skip
    assert (second["error_rate"], second["errors"]) == (1.0, {"load": 4})
