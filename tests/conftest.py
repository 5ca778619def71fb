"""Shared fixtures: a store on each database, a registry, small artifact files.

Every test that needs a store (through ``store_url``, ``new_store_url``, ``store`` or
``registry``) runs once per database: ``[sqlite]``, and ``[postgresql]`` on a throwaway
server, marked ``postgres`` (``-m "not postgres"`` leaves it out). A module or a test that
should run on fewer says so with ``@pytest.mark.databases("sqlite")``; the mark closest to
the test wins, so a module marked SQLite-only can still send one test to both.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from backout.registry.artifacts import LocalBlobStore
from backout.registry.releases import Registry
from backout.store import Store, open_store
from tests.postgres_server import PostgresServer

DATABASES = ("sqlite", "postgresql")

NewStoreUrl = Callable[[], str]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Run each test that needs a store on the databases its ``databases`` mark names."""
    if "database" not in metafunc.fixturenames:
        return
    mark = metafunc.definition.get_closest_marker("databases")
    names = mark.args if mark is not None else DATABASES
    unknown = set(names) - set(DATABASES)
    if unknown:
        raise pytest.UsageError(f"databases({', '.join(sorted(unknown))}): choose from {DATABASES}")
    params = [
        pytest.param(n, marks=pytest.mark.postgres if n == "postgresql" else ()) for n in names
    ]
    metafunc.parametrize("database", params, indirect=True)


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """One PostgreSQL server for the whole run. If it cannot start, the tests fail and say why."""
    server = PostgresServer().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def database(request: pytest.FixtureRequest) -> str:
    """The database this test runs on: ``sqlite`` or ``postgresql`` (see the module docstring)."""
    return str(request.param)


@pytest.fixture
def new_store_url(
    database: str, request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[NewStoreUrl]:
    """The store factory: each call gives the URL of a new, empty store on this test's database.

    Safe to call from several threads (the crash tests build their stores in parallel). The
    PostgreSQL databases are dropped when the test ends.
    """
    if database == "sqlite":
        names = (f"store-{i}.db" if i else "store.db" for i in itertools.count())
        yield lambda: f"sqlite:///{tmp_path / next(names)}"
        return
    server: PostgresServer = request.getfixturevalue("postgres")
    created: list[str] = []

    def new() -> str:
        created.append(server.create_database())
        return created[-1]

    yield new
    for url in created:
        server.drop_database(url)


@pytest.fixture
def store_url(new_store_url: NewStoreUrl) -> str:
    """A fresh, empty store URL on this test's database."""
    return new_store_url()


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    """A migrated store on this test's database, disposed of afterwards."""
    s = open_store(store_url, create=True)
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
