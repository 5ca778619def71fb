"""Contracts: compiled validators for the gateway, and contracts inferred from the model.

A release's contract (:class:`backout.registry.manifest.Contract`) holds two JSON Schemas:

- ``input`` describes ONE instance as callers send it in ``{"instances": [...]}``: an
  object of named fields, or an array of numbers for positional features. Tensor facts for
  the Open Inference Protocol (names, shapes with -1 for dynamic dimensions, datatypes) go
  in the extension key ``"x-backout-tensors"``.
- ``output`` describes ONE prediction as returned, e.g. ``{"label": ..., "probabilities": ...}``.

The gateway calls :func:`compile_validator` once per release it loads and the result on
every instance; release authors call the ``infer_*`` functions (or ``backout release
register`` does) so a contract exists without anyone writing JSON Schema by hand. The
compatibility diff lives in :mod:`backout.proof.compat`, consumer contracts in
:mod:`backout.proof.consumers`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import fastjsonschema
import jsonschema

from backout.errors import InvalidContract
from backout.registry.manifest import Contract, check_json_schema

TENSORS_KEY = "x-backout-tensors"
MLFLOW_TYPE_KEY = "x-mlflow-type"

JSON_TYPES = frozenset({"string", "number", "integer", "boolean", "array", "object", "null"})

# Keywords whose meaning differs between Draft 7 (what fastjsonschema compiles) and Draft
# 2020-12 (what contracts are written in). A schema using any of them is validated by
# jsonschema instead, so the fast path can never accept what the contract forbids.
_NOT_DRAFT7 = frozenset(
    {
        "$ref",  # siblings of $ref are ignored in Draft 7, applied in 2020-12
        "$dynamicRef",
        "$dynamicAnchor",
        "$anchor",
        "prefixItems",
        "dependentRequired",
        "dependentSchemas",
        "unevaluatedItems",
        "unevaluatedProperties",
        "minContains",
        "maxContains",
    }
)


# --------------------------------------------------------------------------- validation


@dataclass(frozen=True, slots=True)
class Violation:
    """One way an instance breaks its contract: where, which rule, and what was wrong.

    ``path`` is the route to the offending value (field names and list indexes); the
    gateway shows :attr:`field` in its 422 response and counts ``rule`` in telemetry.
    """

    path: tuple[str | int, ...]
    rule: str
    message: str

    @property
    def field(self) -> str:
        """The path as ``probabilities[2]`` or ``[0].sepal_length``; ``(instance)`` at the root."""
        return render_path(self.path) or "(instance)"

    def to_dict(self) -> dict[str, Any]:
        return {
            "field": self.field,
            "path": list(self.path),
            "rule": self.rule,
            "message": self.message,
        }

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"


def render_path(path: Sequence[str | int]) -> str:
    """Write a path as ``a.b[2].c``."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list | tuple):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _short(value: Any, limit: int = 60) -> str:
    text = json.dumps(value, default=str) if not isinstance(value, str) else repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _violations(error: jsonschema.ValidationError) -> Iterator[Violation]:
    """Turn one jsonschema error into violations that name the field, in plain words."""
    path = tuple(error.absolute_path)
    rule, expected, value = str(error.validator), error.validator_value, error.instance
    if rule == "required" and isinstance(value, dict):
        for name in expected:
            if name not in value:
                yield Violation((*path, name), rule, "required field is missing")
        return
    if rule == "additionalProperties" and isinstance(value, dict):
        known = error.schema.get("properties", {}) if isinstance(error.schema, dict) else {}
        for name in value:
            if name not in known:
                yield Violation(
                    (*path, name), rule, "unexpected field: the contract allows no extra fields"
                )
        return
    messages = {
        "type": lambda: f"expected {_either(expected)}, got {_json_type(value)} {_short(value)}",
        "enum": lambda: f"{_short(value)} is not one of {_short(expected, 120)}",
        "const": lambda: f"{_short(value)} is not {_short(expected)}",
        "minimum": lambda: f"{_short(value)} is less than the minimum {expected}",
        "maximum": lambda: f"{_short(value)} is more than the maximum {expected}",
        "exclusiveMinimum": lambda: f"{_short(value)} must be more than {expected}",
        "exclusiveMaximum": lambda: f"{_short(value)} must be less than {expected}",
        "minItems": lambda: f"has {len(value)} items, expected at least {expected}",
        "maxItems": lambda: f"has {len(value)} items, expected at most {expected}",
    }
    make = messages.get(rule)
    yield Violation(path, rule, make() if make else error.message)


