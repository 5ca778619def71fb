"""The gateway over real HTTP on loopback: protocols, routing, errors, switches, telemetry.

On SQLite; serving a request, switching routes and writing telemetry also on PostgreSQL,
where the gateway learns of route changes by LISTEN/NOTIFY.
"""

from __future__ import annotations

import io
import time

import httpx
import numpy as np
import orjson
import pytest

from backout.registry.manifest import Runtime, RuntimeKind
from backout.serving.telemetry import AccessLog, Metrics
from backout.store import Store
from backout.telemetry.batches import Batch, read_batches
from tests.loopback import serve
from tests.models import iris
from tests.serving.world import ROW, World
from tests.waits import wait_for

pytestmark = pytest.mark.databases("sqlite")
on_both_databases = pytest.mark.databases("sqlite", "postgresql")

RAISES = b"""
def predict(inputs):
    raise RuntimeError("feature store returned garbage")
"""

NAN = b"""
import numpy as np

def predict(inputs):
    return {"prediction": np.full(len(inputs["input"]), np.nan)}
"""


@on_both_databases
def test_json_predict_answers_with_the_release_and_a_request_id(world: World) -> None:
    r = world.predict()
    assert r.status_code == 200
    doc = r.json()
    assert doc["version"] == "1.0.0" and doc["model"] == "iris"
    assert doc["predictions"][0]["label"] == 0
    assert len(doc["predictions"][0]["probabilities"]) == 3
    assert r.headers["x-backout-release"] == "iris@1.0.0"
    assert len(r.headers["x-request-id"]) == 32


def test_x_request_id_is_kept_and_traceparent_propagated(world: World) -> None:
    assert world.predict(**{"x-request-id": "abc-123"}).headers["x-request-id"] == "abc-123"
    trace = "4bf92f3577b34da6a3ce929d0e0e4736"
    r = world.predict(traceparent=f"00-{trace}-00f067aa0ba902b7-01")
    assert r.headers["x-request-id"] == trace
    assert r.headers["traceparent"].startswith(f"00-{trace}-") and r.headers[
        "traceparent"
    ].endswith("-01")


def test_open_inference_protocol_with_a_real_client(world: World) -> None:
    import tritonclient.http as triton

    client = triton.InferenceServerClient(url=world.url.removeprefix("http://"))
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("iris")
    meta = client.get_model_metadata("iris")
    assert meta["name"] == "iris" and "1.0.0" in meta["versions"]
    x = triton.InferInput("input", [2, 4], "FP64")
    x.set_data_from_numpy(np.array([ROW, [6.7, 3.0, 5.2, 2.3]]))
    result = client.infer("iris", [x])
    assert result.get_response()["model_version"] == "1.0.0"
    assert result.as_numpy("label").tolist() == [0, 2]
    client.close()


def test_version_in_the_path_pins_the_release(world: World) -> None:
    world.set_traffic({"1.0.0": 50, "1.1.0": 50})
    for _ in range(10):
        r = world.http.post("/models/iris/versions/1.1.0/predict", json={"instances": [ROW]})
        assert r.json()["version"] == "1.1.0"
    r = world.predict(**{"x-backout-version": "1.0.0"})
    assert r.json()["version"] == "1.0.0"


def test_a_routing_key_is_sticky(world: World) -> None:
    world.set_traffic({"1.0.0": 50, "1.1.0": 50})
    seen = {world.predict(**{"x-backout-key": "user-7"}).json()["version"] for _ in range(10)}
    assert len(seen) == 1


def test_unknown_model_is_404_naming_the_served_models(world: World) -> None:
    r = world.predict("fraud")
    assert r.status_code == 404
    assert r.json()["error"] == "model 'fraud' is not served here; served models: iris"


def test_unknown_version_is_404_naming_the_served_versions(world: World) -> None:
    r = world.http.post("/models/iris/versions/9.9.9/predict", json={"instances": [ROW]})
    assert r.status_code == 404
    assert "served versions: 1.0.0" in r.json()["error"]


