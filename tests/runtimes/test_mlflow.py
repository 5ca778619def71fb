"""MLflow runtime: a tiny sklearn model logged to a local SQLite registry, loaded by URI.

MLflow is an optional extra (``backout[mlflow]``). It is not imported at module level: its
import emits warnings that the suite turns into errors during collection.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from backout.errors import RuntimeLoadError, ValidationError
from backout.registry.artifacts import LocalBlobStore
from backout.registry.manifest import RuntimeKind
from backout.runtimes import load_release
from backout.store import Store
from tests.runtimes.conftest import MakeRelease, run

HAS_MLFLOW = importlib.util.find_spec("mlflow") is not None and (
    importlib.util.find_spec("pandas") is not None
)
needs_mlflow = pytest.mark.skipif(
    not HAS_MLFLOW, reason="MLflow is not installed: pip install 'backout[mlflow]' pandas"
)

pytestmark = [
    # mlflow 3 infers pydantic schemas at import and warns (in ANSI colour, hence the
    # leading .*) about its own Any hints.
    pytest.mark.filterwarnings("ignore:.*Any type hint is inferred:UserWarning"),
    # mlflow's SQLAlchemy tracking store uses the deprecated noload strategy.
    pytest.mark.filterwarnings("ignore:The ``noload`` loader strategy:DeprecationWarning"),
    # mlflow's sklearn flavour warns that cloudpickle runs code when loaded; we know (the
    # runtime's docstring says so) and skops is not installed.
    pytest.mark.filterwarnings("ignore:.*pickle.*:UserWarning:mlflow.*"),
    # mlflow's own deprecations of internal APIs it still calls (e.g. in the SQL store).
    pytest.mark.filterwarnings("ignore::FutureWarning:mlflow.*"),
]


@pytest.fixture(scope="module")
def mlflow_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Log an iris classifier as version 1 of ``iris`` and point alias ``champion`` at it."""
    import mlflow
    import mlflow.sklearn
    from sklearn.datasets import load_iris

    root = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    x, y = load_iris(return_X_y=True)
    model = LogisticRegression(max_iter=500).fit(x, y)
    client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
    exp = client.create_experiment("iris", artifact_location=(root / "artifacts").as_uri())
    # log_model reads the tracking and registry URIs from MLflow's environment variables.
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        mp.setenv("MLFLOW_REGISTRY_URI", uri)
        with mlflow.start_run(experiment_id=exp):
            mlflow.sklearn.log_model(
                model,
                name="model",
                registered_model_name="iris",
                serialization_format="cloudpickle",
                # Given explicitly so MLflow does not spend seconds inferring requirements.
                pip_requirements=["scikit-learn"],
            )
    client.set_registered_model_alias("iris", "champion", "1")
    yield {"uri": uri, "model": model, "x": x}


@needs_mlflow
def test_alias_resolves_to_concrete_version(mlflow_registry: dict[str, Any]) -> None:
    from backout.runtimes.mlflow import resolve_mlflow_uri

    uri = mlflow_registry["uri"]
    assert resolve_mlflow_uri("models:/iris@champion", registry_uri=uri, tracking_uri=uri) == (
        "models:/iris/1",
        "1",
    )


@needs_mlflow
def test_unknown_alias_is_a_validation_error(mlflow_registry: dict[str, Any]) -> None:
    from backout.runtimes.mlflow import resolve_mlflow_uri

    uri = mlflow_registry["uri"]
    with pytest.raises(ValidationError, match=r"models:/iris@nope.*does not resolve"):
        resolve_mlflow_uri("models:/iris@nope", registry_uri=uri, tracking_uri=uri)


def test_malformed_mlflow_uri_is_a_validation_error() -> None:
    from backout.runtimes.mlflow import resolve_mlflow_uri

    with pytest.raises(ValidationError, match=r"models:/NAME/VERSION or models:/NAME@ALIAS"):
        resolve_mlflow_uri("runs:/abc/model")


@needs_mlflow
def test_load_by_alias_predicts_like_the_logged_model(
    mlflow_registry: dict[str, Any],
    make_release: MakeRelease,
    blobs: LocalBlobStore,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The registry named in runtime.options is used, not MLflow's environment."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    uri = mlflow_registry["uri"]
    options = {"uri": "models:/iris@champion", "tracking_uri": uri, "registry_uri": uri}
    predictor = load_release(make_release(RuntimeKind.MLFLOW, {}, options), blobs)
    x = mlflow_registry["x"][:5]
    out = run(predictor.infer({"input": x}))
    np.testing.assert_array_equal(out["prediction"], mlflow_registry["model"].predict(x))
    assert predictor.memory_bytes() > 0
    run(predictor.aclose())


@needs_mlflow
def test_recorded_version_wins_over_a_moved_alias(
    mlflow_registry: dict[str, Any], make_release: MakeRelease, blobs: LocalBlobStore
) -> None:
    uri = mlflow_registry["uri"]
    options = {
        "uri": "models:/iris@champion",
        "version": "7",  # what registration recorded; it does not exist in this registry
        "tracking_uri": uri,
        "registry_uri": uri,
    }
    with pytest.raises(RuntimeLoadError, match=r"models:/iris/7"):
        load_release(make_release(RuntimeKind.MLFLOW, {}, options), blobs)


def test_missing_mlflow_says_how_to_install(
    make_release: MakeRelease, blobs: LocalBlobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sys

    # None in sys.modules makes `import mlflow` raise ImportError, as if not installed.
    monkeypatch.setitem(sys.modules, "mlflow", None)
    monkeypatch.setitem(sys.modules, "mlflow.pyfunc", None)
    manifest = make_release(RuntimeKind.MLFLOW, {}, {"uri": "models:/iris/1"})
    with pytest.raises(RuntimeLoadError, match=r"pip install 'backout\[mlflow\]'"):
        load_release(manifest, blobs)


@needs_mlflow
@pytest.mark.databases("sqlite")
def test_registering_an_alias_records_the_concrete_version(
    mlflow_registry: dict[str, Any], store: Store, blobs: LocalBlobStore
) -> None:
    """A release pins what the alias meant when it was registered, and never changes."""
    from backout.registry.manifest import Runtime
    from backout.registry.releases import Registry

    uri = mlflow_registry["uri"]
    reg = Registry(store, blobs)
    options = {"uri": "models:/iris@champion", "tracking_uri": uri, "registry_uri": uri}
    rel = reg.register(
        "iris", "1.0.0", [], runtime=Runtime(kind=RuntimeKind.MLFLOW, options=options), actor="t"
    ).release
    assert rel.manifest.runtime.options["version"] == "1"
    assert rel.manifest.runtime.options["resolved_uri"] == "models:/iris/1"
