"""ONNX runtime: a skl2onnx-converted iris classifier run by onnxruntime on the CPU."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from backout.errors import RuntimeLoadError, ValidationError
from backout.registry.artifacts import LocalBlobStore
from backout.registry.manifest import RuntimeKind
from backout.runtimes import load_release
from tests.runtimes.conftest import MakeRelease, run


def test_onnx_predicts_like_the_sklearn_model_with_graph_names(
    make_release: MakeRelease,
    blobs: LocalBlobStore,
    iris_onnx: bytes,
    iris_model: LogisticRegression,
    iris: tuple[np.ndarray, np.ndarray],
) -> None:
    x = iris[0][:10]  # float64: the runtime casts to the graph's float32
    predictor = load_release(make_release(RuntimeKind.ONNX, {"model.onnx": iris_onnx}), blobs)
    assert predictor.input_names == ["X"]
    assert predictor.output_names == ["label", "probabilities"]
    out = run(predictor.infer({"X": x}))
    np.testing.assert_array_equal(out["label"], iris_model.predict(x))
    np.testing.assert_allclose(out["probabilities"], iris_model.predict_proba(x), atol=1e-5)


def test_zipmap_output_becomes_a_2d_probability_tensor_in_class_order(
    make_release: MakeRelease,
    blobs: LocalBlobStore,
    iris_model: LogisticRegression,
    iris: tuple[np.ndarray, np.ndarray],
) -> None:
    from skl2onnx import to_onnx

    graph = to_onnx(iris_model, iris[0][:1].astype(np.float32)).SerializeToString()
    predictor = load_release(make_release(RuntimeKind.ONNX, {"m.onnx": graph}), blobs)
    out = run(predictor.infer({"X": iris[0][:3]}))
    probs = out["output_probability"]
    assert probs.shape == (3, 3) and probs.dtype == np.float32
    assert predictor.classes == ["0", "1", "2"]
    np.testing.assert_allclose(probs, iris_model.predict_proba(iris[0][:3]), atol=1e-5)


def test_onnx_wrong_width_is_a_validation_error(
    make_release: MakeRelease, blobs: LocalBlobStore, iris_onnx: bytes
) -> None:
    predictor = load_release(make_release(RuntimeKind.ONNX, {"model.onnx": iris_onnx}), blobs)
    with pytest.raises(ValidationError, match=r"input 'X' has shape \['batch', 4\]; got \[2, 5\]"):
        run(predictor.infer({"X": np.ones((2, 5))}))


def test_file_that_is_not_onnx_is_a_clear_error(
    make_release: MakeRelease, blobs: LocalBlobStore
) -> None:
    manifest = make_release(RuntimeKind.ONNX, {"model.onnx": b"\x00garbage"})
    with pytest.raises(RuntimeLoadError, match=r"iris@1\.0\.0.*cannot open 'model\.onnx'"):
        load_release(manifest, blobs)
