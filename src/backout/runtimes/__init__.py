"""Runtimes: how a release's artifacts become a :class:`Predictor` the gateway can call.

One module per runtime kind (``sklearn``, ``onnx``, ``python``, ``mlflow``, ``http``), each
imported only when a release of its kind is loaded; :func:`load_release` verifies the
artifacts and dispatches. :mod:`backout.runtimes.tensors` converts JSON bodies to tensors.
"""

from backout.errors import ModelError, UpstreamError, UpstreamTimeout
from backout.runtimes.base import (
    DEFAULT_LOAD_TIMEOUT_S,
    LOADERS,
    LoadContext,
    Loader,
    Predictor,
    load_release,
    verify_artifacts,
)

__all__ = [
    "DEFAULT_LOAD_TIMEOUT_S",
    "LOADERS",
    "LoadContext",
    "Loader",
    "ModelError",
    "Predictor",
    "UpstreamError",
    "UpstreamTimeout",
    "load_release",
    "verify_artifacts",
]