def _either(types: Any) -> str:
    return " or ".join(types) if isinstance(types, list) else str(types)


class Validator:
    """A contract schema compiled once and called on every request or response instance.

    Valid instances take the fast path (code generated by fastjsonschema, about 1 µs for
    an iris-like row). Only an invalid instance pays for jsonschema's full walk, which
    lists every violation with its field path. Schemas using Draft 2020-12 keywords that
    Draft 7 reads differently go straight to a pre-built jsonschema validator.
    """

    def __init__(self, schema: dict[str, Any]) -> None:
        check_json_schema(schema, "contract")
        self.schema = schema
        self._full = jsonschema.Draft202012Validator(schema)
        self._fast: Callable[[Any], Any] | None = None
        if not any(key in _NOT_DRAFT7 for key in _keys(schema)):
            draft7 = {k: v for k, v in schema.items() if k != "$schema"}
            try:
                # use_default=False: fastjsonschema would otherwise write defaults into
                # the caller's request; formats are annotations in 2020-12, as in jsonschema.
                self._fast = fastjsonschema.compile(
                    draft7, use_default=False, use_formats=False, detailed_exceptions=False
                )
            except fastjsonschema.JsonSchemaDefinitionException:
                self._fast = None

    @property
    def engine(self) -> str:
        """Which library checks valid instances: ``fastjsonschema`` or ``jsonschema``."""
        return "fastjsonschema" if self._fast is not None else "jsonschema"

    def is_valid(self, instance: Any) -> bool:
        """True when ``instance`` satisfies the contract."""
        if self._fast is None:
            return bool(self._full.is_valid(instance))
        try:
            self._fast(instance)
        except fastjsonschema.JsonSchemaValueException:
            return False
        return True

    def __call__(self, instance: Any) -> list[Violation]:
        """Every violation of ``instance``, sorted by path; empty when it is valid."""
        if self.is_valid(instance):
            return []
        found = [v for error in self._full.iter_errors(instance) for v in _violations(error)]
        if not found:  # the engines disagree; never call an instance invalid without a reason
            found = [Violation((), "schema", "does not match the contract")]
        return sorted(set(found), key=lambda v: (render_path(v.path), v.rule))

    def check_batch(self, instances: Sequence[Any]) -> list[Violation]:
        """Violations of every instance of a batch, each path starting with its index."""
        out: list[Violation] = []
        for index, instance in enumerate(instances):
            out.extend(Violation((index, *v.path), v.rule, v.message) for v in self(instance))
        return out


def compile_validator(schema: dict[str, Any]) -> Validator:
    """Compile ``schema`` once; :class:`InvalidContract` if it is not valid JSON Schema."""
    return Validator(schema)


def _keys(node: Any) -> Iterator[str]:
    # Conservative: a property *named* like a keyword also counts; that only costs speed.
    if isinstance(node, dict):
        for key, value in node.items():
            yield key
            yield from _keys(value)
    elif isinstance(node, list):
        for item in node:
            yield from _keys(item)


# --------------------------------------------------------------------------- scikit-learn


