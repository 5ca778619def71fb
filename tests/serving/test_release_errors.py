"""A release that answers with outputs the gateway cannot send fails as the release's error
(500, counted), never as the caller's (a 4xx nobody counts)."""

from __future__ import annotations

from backout.telemetry.batches import sum_batches
from tests.serving.world import ROW, World

RAGGED = b"""
import numpy as np

def predict(inputs):
    n = len(inputs["input"])
    return {"label": np.zeros(n), "scores": np.zeros(n + 1)}
"""

DATES = b"""
import numpy as np

def predict(inputs):
    return {"when": np.array(["2024-01-01"] * len(inputs["input"]), dtype="datetime64[D]")}
"""


def test_outputs_that_disagree_on_the_batch_size_are_a_release_error(world: World) -> None:
    world.python_release("5.0.0", RAGGED)
    world.set_traffic({"5.0.0": 100})
    r = world.predict()
    assert r.status_code == 500, r.text
    assert r.json()["error"] == (
        "release iris@5.0.0 returned outputs that cannot be sent: outputs disagree on the "
        "batch size: 'scores' has 2, others 1"
    )
    total = sum_batches(world.batches("5.0.0"))
    assert total is not None
    assert (total.requests, total.predictions, total.errors) == (1, 0, {"output_contract": 1})


def test_an_output_with_no_inference_protocol_datatype_is_a_release_error(
    world: World,
) -> None:
    world.python_release("6.0.0", DATES)
    world.set_traffic({"6.0.0": 100})
    tensor = {"name": "input", "shape": [1, 4], "datatype": "FP64", "data": ROW}
    r = world.http.post("/v2/models/iris/infer", json={"inputs": [tensor]})
    assert r.status_code == 500, r.text
    assert "returned outputs that cannot be sent: numpy dtype datetime64[D]" in r.json()["error"]
    total = sum_batches(world.batches("6.0.0"))
    assert total is not None
    assert (total.requests, total.predictions, total.errors) == (1, 0, {"output_contract": 1})
