"""MLflow runtime: an MLflow pyfunc model from a model registry (optional extra).

Install with ``pip install 'backout[mlflow]'``. ``runtime.options``:

* ``uri`` (required) — ``models:/name/version`` or ``models:/name@alias``;
* ``version`` — the concrete version the URI resolved to when the release was registered
  (:func:`resolve_mlflow_uri` gives it). When present it is what gets loaded, so moving an
  alias in MLflow never changes what an immutable release serves;
* ``tracking_uri``, ``registry_uri`` — where MLflow lives (default: MLflow's own settings,
  e.g. ``MLFLOW_TRACKING_URI``).

The model's bytes come from MLflow's artifact store, not from backout's blob store, so the
pinned version (not a SHA-256) is what identifies them. MLflow models may be pickles too:
point this runtime only at registries you trust.

Inputs: one 2-D tensor ``input`` or one column per name of the model signature's input
columns (``feature_names``). Outputs: ``prediction``, or one tensor per column when the
model returns a table.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Mapping
from typing import Any

import numpy as np

from backout.errors import MlflowMissing, ModelError, ValidationError
from backout.registry.mlflow import INSTALL_HINT, MODELS_URI, import_mlflow, resolve_mlflow_uri
from backout.runtimes.base import (
    LoadContext,
    deep_sizeof,
    gather_matrix,
    pandas_frame,
)


class MlflowPredictor:
    """An MLflow pyfunc model called in-process, on the caller's thread."""

    def __init__(
        self, ref: str, model: Any, uri: str, version: str, local_dir: str, frame: Any
    ) -> None:
        self.ref = ref
        self.model = model
        self.uri = uri
        self.version = version
        self._dir = local_dir
        self._frame = frame
        schema = model.metadata.get_input_schema()
        names = schema.input_names() if schema is not None and schema.has_input_names() else None
        self.feature_names: list[str] | None = [str(n) for n in names] if names else None
        self.input_names = ["input"]
        out_schema = model.metadata.get_output_schema()
        out_names = (
            out_schema.input_names()
            if out_schema is not None and out_schema.has_input_names()
            else None
        )
        self.output_names: list[str] = [str(n) for n in out_names] if out_names else ["prediction"]
        self.classes: list[str] | None = None
        self._size = deep_sizeof(model)

    async def infer(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        x: Any = gather_matrix(self.ref, inputs, "input", self.feature_names)
        if self.feature_names is not None and self._frame is not None:
            # A column-based signature is enforced against a DataFrame's column names.
            x = self._frame(x, columns=self.feature_names)
        try:
            result = self.model.predict(x)
        except Exception as exc:
            raise ModelError(f"{self.ref} raised {type(exc).__name__}: {exc}") from exc
        if isinstance(result, Mapping):
            return {str(k): np.asarray(v) for k, v in result.items()}
        columns = getattr(result, "columns", None)
        if columns is not None:
            return {str(c): result[c].to_numpy() for c in columns}
        return {self.output_names[0]: np.asarray(result)}

    def memory_bytes(self) -> int:
        return self._size

    async def aclose(self) -> None:
        self.model = None
        shutil.rmtree(self._dir, ignore_errors=True)


def load(ctx: LoadContext) -> MlflowPredictor:
    """Resolve the release's MLflow URI to its pinned version, download it, load it."""
    try:
        mlflow = import_mlflow()
    except MlflowMissing as exc:
        raise ctx.fail("MLflow is not installed", INSTALL_HINT) from exc
    from mlflow.exceptions import MlflowException

    uri = ctx.option_str("uri")
    tracking = ctx.options.get("tracking_uri")
    registry = ctx.options.get("registry_uri")
    pinned = ctx.options.get("version")
    m = MODELS_URI.match(uri)
    if m is None:
        raise ctx.fail(
            f"runtime.options.uri is {uri!r}", "use models:/NAME/VERSION or models:/NAME@ALIAS"
        )
    if pinned is not None:
        # The version recorded at registration wins over wherever the alias points now.
        uri = f"models:/{m['name']}/{pinned}"
    try:
        resolved, version = resolve_mlflow_uri(uri, tracking_uri=tracking, registry_uri=registry)
    except ValidationError as exc:
        raise ctx.fail(str(exc), "check the model name, version or alias in MLflow") from exc
    local_dir = tempfile.mkdtemp(prefix=f"backout-mlflow-{ctx.manifest.model}-")
    try:
        # Ask the named registry where the version's files are stored, then fetch them from
        # there: passing a models:/ URI to MLflow would consult its global registry settings
        # instead of this release's.
        client = mlflow.MlflowClient(tracking_uri=tracking, registry_uri=registry)
        location = client.get_model_version_download_uri(m["name"], version)
        path = mlflow.artifacts.download_artifacts(
            artifact_uri=location, dst_path=local_dir, tracking_uri=tracking
        )
        model = mlflow.pyfunc.load_model(path)
    except MlflowException as exc:
        shutil.rmtree(local_dir, ignore_errors=True)
        raise ctx.fail(
            f"MLflow cannot load {resolved}: {exc.message}",
            "check that the version exists and was logged with a pyfunc flavour",
        ) from exc
    except BaseException:
        shutil.rmtree(local_dir, ignore_errors=True)
        raise
    return MlflowPredictor(ctx.ref, model, resolved, version, local_dir, pandas_frame())
