"""Open Inference Protocol tensors and simple JSON bodies ↔ numpy."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from backout.errors import ValidationError
from backout.runtimes.tensors import (
    DATATYPES,
    columns_to_inputs,
    decode_tensor,
    decode_tensors,
    encode_tensor,
    instances_to_inputs,
    json_to_inputs,
    outputs_to_predictions,
)


def _t(data: Any, shape: list[int], datatype: str = "FP32", name: str = "x") -> dict[str, Any]:
    return {"name": name, "shape": shape, "datatype": datatype, "data": data}


@pytest.mark.parametrize("datatype", [d for d in DATATYPES if d != "BYTES"])
def test_every_numeric_datatype_round_trips(datatype: str) -> None:
    data = [1, 0, 1, 1] if datatype == "BOOL" else [1, 2, 3, 4]
    if datatype == "BOOL":
        data = [True, False, True, True]
    name, arr = decode_tensor(_t(data, [2, 2], datatype))
    assert name == "x" and arr.dtype == DATATYPES[datatype] and arr.shape == (2, 2)
    assert encode_tensor("x", arr) == _t(data, [2, 2], datatype)


def test_bytes_tensor_holds_strings_and_encodes_bytes_as_text() -> None:
    _, arr = decode_tensor(_t(["a", "b"], [2, 1], "BYTES"))
    assert arr.shape == (2, 1) and arr[1, 0] == "b"
    assert encode_tensor("s", np.array([b"hi"], dtype=object))["data"] == ["hi"]


def test_nested_data_is_accepted_in_row_major_order() -> None:
    _, arr = decode_tensor(_t([[1, 2, 3], [4, 5, 6]], [3, 2]))
    np.testing.assert_array_equal(arr, [[1, 2], [3, 4], [5, 6]])


def test_wrong_shape_names_tensor_shape_and_data_length() -> None:
    with pytest.raises(
        ValidationError,
        match=r"tensor 'x' declares shape \[2, 3\] \(6 elements\) but its data has 4",
    ):
        decode_tensor(_t([1, 2, 3, 4], [2, 3]))


def test_unknown_datatype_lists_the_valid_ones() -> None:
    with pytest.raises(ValidationError, match=r"datatype 'FLOAT32'.*BOOL, UINT8.*FP64, BYTES"):
        decode_tensor(_t([1.0], [1], "FLOAT32"))


def test_fractional_values_in_an_integer_tensor_are_refused() -> None:
    with pytest.raises(ValidationError, match=r"'x' is INT64 but its data holds numbers"):
        decode_tensor(_t([1.5], [1], "INT64"))


def test_out_of_range_integer_is_refused() -> None:
    with pytest.raises(ValidationError, match=r"UINT8 but holds 300, outside \[0, 255\]"):
        decode_tensor(_t([1, 300], [2], "UINT8"))


def test_strings_in_a_float_tensor_are_refused() -> None:
    with pytest.raises(ValidationError, match=r"FP32 but its data holds strings"):
        decode_tensor(_t(["a"], [1]))


def test_negative_shape_is_refused() -> None:
    with pytest.raises(ValidationError, match=r"shape \[-1, 2\]"):
        decode_tensor(_t([1, 2], [-1, 2]))


def test_duplicate_tensor_names_are_refused() -> None:
    with pytest.raises(ValidationError, match=r"'x' appears twice"):
        decode_tensors([_t([1.0], [1]), _t([2.0], [1])])


def test_list_instances_become_one_2d_input() -> None:
    out = instances_to_inputs([[1.0, 2.0], [3.0, 4.0]], ["input"])
    assert list(out) == ["input"] and out["input"].shape == (2, 2)


def test_object_instances_become_columns_in_feature_order() -> None:
    rows = [{"b": 2.0, "a": 1.0, "extra": "x"}, {"a": 3.0, "b": 4.0}]
    out = instances_to_inputs(rows, ["input"], ["a", "b"])
    assert list(out) == ["a", "b"]
    np.testing.assert_array_equal(out["a"], [1.0, 3.0])


def test_instance_missing_a_field_is_named() -> None:
    with pytest.raises(ValidationError, match=r"instance 1 lacks the fields \['b'\]"):
        instances_to_inputs([{"a": 1, "b": 2}, {"a": 3}], ["input"], ["a", "b"])


def test_ragged_instances_are_refused() -> None:
    with pytest.raises(ValidationError, match=r"'input' has ragged values"):
        instances_to_inputs([[1.0, 2.0], [3.0]], ["input"])


def test_null_in_instances_is_refused() -> None:
    with pytest.raises(ValidationError, match=r"'input' mixes types or holds nulls"):
        instances_to_inputs([[1.0, None]], ["input"])


def test_columnar_inputs_object_and_list() -> None:
    assert list(columns_to_inputs({"a": [1, 2], "b": [3, 4]}, ["input"])) == ["a", "b"]
    assert columns_to_inputs([[1, 2]], ["input"])["input"].shape == (1, 2)


def test_body_without_instances_or_inputs_is_refused() -> None:
    with pytest.raises(ValidationError, match=r"instances.*inputs"):
        json_to_inputs({"rows": []}, ["input"])


def test_outputs_become_one_object_per_instance() -> None:
    outputs = {
        "label": np.array([0, 2]),
        "probabilities": np.array([[0.9, 0.1], [0.2, 0.8]], dtype=np.float32),
    }
    preds = outputs_to_predictions(outputs)
    assert preds[1]["label"] == 2 and len(preds[1]["probabilities"]) == 2


def test_single_output_gives_plain_values() -> None:
    assert outputs_to_predictions({"prediction": np.array([1.5, 2.5])}) == [1.5, 2.5]


def test_outputs_with_different_batch_sizes_are_refused() -> None:
    with pytest.raises(ValidationError, match=r"batch size"):
        outputs_to_predictions({"a": np.zeros(2), "b": np.zeros(3)})
