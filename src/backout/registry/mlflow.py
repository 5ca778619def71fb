"""MLflow model URIs: resolving ``models:/name@alias`` to the concrete version at registration.

A release of the mlflow runtime records the version its URI resolved to, so moving an
alias in MLflow never changes what an immutable release serves. MLflow is an optional
extra; it is imported only when a URI is resolved or a model loaded.
"""

from __future__ import annotations

import re
from typing import Any

from backout.errors import MlflowMissing, ValidationError

INSTALL_HINT = "pip install 'backout[mlflow]'"
# models:/name/version or models:/name@alias; names may hold '/' only in Unity Catalog,
# which this runtime does not target.
MODELS_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:/(?P<version>[^/@]+)|@(?P<alias>[^/@]+))$")


def import_mlflow() -> Any:
    try:
        import mlflow
        import mlflow.pyfunc
    except ImportError as exc:
        raise MlflowMissing(
            f"the mlflow runtime needs MLflow, which is not installed: {INSTALL_HINT}"
        ) from exc
    return mlflow


def resolve_mlflow_uri(
    uri: str, *, tracking_uri: str | None = None, registry_uri: str | None = None
) -> tuple[str, str]:
    """``models:/name@alias`` or ``models:/name/version`` → ``("models:/name/N", "N")``.

    For registration: record the concrete version in the release's ``runtime.options`` so
    the release stays the same bytes when the alias moves. Raises
    :class:`~backout.errors.ValidationError` for a malformed URI or an unknown model,
    version or alias.
    """
    m = MODELS_URI.match(uri)
    if m is None:
        raise ValidationError(
            f"MLflow URI {uri!r} is not models:/NAME/VERSION or models:/NAME@ALIAS"
        )
    mlflow = import_mlflow()
    from mlflow.exceptions import MlflowException

    client = mlflow.MlflowClient(tracking_uri=tracking_uri, registry_uri=registry_uri)
    name = m["name"]
    try:
        if m["alias"] is not None:
            mv = client.get_model_version_by_alias(name, m["alias"])
        else:
            if not m["version"].isdigit():
                raise ValidationError(
                    f"MLflow URI {uri!r}: version {m['version']!r} is not a number; "
                    "use an alias (models:/NAME@ALIAS) for a moving reference"
                )
            mv = client.get_model_version(name, m["version"])
    except MlflowException as exc:
        raise ValidationError(f"MLflow URI {uri!r} does not resolve: {exc.message}") from exc
    version = str(mv.version)
    return f"models:/{name}/{version}", version