def infer_sklearn_contract(estimator: Any, *, strict: bool = False) -> Contract:
    """Infer a contract from a fitted scikit-learn estimator or pipeline.

    Input: an object of named number fields from ``feature_names_in_`` (fitted on a
    DataFrame), else a positional array of ``n_features_in_`` numbers. ``strict`` forbids
    extra fields; by default they are allowed, as the runtime picks the columns it knows.
    Output: ``label`` (an enum of ``classes_``) and, with ``predict_proba``,
    ``probabilities`` (one number in [0, 1] per class); a regressor returns ``value``.
    """
    names = getattr(estimator, "feature_names_in_", None)
    count = getattr(estimator, "n_features_in_", None)
    if names is None and count is None:
        raise InvalidContract(
            f"cannot infer a contract from {type(estimator).__name__}: it is not fitted "
            "(no feature_names_in_ or n_features_in_); fit it first or write the contract"
        )
    number = {"type": "number"}
    input_schema: dict[str, Any]
    if names is not None:
        fields = [str(n) for n in names]
        input_schema = {
            "type": "object",
            "properties": {n: dict(number) for n in fields},
            "required": fields,
            "additionalProperties": not strict,
        }
    else:
        width = int(count)  # type: ignore[arg-type]  # not None: checked above
        input_schema = {"type": "array", "items": number, "minItems": width, "maxItems": width}

    # The shape of one prediction follows what the gateway returns for the sklearn runtime:
    # a single output tensor is answered bare, several as an object of named outputs.
    classes = getattr(estimator, "classes_", None)
    output: dict[str, Any]
    if classes is None:
        output = {"type": "number"}
    else:
        labels = [_native(c) for c in classes]
        if hasattr(estimator, "predict_proba"):
            output = {
                "type": "object",
                "properties": {
                    "label": {"enum": labels},
                    "probabilities": {
                        "type": "array",
                        "items": {"type": "number", "minimum": 0, "maximum": 1},
                        "minItems": len(labels),
                        "maxItems": len(labels),
                    },
                },
                "required": ["label", "probabilities"],
            }
        else:
            output = {"enum": labels}
    return Contract(input=input_schema, output=output)


def _native(value: Any) -> Any:
    # numpy scalars (np.int64, np.str_) are not JSON; .item() turns them into Python values.
    item = getattr(value, "item", None)
    return item() if callable(item) else value


# --------------------------------------------------------------------------- ONNX

# ONNX TensorProto element types → Open Inference Protocol datatypes.
ONNX_DATATYPES: dict[int, str] = {
    1: "FP32", 2: "UINT8", 3: "INT8", 4: "UINT16", 5: "INT16", 6: "INT32", 7: "INT64",
    8: "BYTES", 9: "BOOL", 10: "FP16", 11: "FP64", 12: "UINT32", 13: "UINT64", 16: "BF16",
}  # fmt: skip
# onnxruntime's type strings → the same datatypes, for when the onnx package is absent.
_ORT_DATATYPES = {
    "tensor(float)": "FP32", "tensor(uint8)": "UINT8", "tensor(int8)": "INT8",
    "tensor(uint16)": "UINT16", "tensor(int16)": "INT16", "tensor(int32)": "INT32",
    "tensor(int64)": "INT64", "tensor(string)": "BYTES", "tensor(bool)": "BOOL",
    "tensor(float16)": "FP16", "tensor(double)": "FP64", "tensor(uint32)": "UINT32",
    "tensor(uint64)": "UINT64", "tensor(bfloat16)": "BF16",
}  # fmt: skip


def _datatype_schema(datatype: str | None) -> dict[str, Any]:
    if datatype is None:
        return {}
    if datatype == "BYTES":
        return {"type": "string"}
    if datatype == "BOOL":
        return {"type": "boolean"}
    if datatype.startswith(("INT", "UINT")):
        return (
            {"type": "integer", "minimum": 0} if datatype.startswith("U") else {"type": "integer"}
        )
    return {"type": "number"}


def _tensor_instance_schema(shape: Sequence[int], datatype: str | None) -> dict[str, Any]:
    """Schema of one instance of a batched tensor: the first (batch) dimension dropped."""
    schema = _datatype_schema(datatype)
    for dim in reversed(list(shape[1:])):
        schema = {"type": "array", "items": schema}
        if dim >= 0:
            schema["minItems"] = schema["maxItems"] = dim
    return schema


