"""ONNX runtime: a graph run by onnxruntime on the CPU.

The gateway runs one worker process per core, so each session uses one intra-op and one
inter-op thread: more threads would only fight the other workers for the same cores.
Inputs and outputs keep the graph's own names; inputs are cast to the graph's declared
dtypes. A ``seq(map(...))`` output (skl2onnx's ZipMap of class probabilities) becomes a
2-D float32 tensor with one column per class, in class order; converting with
``options={"zipmap": False}`` avoids that per-row conversion altogether.

Which artifact: ``runtime.options["file"]``, or the release's only artifact. Optional
``runtime.options["classes"]`` (labels in probability-column order) and
``runtime.options["feature_names"]`` (to accept one column per field for a single 2-D input).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import onnxruntime as ort

from backout.errors import ModelError, ValidationError
from backout.runtimes.base import LoadContext, gather_matrix
from backout.runtimes.tensors import cast_input

# onnxruntime's type strings for tensor inputs → numpy dtypes.
_DTYPES: dict[str, np.dtype[Any]] = {
    "tensor(float)": np.dtype(np.float32),
    "tensor(double)": np.dtype(np.float64),
    "tensor(float16)": np.dtype(np.float16),
    "tensor(int8)": np.dtype(np.int8),
    "tensor(int16)": np.dtype(np.int16),
    "tensor(int32)": np.dtype(np.int32),
    "tensor(int64)": np.dtype(np.int64),
    "tensor(uint8)": np.dtype(np.uint8),
    "tensor(uint16)": np.dtype(np.uint16),
    "tensor(uint32)": np.dtype(np.uint32),
    "tensor(uint64)": np.dtype(np.uint64),
    "tensor(bool)": np.dtype(np.bool_),
    "tensor(string)": np.dtype(object),
}


class _Input:
    __slots__ = ("dims", "dtype", "name")

    def __init__(self, name: str, dtype: np.dtype[Any], dims: list[int | None]) -> None:
        self.name = name
        self.dtype = dtype
        self.dims = dims


class OnnxPredictor:
    """An onnxruntime session called in-process, on the caller's thread."""

    def __init__(
        self,
        ref: str,
        session: ort.InferenceSession,
        model_bytes: int,
        classes: list[str] | None,
        feature_names: list[str] | None,
    ) -> None:
        self.ref = ref
        self.session = session
        self._inputs = [
            _Input(
                i.name,
                _dtype_of(i.type, i.name),
                [d if isinstance(d, int) else None for d in i.shape],
            )
            for i in session.get_inputs()
        ]
        self.input_names = [i.name for i in self._inputs]
        outs = session.get_outputs()
        self.output_names = [o.name for o in outs]
        self._zipmaps = {o.name for o in outs if o.type.startswith("seq(map(")}
        self.classes = classes
        self.feature_names = feature_names
        # Weights (initializers) dominate an ONNX model's memory and are held by the session.
        self._size = model_bytes

    def _feeds(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        if len(self._inputs) == 1:
            spec = self._inputs[0]
            arrays = {spec.name: gather_matrix(self.ref, inputs, spec.name, self.feature_names)}
        else:
            missing = [i.name for i in self._inputs if i.name not in inputs]
            if missing:
                raise ValidationError(
                    f"{self.ref} needs the inputs {self.input_names}; missing: {missing}"
                )
            arrays = dict(inputs)
        feeds: dict[str, np.ndarray] = {}
        for spec in self._inputs:
            x = arrays[spec.name]
            if x.ndim != len(spec.dims) or any(
                d is not None and d != n for d, n in zip(spec.dims, x.shape, strict=True)
            ):
                raise ValidationError(
                    f"{self.ref} input {spec.name!r} has shape "
                    f"{['batch' if d is None else d for d in spec.dims]}; got {list(x.shape)}"
                )
            feeds[spec.name] = cast_input(self.ref, spec.name, x, spec.dtype)
        return feeds

    async def infer(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        feeds = self._feeds(inputs)
        try:
            results = self.session.run(self.output_names, feeds)
        except Exception as exc:
            raise ModelError(f"{self.ref} raised {type(exc).__name__}: {exc}") from exc
        out: dict[str, np.ndarray] = {}
        for name, value in zip(self.output_names, results, strict=True):
            out[name] = self._zipmap(value) if name in self._zipmaps else np.asarray(value)
        return out

    def _zipmap(self, rows: list[dict[Any, float]]) -> np.ndarray:
        # A list of {class: probability} per row → [batch, classes] in class order.
        if not rows:
            return np.zeros((0, len(self.classes or ())), dtype=np.float32)
        keys = sorted(rows[0])
        if self.classes is None:
            self.classes = [str(k) for k in keys]
        return np.array([[r[k] for k in keys] for r in rows], dtype=np.float32)

    def memory_bytes(self) -> int:
        return self._size

    async def aclose(self) -> None:
        # onnxruntime frees the session's memory when the last reference goes.
        del self.session


def _dtype_of(type_str: str, name: str) -> np.dtype[Any]:
    dtype = _DTYPES.get(type_str)
    if dtype is None:
        raise ValueError(f"graph input {name!r} has type {type_str}, which is not supported")
    return dtype


def _str_list(ctx: LoadContext, key: str) -> list[str] | None:
    value = ctx.options.get(key)
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str | int) for v in value):
        raise ctx.fail(f"runtime.options.{key} is {value!r}", "give a list of strings")
    return [str(v) for v in value]


def load(ctx: LoadContext) -> OnnxPredictor:
    """Open an onnxruntime CPU session on the release's graph."""
    name, path = ctx.single_file()
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    try:
        session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise ctx.fail(
            f"onnxruntime {ort.__version__} cannot open {name!r} ({type(exc).__name__}: {exc})",
            "export the model to an ONNX opset this onnxruntime supports and register it again",
        ) from exc
    try:
        return OnnxPredictor(
            ctx.ref,
            session,
            ctx.artifacts[name].size,
            _str_list(ctx, "classes"),
            _str_list(ctx, "feature_names"),
        )
    except ValueError as exc:
        raise ctx.fail(
            str(exc), "give the graph tensor inputs of numeric, bool or string type"
        ) from exc