def test_malformed_json_is_400(world: World) -> None:
    r = world.http.post(
        "/models/iris/predict",
        content=b'{"instances": [',
        headers={"content-type": "application/json"},
    )
    assert r.status_code == 400 and r.json()["error"].startswith("malformed JSON")


def test_a_contract_violation_is_422_naming_the_field(world: World) -> None:
    r = world.predict(rows=[[5.1, 3.5, 1.4]])
    assert r.status_code == 422
    assert "input breaks the contract of iris@1.0.0" in r.json()["error"]
    r = world.predict(rows=[[5.1, "wide", 1.4, 0.2]])  # type: ignore[list-item]
    assert r.status_code == 422 and "[0][1]" in r.json()["error"]


def test_a_wrong_tensor_shape_is_4xx(world: World) -> None:
    body = {"inputs": [{"name": "input", "shape": [2, 4], "datatype": "FP64", "data": ROW}]}
    r = world.http.post("/v2/models/iris/infer", json=body)
    assert 400 <= r.status_code < 500
    assert "input" in r.json()["error"]


def test_an_oversized_body_is_413(world: World) -> None:
    r = world.predict(rows=[ROW] * 5000)
    assert (r.status_code == 413 and "limit of" in r.json()["error"]) or "the limit is" in r.json()[
        "error"
    ]


def test_a_model_that_raises_is_500_with_the_request_id_and_counted(world: World) -> None:
    world.python_release("2.0.0", RAISES)
    world.set_traffic({"2.0.0": 100})
    r = world.predict(**{"x-request-id": "req-1"})
    assert r.status_code == 500
    assert r.json()["request_id"] == "req-1" and "iris@2.0.0" in r.json()["error"]
    world.gateway.flush()
    batches = read_batches(world.store, "iris")["2.0.0"]
    assert sum(b.errors.get("model", 0) for b in batches) == 1


def test_nan_outputs_are_refused_and_counted(world: World) -> None:
    world.python_release("3.0.0", NAN)
    world.set_traffic({"3.0.0": 100})
    r = world.predict()
    assert r.status_code == 500 and "NaN" in r.json()["error"]
    world.gateway.flush()
    assert read_batches(world.store, "iris")["3.0.0"][0].errors == {"nonfinite": 1}


def test_a_pin_to_a_quarantined_release_is_409_with_the_reason(world: World) -> None:
    world.set_traffic({"1.0.0": 90, "1.1.0": 10})
    world.deployments.set_traffic("iris", {"1.0.0": 100}, actor="test")
    world.registry.quarantine("iris@1.1.0", actor="test", reason="leaks PII in outputs")
    world.wait_for_generation(0)
    r = world.predict(**{"x-backout-version": "1.1.0"})
    assert r.status_code == 409
    assert r.json()["error"] == "release iris@1.1.0 is quarantined: leaks PII in outputs"


@on_both_databases
def test_a_switch_is_seen_by_the_next_request(world: World) -> None:
    assert world.predict().json()["version"] == "1.0.0"
    world.set_traffic({"1.1.0": 100})
    assert world.predict().json()["version"] == "1.1.0"


@on_both_databases
def test_telemetry_batches_reach_the_store(world: World) -> None:
    for _ in range(5):
        world.predict()
    world.predict(rows=[[1.0]])
    world.gateway.flush()
    batches = read_batches(world.store, "iris")["1.0.0"]
    total = sum(b.requests for b in batches)
    assert total == 5  # the bad request is the caller's fault: counted apart
    assert sum(b.predictions for b in batches) == 5
    assert sum(b.error_count for b in batches) == 0
    assert sum(b.client_errors.get("input", 0) for b in batches) == 1
    assert sum(b.outputs.get("0", 0) for b in batches) == 5


