"""scikit-learn runtime: joblib files of real estimators, predicted in-process."""

from __future__ import annotations

import io

import joblib
import numpy as np
import pytest
from sklearn.linear_model import LinearRegression, LogisticRegression

from backout.errors import RuntimeLoadError, ValidationError
from backout.registry.artifacts import LocalBlobStore
from backout.registry.manifest import RuntimeKind
from backout.runtimes import load_release
from tests.runtimes.conftest import MakeRelease, run


def _dump(model: object) -> bytes:
    buf = io.BytesIO()
    joblib.dump(model, buf)
    return buf.getvalue()


def test_classifier_predicts_labels_and_float32_probabilities(
    make_release: MakeRelease,
    blobs: LocalBlobStore,
    iris_joblib: bytes,
    iris_model: LogisticRegression,
    iris: tuple[np.ndarray, np.ndarray],
) -> None:
    x = iris[0][:5]
    predictor = load_release(
        make_release(RuntimeKind.SKLEARN, {"model.joblib": iris_joblib}), blobs
    )
    out = run(predictor.infer({"input": x}))
    assert predictor.output_names == ["label", "probabilities"]
    assert predictor.classes == ["0", "1", "2"]
    np.testing.assert_array_equal(out["label"], iris_model.predict(x))
    assert out["probabilities"].dtype == np.float32 and out["probabilities"].shape == (5, 3)


def test_regressor_outputs_float_prediction(
    make_release: MakeRelease, blobs: LocalBlobStore, iris: tuple[np.ndarray, np.ndarray]
) -> None:
    x, y = iris
    model = LinearRegression().fit(x, y.astype(float))
    predictor = load_release(make_release(RuntimeKind.SKLEARN, {"m.pkl": _dump(model)}), blobs)
    out = run(predictor.infer({"input": x[:3]}))
    assert predictor.output_names == ["prediction"] and predictor.classes is None
    assert out["prediction"].dtype == np.float64
    np.testing.assert_allclose(out["prediction"], model.predict(x[:3]))


def test_outputs_option_skips_probabilities(
    make_release: MakeRelease, blobs: LocalBlobStore, iris_joblib: bytes
) -> None:
    manifest = make_release(
        RuntimeKind.SKLEARN, {"model.joblib": iris_joblib}, {"outputs": ["label"]}
    )
    predictor = load_release(manifest, blobs)
    out = run(predictor.infer({"input": np.ones((2, 4))}))
    assert list(out) == ["label"]


def test_file_option_picks_the_artifact_among_several(
    make_release: MakeRelease, blobs: LocalBlobStore, iris_joblib: bytes
) -> None:
    manifest = make_release(
        RuntimeKind.SKLEARN,
        {"README.md": b"notes", "model.joblib": iris_joblib},
        {"file": "model.joblib"},
    )
    assert load_release(manifest, blobs).output_names == ["label", "probabilities"]


def test_several_artifacts_without_file_option_is_a_clear_error(
    make_release: MakeRelease, blobs: LocalBlobStore, iris_joblib: bytes
) -> None:
    manifest = make_release(RuntimeKind.SKLEARN, {"a.md": b"notes", "model.joblib": iris_joblib})
    with pytest.raises(RuntimeLoadError, match=r"2 artifacts.*runtime\.options\.file"):
        load_release(manifest, blobs)


def test_file_that_is_not_a_pickle_is_a_clear_error(
    make_release: MakeRelease, blobs: LocalBlobStore
) -> None:
    manifest = make_release(RuntimeKind.SKLEARN, {"model.joblib": b"not a pickle at all"})
    with pytest.raises(RuntimeLoadError, match=r"iris@1\.0\.0.*'model\.joblib'.*joblib\.dump"):
        load_release(manifest, blobs)


def test_wrong_number_of_features_is_a_validation_error(
    make_release: MakeRelease, blobs: LocalBlobStore, iris_joblib: bytes
) -> None:
    predictor = load_release(make_release(RuntimeKind.SKLEARN, {"m.joblib": iris_joblib}), blobs)
    with pytest.raises(ValidationError, match=r"shape \[batch, 4\]; got shape \[2, 3\]"):
        run(predictor.infer({"input": np.ones((2, 3))}))


def test_dataframe_model_takes_named_columns_in_feature_order(
    make_release: MakeRelease, blobs: LocalBlobStore, iris: tuple[np.ndarray, np.ndarray]
) -> None:
    pd = pytest.importorskip("pandas", reason="models fitted on DataFrames need pandas")
    x, y = iris
    names = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
    model = LogisticRegression(max_iter=500).fit(pd.DataFrame(x, columns=names), y)
    predictor = load_release(make_release(RuntimeKind.SKLEARN, {"m.joblib": _dump(model)}), blobs)
    assert predictor.feature_names == names
    # Columns given out of order are stacked in the model's order.
    columns = {n: x[:4, i] for i, n in reversed(list(enumerate(names)))}
    by_column = run(predictor.infer(columns))
    by_matrix = run(predictor.infer({"input": x[:4]}))
    np.testing.assert_array_equal(by_column["label"], by_matrix["label"])
    np.testing.assert_array_equal(
        by_column["label"], model.predict(pd.DataFrame(x[:4], columns=names))
    )
