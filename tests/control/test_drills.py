"""Drills: fault specs, faults applied by the gateway, and a whole drill measured end to end.

The gateway and the drill run on each database (see ``tests/conftest.py``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from backout.control.controller import Controller
from backout.control.drills import list_drills, run_drill
from backout.control.policy import parse_policy
from backout.errors import ConfigError
from backout.registry.artifacts import LocalBlobStore
from backout.registry.releases import Registry
from backout.serving.app import Gateway, GatewaySettings
from backout.store import Store, bump_generation, schema
from backout.traffic.deployments import Deployments
from backout.traffic.faults import Fault, parse_fault
from tests.loopback import serve
from tests.models import register_iris
from tests.waits import wait_for

ROW = [5.1, 3.5, 1.4, 0.2]


@pytest.mark.parametrize(
    ("spec", "fault"),
    [
        ("latency=+200ms", Fault("latency", 0.2)),
        ("latency=1s", Fault("latency", 1.0)),
        ("errors=5%", Fault("errors", 0.05)),
        ("nan=1%", Fault("nan", 0.01)),
        ("crash", Fault("crash", 1.0)),
    ],
)
def test_fault_specs_parse(spec: str, fault: Fault) -> None:
    assert parse_fault(spec) == fault


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("errors=5", "percentage"),
        ("latency=200", "needs a unit"),
        ("errors=150%", "percentage"),
        ("slow", "is not one of"),
        ("crash=1", "takes no value"),
    ],
)
def test_bad_fault_specs_say_what_is_allowed(spec: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_fault(spec)


@pytest.fixture
def live(
    store: Store, registry: Registry, blobs: LocalBlobStore, tmp_path: Path
) -> Iterator[tuple[Store, Registry, str, Gateway]]:
    """iris@1.0.0 and 1.1.0, both known-good, 1.1.0 live, served by a gateway on loopback."""
    register_iris(registry, tmp_path / "m", "1.0.0")
    register_iris(registry, tmp_path / "m", "1.1.0", c=0.5)
    registry.mark_good("iris@1.0.0", actor="t")
    registry.mark_good("iris@1.1.0", actor="t")
    Deployments(store, registry).set_traffic("iris", {"1.1.0": 100}, actor="t")
    gateway = Gateway(store, blobs, GatewaySettings(poll_interval_s=0.005, flush_interval_s=0.2))
    with serve(gateway.app) as url:
        yield store, registry, url, gateway


def _inject(store: Store, kind: str, value: float) -> None:
    with store.write() as conn:
        conn.execute(schema.faults.insert().values(model="iris", version="1.1.0", kind=kind, value=value,
                                                   start_at=0.0, end_at=time.time() + 60))  # fmt: skip
        bump_generation(conn)


def _wait_for_state(gateway: Gateway) -> None:
    wait_for(lambda: gateway.live.faults, 5, "the gateway to load the injected fault")


def test_the_gateway_applies_a_crash_fault_as_a_counted_500(
    live: tuple[Store, Registry, str, Gateway],
) -> None:
    store, _, url, gateway = live
    _inject(store, "crash", 1.0)
    _wait_for_state(gateway)
    r = httpx.post(f"{url}/models/iris/predict", json={"instances": [ROW]})
    assert r.status_code == 500 and "injected fault" in r.json()["error"]


def test_the_gateway_applies_a_latency_fault(live: tuple[Store, Registry, str, Gateway]) -> None:
    store, _, url, gateway = live
    _inject(store, "latency", 0.3)
    _wait_for_state(gateway)
    t0 = time.perf_counter()
    r = httpx.post(f"{url}/models/iris/predict", json={"instances": [ROW]})
    assert r.status_code == 200 and time.perf_counter() - t0 >= 0.3


def test_the_gateway_applies_a_nan_fault_as_a_nonfinite_error(
    live: tuple[Store, Registry, str, Gateway],
) -> None:
    store, _, url, gateway = live
    _inject(store, "nan", 1.0)
    _wait_for_state(gateway)
    r = httpx.post(f"{url}/models/iris/predict", json={"instances": [ROW]})
    assert r.status_code == 500 and "NaN" in r.json()["error"]


def test_a_drill_measures_detection_and_recovery(
    live: tuple[Store, Registry, str, Gateway],
) -> None:
    store, registry, url, _ = live
    controller = Controller(store, registry)
    policy = parse_policy("""
rollback: {verification: {duration: 2s, min_requests: 10}}
triggers:
  - {name: errors, kind: error_rate, max_rate: 0.05, window: 2s, min_requests: 20, mode: emergency}
""")
    controller.set_policy("iris", policy, source="test", actor="t")
    stop = threading.Event()
    threading.Thread(
        target=controller.run, args=(stop,), kwargs={"interval": 0.2}, daemon=True
    ).start()
    failed_outside_fault: list[int] = []

    def traffic() -> None:
        with httpx.Client(base_url=url) as client:
            while not stop.is_set():
                r = client.post("/models/iris/predict", json={"instances": [ROW]})
                if r.status_code != 200 and "injected fault" not in r.text:
                    failed_outside_fault.append(r.status_code)
                time.sleep(0.005)  # a steady trickle of requests, not a flood

    threading.Thread(target=traffic, daemon=True).start()
    try:
        time.sleep(1.0)  # healthy traffic first, on purpose: the baseline the drill starts from
        result = run_drill(
            store, registry, "iris", parse_fault("errors=30%"), actor="t", timeout=30
        )
    finally:
        stop.set()
    assert result.outcome == "rolled-back" and result.completion_held
    assert result.target == "1.0.0"
    assert result.time_to_detect is not None and result.time_to_detect < 10
    assert result.time_to_recover is not None and result.time_to_recover >= result.time_to_detect
    assert result.affected > 0
    assert failed_outside_fault == []
    assert Deployments(store, registry).require("iris").weights == {"1.0.0": 10_000}
    assert list_drills(store, "iris")[0]["outcome"] == "rolled-back"