def test_metrics_are_labelled_per_release(world: World) -> None:
    world.predict()
    text = world.http.get("/metrics").text
    assert 'backout_requests_total{code="200",model="iris",release="1.0.0"} 1.0' in text
    assert 'backout_warm_release_bytes{model="iris",release="1.0.0"}' in text


def test_shadow_copies_are_compared_off_the_request_path(world: World) -> None:
    world.set_traffic({"1.0.0": 100}, shadow=("1.1.0", 100))
    x, _ = iris()
    for i in range(0, 150, 10):
        r = world.predict(rows=x[i : i + 10].tolist())
        assert r.json()["version"] == "1.0.0"

    # The copies are answered off the request path: wait for them to land in telemetry.
    def flushed_shadow() -> list[Batch] | None:
        world.gateway.flush()
        shadow = read_batches(world.store, "iris").get("1.1.0", [])
        return shadow if sum(b.shadow_requests for b in shadow) >= 150 else None

    shadow = wait_for(flushed_shadow, 10, "150 shadow requests in telemetry", interval=0.05)
    assert sum(b.shadow_requests for b in shadow) == 150
    assert sum(b.requests for b in shadow) == 0
    assert sum(b.shadow_disagreements for b in shadow) > 0  # C=0.01 is a much weaker model


def test_rollback_points_are_kept_warm(world: World) -> None:
    world.registry.mark_good("iris@1.1.0", actor="test")
    world.wait_for_generation(0)
    assert ("iris", "1.1.0") in world.gateway.pool.entries
    state = world.http.get("/backout/state").json()
    assert {w["release"] for w in state["warm"]} == {"iris@1.0.0", "iris@1.1.0"}
    assert all(w["memory_bytes"] > 0 for w in state["warm"])


def test_access_log_lines_are_json_and_written_in_blocks() -> None:
    """Lines wait for a flush (or the size limit), then go out whole, one JSON per line."""
    out = io.BytesIO()
    access = AccessLog(out, limit=1 << 20)
    access.write({"request_id": "a", "status": 200})
    access.write({"request_id": "b", "status": 500})
    assert out.getvalue() == b""
    access.flush()
    lines = out.getvalue().splitlines()
    assert [orjson.loads(x)["request_id"] for x in lines] == ["a", "b"]
    small = AccessLog(out := io.BytesIO(), limit=10)
    small.write({"request_id": "c"})
    assert orjson.loads(out.getvalue())["request_id"] == "c"


def test_metrics_kept_in_memory_match_prometheus_after_a_flush() -> None:
    """Pending observations reach the counter and histogram buckets exactly as observe would."""
    metrics = Metrics()
    metrics.know({("iris", "1.0.0")})
    for seconds in (0.0003, 0.003, 7.0):
        metrics.observe("iris", "1.0.0", 200, seconds)
    text = metrics.exposition()[0].decode()
    lines = {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line and not line.startswith("#")
    }
    hist = 'backout_request_duration_seconds_bucket{le="%s",model="iris",release="1.0.0"}'
    assert lines[hist % "0.0005"] == 1
    assert lines[hist % "0.005"] == 2
    assert lines[hist % "5.0"] == 2
    assert lines[hist % "+Inf"] == 3
    assert lines[
        'backout_request_duration_seconds_sum{model="iris",release="1.0.0"}'
    ] == pytest.approx(7.0033)
    assert lines['backout_requests_total{code="200",model="iris",release="1.0.0"}'] == 3


@pytest.mark.databases("postgresql")
def test_on_postgresql_a_route_change_is_notified(store: Store) -> None:
    """LISTEN/NOTIFY: the watch says "changed" only after a generation bump commits."""
    from backout.serving.changes import ChangeWatch
    from backout.store import bump_generation

    watch = ChangeWatch(store, recheck_s=3600)
    watch.maybe_changed()  # the first call always says "maybe"
    assert watch._pg is not None
    assert not watch.maybe_changed()
    with store.write() as conn:
        bump_generation(conn)
    wait_for(watch.maybe_changed, 5, "a notification of the generation bump")
    assert not watch.maybe_changed()
    watch.close()


