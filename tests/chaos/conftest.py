"""The chaos tests' world: a SQLite store with iris@1.0.0 live and known-good and 1.1.0
registered, its artifact folder, and ``backout serve`` processes started on it (and stopped
by their id when the test ends)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from backout.control.controller import Controller
from backout.registry.artifacts import LocalBlobStore
from backout.registry.releases import Registry
from backout.store import open_store
from tests.chaos.served import Served, backout
from tests.models import register_iris


@dataclass
class Site:
    """A store on disk, its artifacts, and the ``backout serve`` processes started on it."""

    store_url: str
    db: Path  # the SQLite file (not there on PostgreSQL)
    artifacts: Path
    tmp: Path
    served: list[Served] = field(default_factory=list)

    def serve(self, **kw: bool | int) -> Served:
        s = Served(self.store_url, self.artifacts, self.tmp / f"serve-{len(self.served)}.log",
                   **kw)  # type: ignore[arg-type]  # fmt: skip
        self.served.append(s)
        return s

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        """The CLI on this site's store, in a process of its own."""
        return backout(self.store_url, self.artifacts, *args)


@contextmanager
def make_site(url: str, tmp_path: Path) -> Iterator[Site]:
    """A store at ``url`` with iris@1.0.0 live and known-good and 1.1.0 registered; the
    ``backout serve`` processes started on it are stopped when the block ends."""
    db = tmp_path / "store.db"
    store = open_store(url, create=True)
    registry = Registry(store, LocalBlobStore(tmp_path / "artifacts"))
    for version in ("1.0.0", "1.1.0"):
        register_iris(registry, tmp_path / "models", version)
    Controller(store, registry, actor="test").deploy("iris", "1.0.0", actor="test")
    store.dispose()
    s = Site(url, db, tmp_path / "artifacts", tmp_path)
    try:
        yield s
    finally:
        for served in s.served:
            served.stop()


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    """A SQLite store with iris@1.0.0 live and known-good and 1.1.0 registered."""
    with make_site(f"sqlite:///{tmp_path / 'store.db'}", tmp_path) as s:
        yield s
