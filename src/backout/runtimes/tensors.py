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


NUMERIC_KINDS = "biuf"
"""The numpy kinds a numeric input takes: numbers, and booleans (which count as 0 and 1)."""


def numeric_kinds(datatype: Any) -> str | None:
    """:data:`NUMERIC_KINDS` for a numeric Open Inference Protocol datatype, else None."""
    dtype = DATATYPES.get(datatype) if isinstance(datatype, str) else None
    return NUMERIC_KINDS if dtype is not None and dtype.kind in NUMERIC_KINDS else None


def check_kinds(ref: str, inputs: Mapping[str, np.ndarray], kinds: Mapping[str, str]) -> None:
    """Refuse any tensor whose values are of a kind its input does not take.

    ``kinds`` maps an input name (or ``"*"``, any tensor of a one-input model) to the numpy
    kinds it accepts, e.g. :data:`NUMERIC_KINDS`. A BYTES tensor sent to a numeric input is
    the caller's error: :class:`~backout.errors.ValidationError` (422) before the model runs,
    never a model failure.
    """
    anyone = kinds.get("*")
    for name, arr in inputs.items():
        accepted = kinds.get(name, anyone)
        if accepted is not None and arr.dtype.kind not in accepted:
            raise _wrong_kind(ref, name, arr.dtype, accepted)


def cast_input(ref: str, name: str, x: np.ndarray, dtype: np.dtype[Any]) -> np.ndarray:
    """``x`` as ``dtype`` for input ``name`` of ``ref``; a ValidationError (422), not a numpy
    error, when its values cannot be that dtype (strings or objects for a numeric input)."""
    if x.dtype == dtype:
        return x
    if dtype.kind in NUMERIC_KINDS and x.dtype.kind not in NUMERIC_KINDS:
        raise _wrong_kind(ref, name, x.dtype, _ACCEPTS.get(dtype.kind, NUMERIC_KINDS))
    try:
        return x.astype(dtype)
    except (TypeError, ValueError) as exc:
        raise ValidationError(
            f"{ref} input {name!r} takes {datatype_of(dtype)}; its data cannot be converted: {exc}"
        ) from exc


def _wrong_kind(ref: str, name: str, sent: np.dtype[Any], accepted: str) -> ValidationError:
    sent_name = "BYTES" if sent.kind in "OUSV" else _NAME_OF.get(sent, str(sent))
    what = "" if sent_name == "BYTES" else f" ({_describe_kind(sent)})"
    if "f" in accepted:
        wanted, fix = "numbers", "send a numeric datatype such as FP32 or FP64"
    elif "i" in accepted or "u" in accepted:
        wanted, fix = "integers", "send an integer datatype such as INT64"
    else:
        wanted, fix = "booleans", "send BOOL"
    return ValidationError(
        f"tensor {name!r} is {sent_name}{what} but {ref} takes {wanted} there: {fix}"
    )


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


# -- the binary tensor data extension (KServe / Triton) -------------------------------------
# A request may carry tensors as raw bytes after the JSON: the header
# ``Inference-Header-Content-Length`` gives the JSON's length, and each tensor with
# ``parameters.binary_data_size`` takes that many bytes, in order. Clients such as
# tritonclient send it by default, so a real OIP server has to speak it.

BINARY_HEADER = "inference-header-content-length"


def _binary_element_bytes(name: str, datatype: str, raw: bytes) -> np.ndarray:
    if datatype == "BYTES":
        # Each element: a 4-byte little-endian length, then that many bytes.
        items: list[str] = []
        i = 0
        while i < len(raw):
            if i + 4 > len(raw):
                raise ValidationError(f"tensor {name!r}: truncated BYTES element length")
            n = int.from_bytes(raw[i : i + 4], "little")
            items.append(raw[i + 4 : i + 4 + n].decode("utf-8", errors="replace"))
            i += 4 + n
        return np.array(items, dtype=object)
    dtype = DATATYPES[datatype].newbyteorder("<")
    if len(raw) % dtype.itemsize:
        raise ValidationError(
            f"tensor {name!r}: {len(raw)} bytes is not a whole number of {datatype} elements"
        )
    return np.frombuffer(raw, dtype=dtype)


