"""Strings sent to a numeric input are the caller's error (ValidationError, 422), in every
place one can reach a model: the tensor check, the ONNX runtime and the scikit-learn runtime."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from backout.errors import ValidationError
from backout.registry.artifacts import LocalBlobStore
from backout.registry.manifest import RuntimeKind
from backout.runtimes import load_release
from backout.runtimes.tensors import NUMERIC_KINDS, cast_input, check_kinds, decode_tensor
from backout.serving.pool import input_kinds
from tests.runtimes.conftest import MakeRelease, run

STRINGS = np.array([["a", "b", "c", "d"]], dtype=object)


def test_check_kinds_refuses_bytes_for_a_numeric_input_and_names_it() -> None:
    _, arr = decode_tensor({"name": "x", "shape": [1, 2], "datatype": "BYTES", "data": [1, 2]})
    with pytest.raises(ValidationError) as info:
        check_kinds("m@1", {"x": arr}, {"*": NUMERIC_KINDS})
    assert info.value.message == (
        "tensor 'x' is BYTES but m@1 takes numbers there: send a numeric datatype such as "
        "FP32 or FP64"
    )
    check_kinds("m@1", {"x": np.ones((1, 2)), "y": np.array([True])}, {"*": NUMERIC_KINDS})
    check_kinds("m@1", {"text": arr}, {"x": NUMERIC_KINDS})  # not a numeric input: passes


def test_cast_input_refuses_strings_and_keeps_numbers() -> None:
    f32 = np.dtype(np.float32)
    assert cast_input("m@1", "X", np.ones((1, 4)), f32).dtype == f32
    with pytest.raises(ValidationError, match="tensor 'X' is BYTES but m@1 takes numbers"):
        cast_input("m@1", "X", STRINGS, f32)
    with pytest.raises(ValidationError, match="takes integers"):
        cast_input("m@1", "X", np.array(["1"]), np.dtype(np.int64))


def test_contracts_say_which_inputs_are_numeric() -> None:
    positional = {"type": "array", "items": {"type": "number"}, "minItems": 4}
    assert input_kinds(positional) == {"*": NUMERIC_KINDS}
    fields = {"type": "object", "properties": {"age": {"type": "integer"},
                                               "city": {"type": "string"}}}  # fmt: skip
    assert input_kinds(fields) == {"age": NUMERIC_KINDS}
    tensors = {"x-backout-tensors": [{"name": "X", "datatype": "FP32", "shape": [-1, 4]}]}
    assert input_kinds(tensors) == {"X": NUMERIC_KINDS, "*": NUMERIC_KINDS}
    text = {"x-backout-tensors": [{"name": "t", "datatype": "BYTES", "shape": [-1]}]}
    assert input_kinds(text) == {} and input_kinds(None) == {}


def test_onnx_sent_bytes_is_a_validation_error_not_a_model_error(
    make_release: MakeRelease, blobs: LocalBlobStore, iris_onnx: bytes
) -> None:
    predictor = load_release(make_release(RuntimeKind.ONNX, {"model.onnx": iris_onnx}), blobs)
    with pytest.raises(
        ValidationError, match=r"tensor 'X' is BYTES but iris@1\.0\.0 takes numbers"
    ):
        run(predictor.infer({"X": STRINGS}))


def test_sklearn_fitted_on_numbers_sent_strings_is_a_validation_error(
    make_release: MakeRelease, blobs: LocalBlobStore, iris_joblib: bytes
) -> None:
    predictor = load_release(make_release(RuntimeKind.SKLEARN, {"m.joblib": iris_joblib}), blobs)
    with pytest.raises(ValidationError, match=r"iris@1\.0\.0 takes numbers but was sent strings"):
        run(predictor.infer({"input": STRINGS}))


def test_sklearn_pipeline_that_takes_strings_still_gets_them(
    make_release: MakeRelease, blobs: LocalBlobStore
) -> None:
    import io

    import joblib
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder

    x = np.array([["red"], ["blue"], ["red"], ["green"]], dtype=object)
    model = make_pipeline(OneHotEncoder(), LogisticRegression()).fit(x, [1, 0, 1, 0])
    buf = io.BytesIO()
    joblib.dump(model, buf)
    predictor = load_release(make_release(RuntimeKind.SKLEARN, {"m.joblib": buf.getvalue()}), blobs)
    out = run(predictor.infer({"input": np.array([["red"]], dtype=object)}))
    assert out["label"].tolist() == [1]