@dataclass(frozen=True)
class TensorSpec:
    """A named tensor: shape with -1 for dynamic dimensions, OIP datatype (None if not a tensor)."""

    name: str
    shape: tuple[int, ...]
    datatype: str | None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "shape": list(self.shape), "datatype": self.datatype}


def _onnx_specs_from_graph(data: bytes) -> tuple[list[TensorSpec], list[TensorSpec]]:
    import onnx

    model = onnx.load_from_string(data)
    graph = model.graph
    initializers = {i.name for i in graph.initializer}

    def spec(value: Any) -> TensorSpec:
        kind = value.type.WhichOneof("value")
        if kind != "tensor_type":  # sequences and maps (e.g. skl2onnx's ZipMap probabilities)
            return TensorSpec(value.name, (), None, {"onnx_type": kind})
        tensor = value.type.tensor_type
        dims = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in tensor.shape.dim)
        return TensorSpec(value.name, dims, ONNX_DATATYPES.get(tensor.elem_type))

    labels: list[Any] | None = None
    for node in graph.node:
        if node.op_type.endswith("Classifier"):
            for attr in node.attribute:
                if attr.name == "classlabels_strings":
                    labels = [s.decode() for s in attr.strings]
                elif attr.name in ("classlabels_ints", "classlabels_int64s"):
                    labels = list(attr.ints)
    inputs = [spec(v) for v in graph.input if v.name not in initializers]
    outputs = [spec(v) for v in graph.output]
    if labels is not None:
        outputs = [
            TensorSpec(o.name, o.shape, o.datatype, {"labels": labels}) if "label" in o.name else o
            for o in outputs
        ]
    return inputs, outputs


def _onnx_specs_from_session(data: bytes) -> tuple[list[TensorSpec], list[TensorSpec]]:
    import onnxruntime

    session = onnxruntime.InferenceSession(data, providers=["CPUExecutionProvider"])

    def spec(arg: Any) -> TensorSpec:
        dims = tuple(d if isinstance(d, int) else -1 for d in (arg.shape or ()))
        datatype = _ORT_DATATYPES.get(arg.type)
        return TensorSpec(arg.name, dims, datatype, {} if datatype else {"onnx_type": arg.type})

    return [spec(a) for a in session.get_inputs()], [spec(a) for a in session.get_outputs()]


def infer_onnx_contract(source: str | Path | bytes) -> Contract:
    """Infer a contract from an ONNX graph (a path or its bytes).

    One input of shape ``[-1, n]`` becomes a positional array of ``n`` values; several
    inputs become an object with a field per input. The output is an object with a field
    per graph output; a classifier's label output gets the enum of its class labels.
    Tensor names, shapes and datatypes are kept under ``x-backout-tensors``. Reads the
    graph with the ``onnx`` package when it is installed, else onnxruntime's metadata.
    """
    data = Path(source).read_bytes() if isinstance(source, str | Path) else source
    try:
        import onnx  # noqa: F401  (only probing whether it is installed)
    except ImportError:
        reader = _onnx_specs_from_session
    else:
        reader = _onnx_specs_from_graph
    try:
        inputs, outputs = reader(data)
    except Exception as exc:  # both readers raise their own protobuf/runtime errors
        raise InvalidContract(f"cannot read the ONNX graph to infer its contract: {exc}") from exc
    return Contract(input=_onnx_input_schema(inputs), output=_onnx_output_schema(outputs))


def _onnx_input_schema(inputs: Sequence[TensorSpec]) -> dict[str, Any]:
    tensors = [i.to_dict() for i in inputs]
    if len(inputs) == 1:
        schema = _tensor_instance_schema(inputs[0].shape, inputs[0].datatype)
    else:
        props = {}
        for spec in inputs:
            one = _tensor_instance_schema(spec.shape, spec.datatype)
            # skl2onnx gives each named column its own [-1, 1] input: send it as a scalar.
            if one.get("maxItems") == 1 and one.get("type") == "array":
                one = one["items"]
            props[spec.name] = one
        schema = {"type": "object", "properties": props, "required": [i.name for i in inputs]}
    return {**schema, TENSORS_KEY: tensors}


