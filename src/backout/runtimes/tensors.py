"""JSON request bodies to numpy tensors and back: the gateway's request path.

For the gateway and the HTTP runtime. Three shapes of JSON arrive:

* Open Inference Protocol (KServe/Triton v2) tensors: ``{"name", "shape", "datatype",
  "data"}``, data flat in row-major order or nested — :func:`decode_tensors`,
  :func:`encode_tensors`;
* ``{"instances": [...]}``, one entry per example, as a list of values or an object of
  fields — :func:`instances_to_inputs`;
* ``{"inputs": {...}}``, one entry per input (or field), columnar — :func:`columns_to_inputs`.

:func:`outputs_to_predictions` turns a predictor's output tensors into one JSON value per
instance. Every check raises :class:`~backout.errors.ValidationError` naming the tensor or
field, so the gateway can answer 422 with a message the caller can act on.

These functions run on every request, so they hand whole lists to numpy (one C loop)
instead of visiting elements in Python; only BYTES tensors and row objects need Python.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from operator import itemgetter
from typing import Any

import numpy as np

from backout.errors import ValidationError

DATATYPES: dict[str, np.dtype[Any]] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16),
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
    "BYTES": np.dtype(object),
}
"""Open Inference Protocol datatype → numpy dtype. BYTES tensors hold Python strings."""

_NAME_OF: dict[np.dtype[Any], str] = {dt: name for name, dt in DATATYPES.items() if name != "BYTES"}
_VALID = ", ".join(DATATYPES)
# Which kinds of numbers JSON data may hold for a datatype of each kind: no silent truncation
# of 1.5 into an integer tensor, no numbers in a BOOL tensor.
_ACCEPTS = {"b": "b", "u": "iu", "i": "iu", "f": "iuf"}


def datatype_of(dtype: np.dtype[Any]) -> str:
    """The Open Inference Protocol datatype that carries numpy ``dtype``."""
    name = _NAME_OF.get(dtype)
    if name is not None:
        return name
    if dtype.kind in "OUS":
        return "BYTES"
    raise ValidationError(
        f"numpy dtype {dtype} has no Open Inference Protocol datatype; use one of {_VALID}"
    )


def _check_shape(name: str, shape: Any) -> tuple[int, ...]:
    if not isinstance(shape, list) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
    ):
        raise ValidationError(
            f"tensor {name!r} has shape {shape!r}: give a list of non-negative integers"
        )
    return tuple(shape)


def _as_dtype(name: str, what: str, data: Any, dtype: np.dtype[Any], datatype: str) -> np.ndarray:
    if datatype == "BYTES":
        try:
            arr = np.array(data, dtype=object)
        except ValueError as exc:
            raise ValidationError(f"{what} {name!r} has ragged data: {exc}") from exc
        return arr
    try:
        raw = np.asarray(data)
    except ValueError as exc:
        raise ValidationError(
            f"{what} {name!r} has ragged data: every row must have the same length"
        ) from exc
    if raw.size and raw.dtype.kind not in _ACCEPTS[dtype.kind]:
        raise ValidationError(
            f"{what} {name!r} is {datatype} but its data holds "
            f"{_describe_kind(raw.dtype)}: send {_describe_kind(dtype)}"
        )
    if dtype.kind in "iu" and raw.size and raw.dtype != dtype:
        info = np.iinfo(dtype)
        lo, hi = raw.min(), raw.max()
        if lo < info.min or hi > info.max:
            raise ValidationError(
                f"{what} {name!r} is {datatype} but holds {lo if lo < info.min else hi}, "
                f"outside [{info.min}, {info.max}]"
            )
    return raw.astype(dtype, copy=False)


def _describe_kind(dtype: np.dtype[Any]) -> str:
    return {
        "b": "booleans",
        "i": "integers",
        "u": "integers",
        "f": "numbers",
        "U": "strings",
        "S": "strings",
    }.get(dtype.kind, "mixed values or nulls")


def decode_tensor(tensor: Any) -> tuple[str, np.ndarray]:
    """One Open Inference Protocol JSON tensor → ``(name, array)`` of the declared shape."""
    if not isinstance(tensor, Mapping):
        raise ValidationError(
            "each tensor must be an object with name, shape, datatype and data; "
            f"got {type(tensor).__name__}"
        )
    name = tensor.get("name")
    if not isinstance(name, str) or not name:
        raise ValidationError(f"a tensor has name {name!r}: give each tensor a non-empty name")
    shape = _check_shape(name, tensor.get("shape"))
    datatype = tensor.get("datatype")
    dtype = DATATYPES.get(datatype) if isinstance(datatype, str) else None
    if dtype is None or not isinstance(datatype, str):
        raise ValidationError(
            f"tensor {name!r} has datatype {datatype!r}, which is not one of {_VALID}"
        )
    if "data" not in tensor:
        raise ValidationError(f"tensor {name!r} has no data")
    data = tensor["data"]
    if not isinstance(data, list):
        data = [data]
    arr = _as_dtype(name, "tensor", data, dtype, datatype)
    expected = math.prod(shape)
    if arr.size != expected:
        raise ValidationError(
            f"tensor {name!r} declares shape {list(shape)} ({expected} elements) but its data "
            f"has {arr.size}"
        )
    return name, arr.reshape(shape)


def decode_tensors(tensors: Any, *, what: str = "inputs") -> dict[str, np.ndarray]:
    """The ``inputs`` (or ``outputs``) list of an inference request or response → arrays."""
    if not isinstance(tensors, list) or not tensors:
        raise ValidationError(f"{what!r} must be a non-empty list of tensors")
    out: dict[str, np.ndarray] = {}
    for t in tensors:
        name, arr = decode_tensor(t)
        if name in out:
            raise ValidationError(f"tensor {name!r} appears twice in {what!r}")
        out[name] = arr
    return out


def encode_tensor(name: str, arr: np.ndarray) -> dict[str, Any]:
    """An array → an Open Inference Protocol JSON tensor, data flat in row-major order."""
    datatype = datatype_of(arr.dtype)
    data = arr.ravel().tolist()
    if datatype == "BYTES":
        data = [_text(v) for v in data]
    return {"name": name, "shape": list(arr.shape), "datatype": datatype, "data": data}


def encode_tensors(tensors: Mapping[str, np.ndarray]) -> list[dict[str, Any]]:
    """Named arrays → a list of Open Inference Protocol JSON tensors."""
    return [encode_tensor(name, np.asarray(arr)) for name, arr in tensors.items()]


def _text(v: Any) -> Any:
    return v.decode("utf-8", "replace") if isinstance(v, bytes) else v


def _column(field: str, values: Any) -> np.ndarray:
    try:
        arr = np.asarray(values)
    except ValueError as exc:
        raise ValidationError(
            f"field {field!r} has ragged values: every instance must have the same shape"
        ) from exc
    if arr.dtype == object:
        raise ValidationError(
            f"field {field!r} mixes types or holds nulls: send numbers, booleans or strings"
        )
    return arr


def instances_to_inputs(
    instances: Any, input_names: Sequence[str], feature_names: Sequence[str] | None = None
) -> dict[str, np.ndarray]:
    """``{"instances": [...]}`` → the named tensors a predictor takes.

    Rows given as lists become one tensor under the model's only input. Rows given as
    objects become one column per field, in ``feature_names`` order (or one tensor per
    input name when the model has no feature names); other fields are ignored here and left
    to the contract check.
    """
    if not isinstance(instances, list) or not instances:
        raise ValidationError('"instances" must be a non-empty list')
    if isinstance(instances[0], Mapping):
        keys = list(feature_names or input_names)
        getter = itemgetter(*keys)
        try:
            rows = list(map(getter, instances))
        except (KeyError, TypeError) as exc:
            raise _bad_row(instances, keys) from exc
        if len(keys) == 1:
            return {keys[0]: _column(keys[0], rows)}
        return {k: _column(k, col) for k, col in zip(keys, zip(*rows, strict=True), strict=True)}
    if len(input_names) != 1:
        raise ValidationError(
            f"the model takes the inputs {list(input_names)}: send each instance as an object "
            "with those fields"
        )
    name = input_names[0]
    arr = _column(name, instances)
    return {name: arr}


def _bad_row(instances: list[Any], keys: list[str]) -> ValidationError:
    # The slow path, only on error: find the first instance that breaks and say why.
    for i, row in enumerate(instances):
        if not isinstance(row, Mapping):
            return ValidationError(
                f"instance {i} is {type(row).__name__}: when the first instance is an object "
                "of fields, every instance must be one"
            )
        missing = [k for k in keys if k not in row]
        if missing:
            return ValidationError(f"instance {i} lacks the fields {missing}; needs {keys}")
    return ValidationError(f"every instance must be an object with the fields {keys}")


def columns_to_inputs(inputs: Any, input_names: Sequence[str]) -> dict[str, np.ndarray]:
    """``{"inputs": {...}}`` (columnar, one entry per input or field) → named tensors.

    A bare list instead of an object is the single input of a one-input model.
    """
    if isinstance(inputs, Mapping):
        if not inputs:
            raise ValidationError('"inputs" is empty: give one entry per input')
        return {str(k): _column(str(k), v) for k, v in inputs.items()}
    if isinstance(inputs, list):
        if len(input_names) != 1:
            raise ValidationError(
                f"the model takes the inputs {list(input_names)}: send "
                '"inputs" as an object with one entry per input'
            )
        return {input_names[0]: _column(input_names[0], inputs)}
    raise ValidationError('"inputs" must be an object of named inputs or a list')


def json_to_inputs(
    body: Any, input_names: Sequence[str], feature_names: Sequence[str] | None = None
) -> dict[str, np.ndarray]:
    """A simple JSON body, ``{"instances": [...]}`` or ``{"inputs": {...}}``, → tensors."""
    if isinstance(body, Mapping):
        if "instances" in body:
            return instances_to_inputs(body["instances"], input_names, feature_names)
        if "inputs" in body:
            return columns_to_inputs(body["inputs"], input_names)
    raise ValidationError('the body must be {"instances": [...]} or {"inputs": {...}}')


def outputs_to_predictions(outputs: Mapping[str, np.ndarray]) -> list[Any]:
    """Output tensors → one JSON value per instance.

    A single output gives its rows as they are; several give one object per instance,
    ``{"label": 2, "probabilities": [...]}``.
    """
    if not outputs:
        return []
    columns: dict[str, list[Any]] = {}
    batch: int | None = None
    for name, arr in outputs.items():
        if arr.ndim == 0:
            raise ValidationError(f"output {name!r} is a scalar: outputs need a batch dimension")
        if batch is None:
            batch = arr.shape[0]
        elif arr.shape[0] != batch:
            raise ValidationError(
                f"outputs disagree on the batch size: {name!r} has {arr.shape[0]}, others {batch}"
            )
        values = arr.tolist()
        if arr.dtype.kind in "OS":
            values = _texts(values)
        columns[name] = values
    if len(columns) == 1:
        return next(iter(columns.values()))
    names = list(columns)
    return [dict(zip(names, row, strict=True)) for row in zip(*columns.values(), strict=True)]


def _texts(values: Any) -> Any:
    if isinstance(values, list):
        return [_texts(v) for v in values]
    return _text(values)
