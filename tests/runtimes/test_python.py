"""Python runtime: module:function and classes with predict, shipped as .py artifacts."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from backout.errors import RuntimeLoadError
from backout.registry.artifacts import LocalBlobStore
from backout.registry.manifest import RuntimeKind
from backout.runtimes import ModelError, load_release
from tests.runtimes.conftest import MakeRelease, run

FUNCTION = b"""
import numpy as np

def predict(inputs):
    return {"prediction": inputs["input"].sum(axis=1)}
"""

CLASS = b"""
import numpy as np

class Scaler:
    output_names = ["scaled"]
    outputs = ["scaled"]

    def __init__(self, config, artifacts):
        self.factor = config["factor"]
        self.offset = float(artifacts["offset.txt"].read_text())

    def predict(self, inputs):
        return inputs["input"] * self.factor + self.offset
"""

STATEFUL = b"""
calls = []

def predict(inputs):
    calls.append(1)
    return {"prediction": [len(calls)] * len(inputs["input"])}
"""


def test_function_entrypoint_predicts(make_release: MakeRelease, blobs: LocalBlobStore) -> None:
    manifest = make_release(
        RuntimeKind.PYTHON, {"scoring.py": FUNCTION}, {"entrypoint": "scoring:predict"}
    )
    predictor = load_release(manifest, blobs)
    out = run(predictor.infer({"input": np.array([[1.0, 2.0], [3.0, 4.0]])}))
    np.testing.assert_array_equal(out["prediction"], [3.0, 7.0])


def test_class_entrypoint_gets_config_and_artifacts(
    make_release: MakeRelease, blobs: LocalBlobStore
) -> None:
    manifest = make_release(
        RuntimeKind.PYTHON,
        {"pkg/scale.py": CLASS, "offset.txt": b"0.5"},
        {"entrypoint": "pkg.scale:Scaler"},
        config={"factor": 10},
    )
    predictor = load_release(manifest, blobs)
    assert predictor.output_names == ["scaled"]
    out = run(predictor.infer({"input": np.array([[1.0], [2.0]])}))
    np.testing.assert_array_equal(out["scaled"], [[10.5], [20.5]])


def test_two_releases_of_one_model_do_not_share_module_state(
    make_release: MakeRelease, blobs: LocalBlobStore
) -> None:
    options = {"entrypoint": "m:predict"}
    a = load_release(
        make_release(RuntimeKind.PYTHON, {"m.py": STATEFUL}, options, version="1"), blobs
    )
    b = load_release(
        make_release(RuntimeKind.PYTHON, {"m.py": STATEFUL}, options, version="2"), blobs
    )
    x = {"input": np.zeros((1, 1))}
    run(a.infer(x))
    run(a.infer(x))
    assert run(b.infer(x))["prediction"].tolist() == [1]


def test_aclose_removes_the_module_from_sys_modules(
    make_release: MakeRelease, blobs: LocalBlobStore
) -> None:
    manifest = make_release(RuntimeKind.PYTHON, {"m.py": FUNCTION}, {"entrypoint": "m:predict"})
    predictor = load_release(manifest, blobs)
    before = {k for k in sys.modules if k.startswith("backout_release_")}
    run(predictor.aclose())
    after = {k for k in sys.modules if k.startswith("backout_release_")}
    assert len(before - after) == 1


def test_missing_entrypoint_attribute_names_what_exists(
    make_release: MakeRelease, blobs: LocalBlobStore
) -> None:
    manifest = make_release(RuntimeKind.PYTHON, {"m.py": FUNCTION}, {"entrypoint": "m:score"})
    with pytest.raises(RuntimeLoadError, match=r"no attribute 'score'.*\['predict'\]"):
        load_release(manifest, blobs)


def test_entrypoint_module_not_in_release_names_the_py_artifacts(
    make_release: MakeRelease, blobs: LocalBlobStore
) -> None:
    manifest = make_release(RuntimeKind.PYTHON, {"m.py": FUNCTION}, {"entrypoint": "other:f"})
    with pytest.raises(RuntimeLoadError, match=r"'other\.py'.*\['m\.py'\]"):
        load_release(manifest, blobs)


def test_malformed_entrypoint_shows_the_expected_form(
    make_release: MakeRelease, blobs: LocalBlobStore
) -> None:
    manifest = make_release(RuntimeKind.PYTHON, {"m.py": FUNCTION}, {"entrypoint": "m.predict"})
    with pytest.raises(RuntimeLoadError, match=r"module:attr"):
        load_release(manifest, blobs)


def test_module_that_raises_on_import_is_a_load_error(
    make_release: MakeRelease, blobs: LocalBlobStore
) -> None:
    manifest = make_release(
        RuntimeKind.PYTHON, {"m.py": b"raise ImportError('no torch')\n"}, {"entrypoint": "m:f"}
    )
    with pytest.raises(RuntimeLoadError, match=r"running 'm\.py' raised ImportError: no torch"):
        load_release(manifest, blobs)


def test_model_that_raises_while_predicting_is_a_model_error(
    make_release: MakeRelease, blobs: LocalBlobStore
) -> None:
    source = b"def predict(inputs):\n    raise ZeroDivisionError('bad row')\n"
    predictor = load_release(
        make_release(RuntimeKind.PYTHON, {"m.py": source}, {"entrypoint": "m:predict"}), blobs
    )
    with pytest.raises(ModelError, match=r"iris@1\.0\.0 raised ZeroDivisionError: bad row"):
        run(predictor.infer({"input": np.zeros((1, 1))}))