def _onnx_output_schema(outputs: Sequence[TensorSpec]) -> dict[str, Any]:
    props: dict[str, Any] = {}
    for spec in outputs:
        if spec.datatype is None:
            # A sequence of maps is one {class: probability} object per instance.
            props[spec.name] = {"type": "object", "additionalProperties": {"type": "number"}}
            continue
        one = _tensor_instance_schema(spec.shape, spec.datatype)
        if "labels" in spec.extra:
            one = {"enum": spec.extra["labels"]}
        props[spec.name] = one
    return {
        "type": "object",
        "properties": props,
        "required": [o.name for o in outputs],
        # Sequences and maps have no Open Inference Protocol datatype: not listed as tensors.
        TENSORS_KEY: [o.to_dict() for o in outputs if o.datatype is not None],
    }


# --------------------------------------------------------------------------- MLflow

# MLflow's column types as JSON Schema. JSON has one number type, so the widths MLflow
# enforces live in ranges (integer is 32-bit, long 64-bit) and in the x-mlflow-type note
# that the compatibility diff reads.
MLFLOW_COLUMN_TYPES: dict[str, dict[str, Any]] = {
    "boolean": {"type": "boolean"},
    "integer": {"type": "integer", "minimum": -(2**31), "maximum": 2**31 - 1},
    "long": {"type": "integer", "minimum": -(2**63), "maximum": 2**63 - 1},
    "float": {"type": "number"},
    "double": {"type": "number"},
    "string": {"type": "string"},
    "binary": {"type": "string", "contentEncoding": "base64"},
    "datetime": {"type": "string", "format": "date-time"},
}
# What MLflow's schema enforcement converts without complaint (``_enforce_mlflow_datatype``):
# the same kind at least as wide, or a small integer to double. long → double is refused
# (an int64 does not fit a float64 exactly), and nothing ever narrows.
MLFLOW_SAFE_CONVERSIONS = frozenset(
    {("integer", "long"), ("integer", "double"), ("float", "double")}
)
# numpy dtype names in MLflow tensor specs → Open Inference Protocol datatypes.
_NUMPY_DATATYPES = {
    "float16": "FP16", "float32": "FP32", "float64": "FP64", "int8": "INT8", "int16": "INT16",
    "int32": "INT32", "int64": "INT64", "uint8": "UINT8", "uint16": "UINT16", "uint32": "UINT32",
    "uint64": "UINT64", "bool": "BOOL", "object": "BYTES", "str": "BYTES", "bytes": "BYTES",
}  # fmt: skip


def mlflow_accepts(declared: str, sent: str) -> bool:
    """True when MLflow lets a column of type ``sent`` into a column declared ``declared``."""
    return declared == sent or (sent, declared) in MLFLOW_SAFE_CONVERSIONS


def contract_from_mlflow_signature(signature: Mapping[str, Any]) -> Contract:
    """Translate an MLflow model signature, in the form the MLmodel file stores it.

    ``signature`` is ``{"inputs": "<JSON list>", "outputs": "<JSON list>"}`` (already
    decoded lists are accepted too). Named columns become an object whose extra fields are
    allowed, because MLflow ignores columns it was not trained on; ``"required": false``
    columns are optional. Unnamed columns become a positional array. Tensor specs become
    nested arrays of the dtype, with their name, shape and datatype under
    ``x-backout-tensors``. A single unnamed output column is a bare value per prediction.
    """
    return Contract(
        input=_mlflow_schema(signature.get("inputs"), "inputs", is_input=True),
        output=_mlflow_schema(signature.get("outputs"), "outputs", is_input=False),
    )


