"""scikit-learn runtime: an estimator saved with joblib or pickle.

**Security.** joblib and pickle files run arbitrary code when they are loaded. This runtime
therefore loads only bytes whose SHA-256 has just been checked against the digest recorded
when the release was registered (:func:`backout.runtimes.base.load_release` verifies every
artifact first, and the file is hashed once more in memory right before unpickling, so the
bytes checked are the bytes run). Register only files you would be willing to execute.

Which artifact: ``runtime.options["file"]``, or the release's only artifact.
Inputs: one 2-D tensor named ``input``, or one column per name in ``feature_names``
(the estimator's ``feature_names_in_``). Outputs: a classifier gives ``label`` (the model's
own labels) and, when it has ``predict_proba``, ``probabilities`` (float32, one column per
class); a regressor gives ``prediction``. ``runtime.options["outputs"]`` may restrict a
classifier to ``["label"]`` to skip the probability pass.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from typing import Any

import joblib
import numpy as np

from backout.errors import ModelError, ValidationError
from backout.runtimes.base import (
    LoadContext,
    deep_sizeof,
    gather_matrix,
    pandas_frame,
)

INPUT = "input"


class SklearnPredictor:
    """A scikit-learn estimator called in-process, on the caller's thread."""

    def __init__(self, ref: str, model: Any, outputs: list[str] | None = None) -> None:
        self.ref = ref
        self.model = model
        self.input_names = [INPUT]
        names = getattr(model, "feature_names_in_", None)
        self.feature_names: list[str] | None = (
            [str(n) for n in names] if names is not None else None
        )
        self.n_features: int | None = getattr(model, "n_features_in_", None)
        self._frame: Any = None
        if self.feature_names is not None:
            # Fitted on a DataFrame: pandas is needed to give it one back, so that column
            # selection by name (ColumnTransformer) works and no feature-name warning fires.
            self._frame = pandas_frame()
            if self._frame is None:
                raise ModuleNotFoundError("pandas")
        self.is_classifier = hasattr(model, "classes_")
        if self.is_classifier:
            self.classes: list[str] | None = [str(c) for c in model.classes_]
            available = ["label"] + (["probabilities"] if hasattr(model, "predict_proba") else [])
        else:
            self.classes = None
            available = ["prediction"]
        if outputs is not None:
            unknown = [o for o in outputs if o not in available]
            if unknown:
                raise ValueError(f"outputs {unknown} are not produced; choose from {available}")
            available = outputs
        self.output_names = available
        self._want_label = "label" in available
        self._want_proba = "probabilities" in available
        self._size = deep_sizeof(model)

    def _matrix(self, inputs: Mapping[str, np.ndarray]) -> Any:
        names = self.feature_names
        if self._frame is not None and names is not None:
            if INPUT not in inputs and all(f in inputs for f in names):
                # Columns keep their own dtypes (strings for a OneHotEncoder, numbers else).
                return self._frame({f: inputs[f] for f in names}, copy=False)
            x = gather_matrix(self.ref, inputs, INPUT, names)
            self._check_width(x)
            return self._frame(x, columns=names, copy=False)
        x = gather_matrix(self.ref, inputs, INPUT, names)
        self._check_width(x)
        return x

    def _check_width(self, x: np.ndarray) -> None:
        # sklearn's own message ("X has 3 features, but ... is expecting 4") names no
        # release; this check is one comparison and gives the gateway a 422 instead of a 500.
        if x.ndim != 2 or (self.n_features is not None and x.shape[1] != self.n_features):
            raise ValidationError(
                f"{self.ref} takes a 2-D input of shape [batch, {self.n_features}]; "
                f"got shape {list(x.shape)}"
            )

    async def infer(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        x = self._matrix(inputs)
        try:
            if not self.is_classifier:
                return {"prediction": np.asarray(self.model.predict(x), dtype=np.float64)}
            out: dict[str, np.ndarray] = {}
            # predict and argmax(predict_proba) can disagree (e.g. SVC), so both are called.
            if self._want_label:
                out["label"] = np.asarray(self.model.predict(x))
            if self._want_proba:
                out["probabilities"] = np.asarray(self.model.predict_proba(x), dtype=np.float32)
            return out
        except Exception as exc:
            if self._frame is None and isinstance(x, np.ndarray) and x.dtype.kind in "OUSV":
                # An estimator fitted on a numeric array was sent strings (a BYTES tensor):
                # the caller's error (422), not a failure of the release.
                raise ValidationError(
                    f"{self.ref} takes numbers but was sent strings ({type(exc).__name__}: "
                    f"{exc}): send a numeric datatype such as FP32 or FP64"
                ) from exc
            raise ModelError(f"{self.ref} raised {type(exc).__name__}: {exc}") from exc

    def memory_bytes(self) -> int:
        return self._size

    async def aclose(self) -> None:
        self.model = None


def load(ctx: LoadContext) -> SklearnPredictor:
    """Unpickle the release's estimator (after verification) and wrap it."""
    name, _ = ctx.single_file()
    data = ctx.read_verified(name)
    try:
        model = joblib.load(io.BytesIO(data))
    except (ModuleNotFoundError, AttributeError) as exc:
        raise ctx.fail(
            f"{name!r} needs code this gateway lacks ({exc})",
            "install the same scikit-learn (and any custom modules) the model was saved with",
        ) from exc
    except Exception as exc:
        # Bytes that are no pickle raise whatever their first bytes lead joblib into:
        # UnpicklingError, EOFError, zlib.error for a false compression header, ValueError…
        raise ctx.fail(
            f"{name!r} is not a joblib or pickle file ({type(exc).__name__}: {exc})",
            "save the estimator with joblib.dump(model, path) and register that file",
        ) from exc
    if not hasattr(model, "predict"):
        raise ctx.fail(
            f"{name!r} holds a {type(model).__name__}, which has no predict method",
            "register a fitted scikit-learn estimator or pipeline",
        )
    outputs = ctx.options.get("outputs")
    if outputs is not None and not (
        isinstance(outputs, list) and all(isinstance(o, str) for o in outputs)
    ):
        raise ctx.fail(f"runtime.options.outputs is {outputs!r}", "give a list of output names")
    try:
        return SklearnPredictor(ctx.ref, model, outputs)
    except ModuleNotFoundError as exc:
        raise ctx.fail(
            "the estimator was fitted on a pandas DataFrame and pandas is not installed",
            "pip install pandas in the gateway's environment",
        ) from exc
    except ValueError as exc:
        raise ctx.fail(str(exc), "fix runtime.options.outputs") from exc