SLOW = """
import asyncio
import pathlib
import numpy as np

async def predict(inputs):
    pathlib.Path({entered!r}).touch()  # tells the test the request is inside the model
    await asyncio.sleep(0.6)  # long enough for the test to switch while the request waits
    return {{"prediction": np.zeros(len(inputs["input"]))}}
"""


@on_both_databases
def test_a_request_in_flight_finishes_on_a_release_the_switch_drops(world: World) -> None:
    """No request fails because of a switch, even when its release leaves the warm pool."""
    import threading

    entered = world.tmp / "entered"
    world.python_release("4.0.0", SLOW.format(entered=str(entered)).encode())
    world.set_traffic({"4.0.0": 100})
    answers: list[httpx.Response] = []
    t = threading.Thread(target=lambda: answers.append(world.predict()))
    t.start()
    wait_for(entered.exists, 5, "the request to reach the slow model")
    world.set_traffic({"1.0.0": 100})  # 4.0.0 is neither live nor known-good: dropped
    assert ("iris", "4.0.0") not in world.gateway.pool.entries
    t.join(10)
    assert answers[0].status_code == 200 and answers[0].json()["version"] == "4.0.0"
    assert world.predict().json()["version"] == "1.0.0"


def test_a_dropped_release_is_closed_only_after_a_grace_period() -> None:
    """A runtime's close frees its model: closing at once would fail requests that chose it."""
    import asyncio

    from backout.serving.pool import WarmPool

    closed: list[float] = []

    class Predictor:
        async def aclose(self) -> None:
            closed.append(time.monotonic())

    async def scenario() -> float:
        pool = WarmPool(None, None, close_grace_s=0.3)  # type: ignore[arg-type]
        pool.entries[("iris", "1.0.0")] = type("E", (), {"predictor": Predictor()})()  # type: ignore[assignment]
        t0 = time.monotonic()
        await pool.ensure(set())
        assert closed == []  # not yet: requests may still be on it
        await asyncio.sleep(0.5)  # let the grace period pass, on purpose
        return t0

    t0 = asyncio.run(scenario())
    assert len(closed) == 1 and closed[0] - t0 >= 0.3


def test_an_upstream_that_times_out_is_504_and_counted(world: World) -> None:
    """An http-runtime release forwards to another model server; a slow one answers 504."""
    import asyncio

    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    meta = {"inputs": [{"name": "input", "datatype": "FP64", "shape": [-1, 4]}],
            "outputs": [{"name": "label", "datatype": "INT64", "shape": [-1]}]}  # fmt: skip

    async def metadata(request: Request) -> JSONResponse:
        return JSONResponse({"name": "slow", **meta})

    async def infer(request: Request) -> JSONResponse:
        await asyncio.sleep(2.0)  # a slow upstream, longer than the release's timeout
        return JSONResponse({"model_name": "slow", "outputs": []})

    upstream = Starlette(routes=[Route("/v2/models/{name}", metadata),
                                 Route("/v2/models/{name}/infer", infer, methods=["POST"])])  # fmt: skip
    with serve(upstream) as url:
        world.registry.register("iris", "5.0.0", [], actor="test", runtime=Runtime(
            kind=RuntimeKind.HTTP, options={"url": url, "model": "slow", "timeout_s": 0.3}))  # fmt: skip
        world.set_traffic({"5.0.0": 100})
        r = world.predict(**{"x-request-id": "slow-1"})
        assert r.status_code == 504 and r.json()["request_id"] == "slow-1"
        assert "did not answer" in r.json()["error"] or "timed out" in r.json()["error"]
    world.gateway.flush()
    assert sum(b.errors.get("timeout", 0) for b in read_batches(world.store, "iris")["5.0.0"]) == 1