def _mlflow_schema(raw: Any, what: str, *, is_input: bool) -> dict[str, Any] | None:
    if raw is None:
        return None
    try:
        specs = json.loads(raw) if isinstance(raw, str | bytes) else raw
    except ValueError as exc:
        raise InvalidContract(f"MLflow signature {what} is not JSON: {exc}") from exc
    if not isinstance(specs, list) or not all(isinstance(s, dict) for s in specs) or not specs:
        raise InvalidContract(
            f"MLflow signature {what} must be a non-empty list of column or tensor specs"
        )
    if any(s.get("type") == "tensor" for s in specs):
        return _mlflow_tensors(specs, what)
    named = [s for s in specs if s.get("name") is not None]
    if named and len(named) != len(specs):
        raise InvalidContract(f"MLflow signature {what} mixes named and unnamed columns")
    columns = [_mlflow_type(s, f"{what}[{i}]") for i, s in enumerate(specs)]
    if named:
        return {
            "type": "object",
            "properties": {str(s["name"]): c for s, c in zip(specs, columns, strict=True)},
            "required": [str(s["name"]) for s in specs if s.get("required", True)],
            # MLflow drops input columns it does not know, so callers may send extra ones.
            "additionalProperties": is_input,
        }
    if len(columns) == 1 and not is_input:
        return columns[0]
    if all(c == columns[0] for c in columns):
        return {
            "type": "array",
            "items": columns[0],
            "minItems": len(columns),
            "maxItems": len(columns),
        }
    return {
        "type": "array",
        "prefixItems": columns,
        "minItems": len(columns),
        "maxItems": len(columns),
    }


def _mlflow_type(spec: Mapping[str, Any], where: str) -> dict[str, Any]:
    """One MLflow column type (or nested array/object/map type) as JSON Schema."""
    kind = spec.get("type")
    if kind in MLFLOW_COLUMN_TYPES:
        return {**MLFLOW_COLUMN_TYPES[kind], MLFLOW_TYPE_KEY: kind}
    if kind == "array":
        return {"type": "array", "items": _mlflow_type(spec.get("items", {}), f"{where}.items")}
    if kind == "object":
        props = spec.get("properties", {})
        return {
            "type": "object",
            "properties": {k: _mlflow_type(v, f"{where}.{k}") for k, v in props.items()},
            "required": [k for k, v in props.items() if v.get("required", True)],
        }
    if kind == "map":
        return {
            "type": "object",
            "additionalProperties": _mlflow_type(spec.get("values", {}), where),
        }
    if kind in ("any", "Any"):
        return {}
    choices = ", ".join([*MLFLOW_COLUMN_TYPES, "array", "object", "map", "any", "tensor"])
    raise InvalidContract(
        f"MLflow signature {where} has unknown type {kind!r}: expected one of {choices}"
    )


def _mlflow_tensors(specs: Sequence[Mapping[str, Any]], what: str) -> dict[str, Any]:
    tensors: list[dict[str, Any]] = []
    schemas: list[dict[str, Any]] = []
    for i, spec in enumerate(specs):
        tensor = spec.get("tensor-spec")
        if spec.get("type") != "tensor" or not isinstance(tensor, dict):
            raise InvalidContract(f"MLflow signature {what}[{i}] mixes tensors and columns")
        dtype = str(tensor.get("dtype", ""))
        datatype = _NUMPY_DATATYPES.get(dtype)
        if datatype is None:
            raise InvalidContract(
                f"MLflow signature {what}[{i}] has unknown tensor dtype {dtype!r}"
            )
        shape = [int(d) for d in tensor.get("shape", [-1])]
        name = str(spec.get("name") or ("input" if what == "inputs" else "output"))
        tensors.append({"name": name, "shape": shape, "datatype": datatype})
        schemas.append(_tensor_instance_schema(shape, datatype))
    if len(specs) == 1:
        return {**schemas[0], TENSORS_KEY: tensors}
    return {
        "type": "object",
        "properties": {t["name"]: s for t, s in zip(tensors, schemas, strict=True)},
        "required": [t["name"] for t in tensors],
        TENSORS_KEY: tensors,
    }
