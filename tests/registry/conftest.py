"""Fixtures for artifacts in object storage: a moto S3 endpoint and stores on it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from backout.registry.cache import BlobCache
from backout.registry.objectstore import S3BlobStore
from tests.s3_server import CREDENTIALS, S3Server

MakeS3Blobs = Callable[..., S3BlobStore]


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """One moto S3 server for the session (tests keep apart by bucket)."""
    server = S3Server().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def s3_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Credentials moto accepts, and nothing from the host's own AWS set-up."""
    for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_SESSION_TOKEN", "BACKOUT_S3_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    for name, value in CREDENTIALS.items():
        monkeypatch.setenv(name, value)


@pytest.fixture
def own_s3() -> Iterator[S3Server]:
    """A moto server of this test's own, which the test may stop."""
    server = S3Server().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def make_s3_blobs(tmp_path: Path, s3_env: None, s3_server: S3Server) -> MakeS3Blobs:
    """``make(server=..., bucket=..., cache=...)``: an S3BlobStore under the prefix ``releases``."""

    def make(
        server: S3Server | None = None,
        bucket: str | None = None,
        cache: Path | None = None,
        max_bytes: int = 1 << 30,
    ) -> S3BlobStore:
        server = server or s3_server
        return S3BlobStore(
            bucket or server.new_bucket(),
            "releases",
            endpoint=server.endpoint,
            cache=BlobCache(cache or tmp_path / "cache", max_bytes),
        )

    return make


@pytest.fixture
def s3_blobs(make_s3_blobs: MakeS3Blobs) -> S3BlobStore:
    """An S3BlobStore on a new bucket of the session's server."""
    return make_s3_blobs()
