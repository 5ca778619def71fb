"""Shared fixtures: a store on each database, a registry, small artifact files."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from backout.registry.artifacts import LocalBlobStore
from backout.registry.releases import Registry
from backout.store import Store, open_store
from tests.postgres_server import PostgresServer


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """One PostgreSQL server for the whole run. If it cannot start, the tests fail and say why."""
    server = PostgresServer().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty store URL on each database backout supports."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store.db'}"
    server: PostgresServer = request.getfixturevalue("postgres")
    return server.create_database()


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    s = open_store(store_url)
    try:
        yield s
    finally:
        s.dispose()


@pytest.fixture
def blobs(tmp_path: Path) -> LocalBlobStore:
    return LocalBlobStore(tmp_path / "artifacts")


@pytest.fixture
def registry(store: Store, blobs: LocalBlobStore) -> Registry:
    return Registry(store, blobs)


@pytest.fixture
def artifact(tmp_path: Path) -> Path:
    """A small model file."""
    p = tmp_path / "model.bin"
    p.write_bytes(b"model weights v1\n" * 100)
    return p


@pytest.fixture(scope="session")
def model_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real model file: a small fitted scikit-learn classifier saved with joblib."""
    import joblib
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    x, y = load_iris(return_X_y=True)
    p = tmp_path_factory.mktemp("model") / "model.bin"
    joblib.dump(LogisticRegression(max_iter=500).fit(x, y), p)
    return p