def decode_binary_request(
    body: bytes, header_length: str
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Split a binary-extension request into its JSON part and the decoded input tensors."""
    try:
        n = int(header_length)
    except ValueError as exc:
        raise ValidationError(
            f"Inference-Header-Content-Length {header_length!r} is not a number"
        ) from exc
    if not 0 < n <= len(body):
        raise ValidationError(
            f"Inference-Header-Content-Length is {n} but the body has {len(body)} bytes"
        )
    import orjson

    try:
        doc = orjson.loads(body[:n])
    except orjson.JSONDecodeError as exc:
        raise ValidationError(f"malformed JSON header: {exc}") from exc
    if not isinstance(doc, dict) or not isinstance(doc.get("inputs"), list):
        raise ValidationError('the JSON header must be an object with "inputs"')
    offset = n
    tensors: dict[str, np.ndarray] = {}
    for t in doc["inputs"]:
        size = (
            (t.get("parameters") or {}).get("binary_data_size") if isinstance(t, Mapping) else None
        )
        if size is None:
            name, arr = decode_tensor(t)
        else:
            name = str(t.get("name"))
            datatype = t.get("datatype")
            if datatype not in DATATYPES:
                raise ValidationError(
                    f"tensor {name!r} has datatype {datatype!r}, which is not one of {_VALID}"
                )
            shape = _check_shape(name, t.get("shape"))
            if offset + int(size) > len(body):
                raise ValidationError(
                    f"tensor {name!r} wants {size} bytes past the end of the body"
                )
            flat = _binary_element_bytes(name, datatype, body[offset : offset + int(size)])
            offset += int(size)
            if flat.size != math.prod(shape):
                raise ValidationError(
                    f"tensor {name!r} declares shape {list(shape)} ({math.prod(shape)} elements) "
                    f"but its data has {flat.size}"
                )
            arr = flat.reshape(shape)
        if name in tensors:
            raise ValidationError(f"tensor {name!r} appears twice in 'inputs'")
        tensors[name] = arr
    return doc, tensors


def wants_binary(doc: Mapping[str, Any], name: str) -> bool:
    """Whether the request asked for output ``name`` as binary data."""
    for o in doc.get("outputs") or []:
        if isinstance(o, Mapping) and o.get("name") == name:
            return bool((o.get("parameters") or {}).get("binary_data", False))
    return bool((doc.get("parameters") or {}).get("binary_data_output", False))


def encode_binary_response(
    header: dict[str, Any], outputs: Mapping[str, np.ndarray], binary: set[str]
) -> tuple[bytes, int]:
    """The response body and its JSON length, with the outputs in ``binary`` as raw bytes."""
    import orjson

    tensors: list[dict[str, Any]] = []
    blobs: list[bytes] = []
    for name, arr in outputs.items():
        arr = np.asarray(arr)
        if name not in binary:
            tensors.append(encode_tensor(name, arr))
            continue
        datatype = datatype_of(arr.dtype)
        if datatype == "BYTES":
            raw = b"".join(
                len(b).to_bytes(4, "little") + b
                for b in (str(_text(v)).encode() for v in arr.ravel().tolist())
            )
        else:
            raw = np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("<")).tobytes()
        blobs.append(raw)
        tensors.append({"name": name, "shape": list(arr.shape), "datatype": datatype,
                        "parameters": {"binary_data_size": len(raw)}})  # fmt: skip
    head = orjson.dumps({**header, "outputs": tensors}, option=orjson.OPT_SERIALIZE_NUMPY)
    return head + b"".join(blobs), len(head)
