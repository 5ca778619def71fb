"""Contracts: compiled validators and contracts inferred from scikit-learn, ONNX and MLflow."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.svm import SVC

from backout.errors import InvalidContract
from backout.proof.contracts import (
    TENSORS_KEY,
    _onnx_specs_from_graph,
    _onnx_specs_from_session,
    compile_validator,
    contract_from_mlflow_signature,
    infer_onnx_contract,
    infer_sklearn_contract,
    mlflow_accepts,
)

FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
IRIS_INPUT: dict[str, Any] = {
    "type": "object",
    "properties": {f: {"type": "number", "minimum": 0, "maximum": 100} for f in FEATURES},
    "required": FEATURES,
    "additionalProperties": False,
}
IRIS_OUTPUT: dict[str, Any] = {
    "type": "object",
    "properties": {
        "label": {"enum": ["setosa", "versicolor", "virginica"]},
        "probabilities": {"type": "array", "items": {"type": "number", "minimum": 0, "maximum": 1}},
    },
    "required": ["label"],
}
ROW = {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}


@pytest.fixture(scope="module")
def iris_xy() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.normal(loc=[5.8, 3.0, 3.7, 1.2], scale=0.5, size=(90, 4))
    y = np.repeat(np.array(["setosa", "versicolor", "virginica"]), 30)
    return x, y


# --------------------------------------------------------------------------- validators


def test_validator_accepts_a_good_row_on_the_fast_path() -> None:
    validator = compile_validator(IRIS_INPUT)
    assert validator.engine == "fastjsonschema"
    assert validator(ROW) == [] and validator.is_valid(ROW)


def test_validator_names_a_missing_required_field() -> None:
    row = {k: v for k, v in ROW.items() if k != "petal_width"}
    (violation,) = compile_validator(IRIS_INPUT)(row)
    assert (violation.field, violation.rule) == ("petal_width", "required")


def test_validator_names_a_field_of_the_wrong_type() -> None:
    (violation,) = compile_validator(IRIS_INPUT)({**ROW, "sepal_width": "wide"})
    assert violation.field == "sepal_width" and violation.rule == "type"
    assert violation.message == "expected number, got string 'wide'"


def test_validator_names_a_field_out_of_range() -> None:
    (violation,) = compile_validator(IRIS_INPUT)({**ROW, "petal_length": -1})
    assert str(violation) == "petal_length: -1 is less than the minimum 0"


def test_validator_names_an_output_value_not_in_the_enum() -> None:
    (violation,) = compile_validator(IRIS_OUTPUT)({"label": "rose"})
    assert violation.field == "label" and violation.rule == "enum"


def test_validator_names_an_item_inside_an_array() -> None:
    (violation,) = compile_validator(IRIS_OUTPUT)({"label": "setosa", "probabilities": [0.5, 1.5]})
    assert violation.field == "probabilities[1]" and violation.rule == "maximum"


def test_validator_names_an_unexpected_field() -> None:
    (violation,) = compile_validator(IRIS_INPUT)({**ROW, "region": "eu"})
    assert (violation.field, violation.rule) == ("region", "additionalProperties")


def test_batch_violations_carry_the_instance_index() -> None:
    violations = compile_validator(IRIS_INPUT).check_batch([ROW, {**ROW, "sepal_length": None}])
    assert [v.field for v in violations] == ["[1].sepal_length"]
    assert violations[0].to_dict()["path"] == [1, "sepal_length"]


def test_validator_does_not_write_defaults_into_the_request() -> None:
    schema = {"type": "object", "properties": {"k": {"type": "integer", "default": 3}}}
    row: dict[str, Any] = {}
    assert compile_validator(schema)(row) == [] and row == {}


def test_validator_uses_jsonschema_for_draft_2020_keywords() -> None:
    schema = {"type": "array", "prefixItems": [{"type": "string"}, {"type": "number"}]}
    validator = compile_validator(schema)
    assert validator.engine == "jsonschema"
    assert validator(["a", 1]) == [] and validator(["a", "b"])[0].field == "[1]"


def test_schema_that_is_not_json_schema_is_an_invalid_contract() -> None:
    with pytest.raises(InvalidContract, match="not valid JSON Schema"):
        compile_validator({"type": "numbr"})


instances = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 200) | st.floats(-5, 200) | st.text(max_size=3),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(FEATURES), inner),
    max_leaves=8,
)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.sampled_from([*FEATURES, "x"]), instances))
def test_fast_path_agrees_with_jsonschema(row: dict[str, Any]) -> None:
    """Whatever the input, the fast path and the full walk give the same verdict."""
    fast = compile_validator(IRIS_INPUT)
    assert fast.is_valid(row) == fast._full.is_valid(row)
    assert (fast(row) == []) == fast.is_valid(row)


# --------------------------------------------------------------------------- scikit-learn


def test_sklearn_named_features_become_an_object_of_number_fields(
    iris_xy: tuple[np.ndarray, np.ndarray],
) -> None:
    model = LogisticRegression(max_iter=500).fit(*iris_xy)
    # What fitting on a DataFrame sets; pandas is not a dependency of the tests.
    model.feature_names_in_ = np.array(FEATURES, dtype=object)
    contract = infer_sklearn_contract(model)
    assert contract.input is not None and contract.output is not None
    assert contract.input["required"] == FEATURES
    assert contract.input["additionalProperties"] is True
    assert contract.output["properties"]["label"] == {"enum": ["setosa", "versicolor", "virginica"]}
    assert contract.output["properties"]["probabilities"]["maxItems"] == 3
    assert compile_validator(contract.input)(ROW) == []


def test_sklearn_unnamed_features_become_a_positional_array(
    iris_xy: tuple[np.ndarray, np.ndarray],
) -> None:
    x, y = iris_xy
    contract = infer_sklearn_contract(SVC().fit(x, y))
    assert contract.input == {
        "type": "array",
        "items": {"type": "number"},
        "minItems": 4,
        "maxItems": 4,
    }
    # No predict_proba: the gateway answers the bare label.
    assert contract.output is not None and set(contract.output) == {"enum"}


def test_sklearn_regressor_returns_a_bare_number(iris_xy: tuple[np.ndarray, np.ndarray]) -> None:
    x, _ = iris_xy
    contract = infer_sklearn_contract(LinearRegression().fit(x, x[:, 0]))
    assert contract.output == {"type": "number"}


def test_sklearn_unfitted_estimator_cannot_give_a_contract() -> None:
    with pytest.raises(InvalidContract, match="not fitted"):
        infer_sklearn_contract(LogisticRegression())


# --------------------------------------------------------------------------- ONNX


@pytest.fixture(scope="module")
def iris_onnx(iris_xy: tuple[np.ndarray, np.ndarray]) -> bytes:
    from skl2onnx import to_onnx

    x, _ = iris_xy
    y = np.repeat(np.array([0, 1, 2]), 30)
    model = LogisticRegression(max_iter=500).fit(x.astype(np.float32), y)
    return bytes(to_onnx(model, x[:1].astype(np.float32)).SerializeToString())


def test_onnx_graph_gives_tensor_names_shapes_datatypes_and_labels(iris_onnx: bytes) -> None:
    contract = infer_onnx_contract(iris_onnx)
    assert contract.input is not None and contract.output is not None
    assert contract.input[TENSORS_KEY] == [{"name": "X", "shape": [-1, 4], "datatype": "FP32"}]
    assert contract.input["minItems"] == contract.input["maxItems"] == 4
    assert contract.output["properties"]["output_label"] == {"enum": [0, 1, 2]}
    assert compile_validator(contract.input)([5.1, 3.5, 1.4, 0.2]) == []


def test_onnx_contract_from_a_file_path(iris_onnx: bytes, tmp_path: Any) -> None:
    path = tmp_path / "model.onnx"
    path.write_bytes(iris_onnx)
    assert infer_onnx_contract(path) == infer_onnx_contract(iris_onnx)


def test_onnxruntime_metadata_gives_the_same_tensors_as_the_graph(iris_onnx: bytes) -> None:
    graph_in, graph_out = _onnx_specs_from_graph(iris_onnx)
    session_in, session_out = _onnx_specs_from_session(iris_onnx)
    assert [t.to_dict() for t in graph_in] == [t.to_dict() for t in session_in]
    assert [t.to_dict() for t in graph_out] == [t.to_dict() for t in session_out]


def test_corrupt_onnx_bytes_are_an_invalid_contract() -> None:
    with pytest.raises(InvalidContract, match="ONNX"):
        infer_onnx_contract(b"not an onnx graph")


# --------------------------------------------------------------------------- MLflow

IRIS_SIGNATURE = {
    "inputs": json.dumps(
        [{"type": "double", "name": f, "required": True} for f in FEATURES]
        + [{"type": "string", "name": "region", "required": False}]
    ),
    "outputs": json.dumps([{"type": "long", "required": True}]),
    "params": None,
}


def test_mlflow_named_columns_allow_extra_fields_and_optional_columns() -> None:
    contract = contract_from_mlflow_signature(IRIS_SIGNATURE)
    assert contract.input is not None
    assert contract.input["required"] == FEATURES
    assert contract.input["additionalProperties"] is True
    assert compile_validator(contract.input)({**ROW, "unused": 1}) == []


def test_mlflow_types_map_to_json_schema_with_their_widths() -> None:
    kinds = ["boolean", "integer", "long", "float", "double", "string", "binary", "datetime"]
    sig = {"inputs": json.dumps([{"type": k, "name": k} for k in kinds])}
    contract = contract_from_mlflow_signature(sig)
    assert contract.input is not None
    props = contract.input["properties"]
    assert props["integer"]["maximum"] == 2**31 - 1 and props["long"]["maximum"] == 2**63 - 1
    assert props["datetime"]["format"] == "date-time" and props["binary"]["type"] == "string"
    assert {k: props[k]["x-mlflow-type"] for k in kinds} == dict(zip(kinds, kinds, strict=True))
    violations = compile_validator(contract.input)({**dict.fromkeys(kinds, "x"), "integer": 2**40})
    assert {v.field: v.rule for v in violations}["integer"] == "maximum"


def test_mlflow_single_unnamed_output_is_a_bare_value() -> None:
    contract = contract_from_mlflow_signature(IRIS_SIGNATURE)
    assert contract.output is not None and contract.output["type"] == "integer"


def test_mlflow_tensor_spec_keeps_name_shape_and_datatype() -> None:
    sig = {"inputs": '[{"type": "tensor", "tensor-spec": {"dtype": "float32", "shape": [-1, 4]}}]'}
    contract = contract_from_mlflow_signature(sig)
    assert contract.input is not None
    assert contract.input[TENSORS_KEY] == [{"name": "input", "shape": [-1, 4], "datatype": "FP32"}]
    assert contract.input["maxItems"] == 4


def test_mlflow_widening_rules_follow_mlflow_enforcement() -> None:
    assert mlflow_accepts("long", "integer") and mlflow_accepts("double", "integer")
    assert mlflow_accepts("double", "float")
    assert not mlflow_accepts("double", "long"), "an int64 does not fit a float64 exactly"
    assert not mlflow_accepts("integer", "long") and not mlflow_accepts("float", "double")
    assert not mlflow_accepts("float", "integer")


def test_mlflow_unknown_type_is_an_invalid_contract() -> None:
    with pytest.raises(InvalidContract, match="unknown type 'decimal'"):
        contract_from_mlflow_signature({"inputs": '[{"type": "decimal", "name": "a"}]'})
