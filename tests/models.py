"""Small real scikit-learn models for tests, trained on the iris data set sklearn ships."""

from __future__ import annotations

from pathlib import Path

import joblib
import numpy as np
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

from backout.proof.contracts import infer_sklearn_contract
from backout.registry.manifest import Runtime, RuntimeKind
from backout.registry.releases import Registry


def iris() -> tuple[np.ndarray, np.ndarray]:
    x, y = load_iris(return_X_y=True)
    return np.asarray(x, dtype=np.float64), np.asarray(y)


def register_iris(registry: Registry, folder: Path, version: str, *, c: float = 1.0) -> None:
    """Train a LogisticRegression and register it as ``iris@version`` with its contract."""
    x, y = iris()
    model = LogisticRegression(C=c, max_iter=500).fit(x, y)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"iris-{version}.joblib"
    joblib.dump(model, path)
    registry.register(
        "iris",
        version,
        [path],
        runtime=Runtime(kind=RuntimeKind.SKLEARN),
        contract=infer_sklearn_contract(model),
        actor="test",
    )
