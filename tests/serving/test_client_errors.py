"""Requests refused as the caller's fault are counted apart from the release's own errors."""

from __future__ import annotations

import struct
from types import SimpleNamespace

from backout.control.triggers import evaluate
from backout.judges.series import Series
from backout.registry.manifest import Runtime, RuntimeKind
from backout.telemetry.batches import Batch, sum_batches
from tests.models import iris
from tests.serving.world import ROW, World

ERROR_RATE = SimpleNamespace(kind="error_rate", name="errors", max_rate=0.01, min_requests=10)


def _metric(text: str, prefix: str) -> float:
    return sum(float(ln.rsplit(" ", 1)[1]) for ln in text.splitlines() if ln.startswith(prefix))


def test_200_wrong_shape_requests_are_client_errors_not_release_errors(world: World) -> None:
    for _ in range(200):
        assert world.predict(rows=[[5.1, 3.5, 1.4]]).status_code == 422
    for _ in range(20):
        assert world.predict().status_code == 200
    total = sum_batches(world.batches("1.0.0"))
    assert total is not None
    assert (total.requests, total.predictions, total.error_count) == (20, 20, 0)
    assert total.client_errors == {"input": 200}
    # Triggers and judges see only the release's errors: the callers' garbage fires nothing.
    assert not evaluate(ERROR_RATE, [total]).fired
    series = Series.from_batches([total])
    assert series.errors.sum() == 0 and series.contract.sum() == 0
    metrics = world.http.get("/metrics").text
    client = 'backout_errors_total{cause="client",kind="input",model="iris",release="1.0.0"}'
    assert _metric(metrics, client) == 200
    assert _metric(metrics, 'backout_errors_total{cause="release"') == 0


def test_every_kind_of_caller_mistake_is_counted_as_the_callers(world: World) -> None:
    post = world.http.post
    assert post("/models/iris/predict", content=b'{"instances": [').status_code == 400
    assert post("/models/iris/predict", content=b"[1, 2]").status_code == 400
    assert world.predict(rows=[ROW] * 5000).status_code == 413
    assert post("/models/iris/predict", json={"instances": "many"}).status_code == 422
    tensor = {"name": "input", "shape": [2, 4], "datatype": "FP64", "data": ROW}
    assert post("/v2/models/iris/infer", json={"inputs": [tensor]}).status_code == 422
    binary = {"Inference-Header-Content-Length": "9"}
    assert post("/v2/models/iris/infer", content=b"not json!", headers=binary).status_code == 400
    total = sum_batches(world.batches("1.0.0"))
    assert total is not None
    assert total.requests == 0 and total.errors == {}
    assert total.client_errors == {"malformed": 3, "too_large": 1, "input": 2}


def test_a_bytes_tensor_sent_to_a_numeric_model_is_422_with_a_message(world: World) -> None:
    text = {"name": "input", "shape": [1, 4], "datatype": "BYTES", "data": ["a", "b", "c", "d"]}
    numbers = {"name": "input", "shape": [1, 4], "datatype": "BYTES", "data": ROW}
    for tensor in (text, numbers):
        r = world.http.post("/v2/models/iris/infer", json={"inputs": [tensor]})
        assert r.status_code == 422, r.text
        assert r.json()["error"] == (
            "tensor 'input' is BYTES but iris@1.0.0 takes numbers there: send a numeric "
            "datatype such as FP32 or FP64"
        )
    # The binary form of the Open Inference Protocol, as tritonclient sends BYTES.
    raw = b"".join(struct.pack("<I", len(s)) + s for s in (b"5.1", b"3.5", b"1.4", b"0.2"))
    head = (
        b'{"inputs": [{"name": "input", "shape": [1, 4], "datatype": "BYTES", '
        b'"parameters": {"binary_data_size": %d}}]}' % len(raw)
    )
    r = world.http.post(
        "/v2/models/iris/infer",
        content=head + raw,
        headers={"Inference-Header-Content-Length": str(len(head))},
    )
    assert r.status_code == 422 and "takes numbers" in r.json()["error"]
    # The JSON route's columnar form carries strings the same way.
    r = world.http.post("/models/iris/predict", json={"inputs": [["a", "b", "c", "d"]]})
    assert r.status_code == 422 and "takes numbers" in r.json()["error"]
    total = sum_batches(world.batches("1.0.0"))
    assert total is not None and total.errors == {} and total.client_errors == {"input": 4}


def test_a_bytes_tensor_to_a_model_without_a_contract_is_422(world: World) -> None:
    """No contract to check against: the runtime itself says the caller sent strings."""
    import joblib
    from sklearn.linear_model import LogisticRegression

    x, y = iris()
    path = world.tmp / "bare.joblib"
    joblib.dump(LogisticRegression(max_iter=300).fit(x, y), path)
    world.registry.register("iris", "2.0.0", [path], runtime=Runtime(kind=RuntimeKind.SKLEARN),
                         actor="test")  # fmt: skip
    world.set_traffic({"2.0.0": 100})
    tensor = {"name": "input", "shape": [1, 4], "datatype": "BYTES", "data": ["a", "b", "c", "d"]}
    r = world.http.post("/v2/models/iris/infer", json={"inputs": [tensor]})
    assert r.status_code == 422, r.text
    assert r.json()["error"].startswith("iris@2.0.0 takes numbers but was sent strings")
    total = sum_batches(world.batches("2.0.0"))
    assert total is not None and total.errors == {} and total.client_errors == {"input": 1}


def test_batches_from_an_older_gateway_read_input_errors_as_client_errors() -> None:
    old = {"model": "m", "version": "1", "start": 0.0, "end": 1.0, "requests": 10,
           "predictions": 6, "errors": {"input_contract": 3, "model": 1}}  # fmt: skip
    b = Batch.from_dict(old)
    assert (b.requests, b.predictions, b.errors, b.client_errors) == (
        7,
        6,
        {"model": 1},
        {"input": 3},
    )
    assert b.requests - b.predictions == b.error_count  # still reconciled
    assert Batch.from_dict(b.to_dict()) == b
