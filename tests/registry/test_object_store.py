"""Artifacts in S3-compatible object storage (moto's server mode) read through a host cache."""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from botocore.exceptions import ResponseStreamingError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from backout.errors import (
    ArtifactCorrupt,
    ArtifactError,
    ArtifactStoreUnavailable,
    ConfigError,
    NotFound,
    RuntimeLoadError,
)
from backout.registry.artifacts import LocalBlobStore
from backout.registry.cache import BlobCache
from backout.registry.objectstore import S3BlobStore, blobs_from_env, open_blobs
from backout.registry.releases import Registry
from backout.runtimes import load_release
from backout.store import Store
from tests.loopback import free_port, serve
from tests.registry.conftest import MakeS3Blobs
from tests.s3_server import S3Server

pytestmark = pytest.mark.databases("sqlite")


def test_a_blob_round_trips_under_its_address(s3_blobs: S3BlobStore, artifact: Path) -> None:
    digest, size = s3_blobs.put_file(artifact)
    assert digest == hashlib.sha256(artifact.read_bytes()).hexdigest()
    assert s3_blobs.key(digest) == f"releases/sha256/{digest[:2]}/{digest}"
    assert s3_blobs.exists(digest) and s3_blobs.size(digest) == size
    assert s3_blobs.verify(digest)
    assert s3_blobs.local_path(digest).read_bytes() == artifact.read_bytes()
    with s3_blobs.open(digest) as f:
        assert f.read() == artifact.read_bytes()
    s3_blobs.delete(digest)
    assert not s3_blobs.exists(digest)


def test_a_large_blob_goes_up_in_parts_and_comes_down_whole(
    s3_blobs: S3BlobStore, tmp_path: Path
) -> None:
    """20 MiB: three multipart parts of 8 MiB, each hashed as it is sent."""
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(20 << 20))
    digest, size = s3_blobs.put_file(big)
    assert size == 20 << 20
    assert hashlib.sha256(s3_blobs.local_path(digest).read_bytes()).hexdigest() == digest


def test_a_stream_is_stored_only_under_the_digest_it_hashes_to(s3_blobs: S3BlobStore) -> None:
    good = hashlib.sha256(b"weights").hexdigest()
    with pytest.raises(ArtifactCorrupt, match="nothing was stored"):
        s3_blobs.put_stream(io.BytesIO(b"weights, tampered"), digest=good)
    assert not s3_blobs.exists(good)
    assert s3_blobs.put_stream(io.BytesIO(b"weights"), digest=good) == (good, 7)
    assert s3_blobs.put_stream(io.BytesIO(b"other")) == (hashlib.sha256(b"other").hexdigest(), 5)


@pytest.mark.databases("sqlite", "postgresql")
def test_a_real_model_registers_and_loads_through_s3(
    store: Store, s3_blobs: S3BlobStore, model_file: Path
) -> None:
    registry = Registry(store, s3_blobs)
    rel = registry.register("iris", "1.0.0", [model_file], runtime="sklearn").release
    assert registry.verify(rel.ref).ok
    predictor = load_release(registry.get("iris@1.0.0").manifest, s3_blobs)
    out = asyncio.run(predictor.infer({"input": np.array([[5.1, 3.5, 1.4, 0.2]])}))
    asyncio.run(predictor.aclose())
    assert int(out["label"][0]) == 0


def test_a_corrupted_object_is_refused_and_never_cached(
    store: Store, s3_server: S3Server, s3_blobs: S3BlobStore, model_file: Path
) -> None:
    registry = Registry(store, s3_blobs)
    rel = registry.register("iris", "1.0.0", [model_file], runtime="sklearn").release
    digest = rel.manifest.artifacts[0].sha256
    s3_server.client().put_object(
        Bucket=s3_blobs.bucket, Key=s3_blobs.key(digest), Body=b"not the model"
    )
    with pytest.raises(
        ArtifactCorrupt, match=rf"object s3://.*/releases/sha256/.*{digest}.*corrupt"
    ):
        s3_blobs.local_path(digest)
    assert s3_blobs.cache.get(digest) is None
    assert not list(s3_blobs.cache.root.rglob(".incoming-*"))
    with pytest.raises(ArtifactCorrupt, match=r"iris@1\.0\.0 will not be loaded"):
        load_release(rel.manifest, s3_blobs)
    assert not s3_blobs.verify(digest)
    assert not registry.verify(rel.ref).ok
    with pytest.raises(ArtifactCorrupt), s3_blobs.open(digest) as f:
        f.read()


def test_a_corrupted_cache_file_is_fetched_again(s3_blobs: S3BlobStore, artifact: Path) -> None:
    digest, _ = s3_blobs.put_file(artifact)
    path = s3_blobs.local_path(digest)
    os.chmod(path, 0o644)
    path.write_bytes(b"bit rot")
    assert s3_blobs.local_path(digest).read_bytes() == artifact.read_bytes()


def test_a_cached_release_loads_with_the_endpoint_stopped(
    store: Store, own_s3: S3Server, make_s3_blobs: MakeS3Blobs, model_file: Path, tmp_path: Path
) -> None:
    blobs = make_s3_blobs(server=own_s3)
    registry = Registry(store, blobs)
    rel = registry.register("iris", "1.0.0", [model_file], runtime="sklearn").release
    load_release(rel.manifest, blobs)  # fills this host's cache
    own_s3.stop()
    # A fresh process on the same host: a new client, the same cache folder.
    again = S3BlobStore(blobs.bucket, "releases", endpoint=own_s3.endpoint, cache=blobs.cache)
    predictor = load_release(rel.manifest, again)
    asyncio.run(predictor.aclose())
    # What is not cached cannot be loaded, and says why in one line.
    other = make_s3_blobs(server=own_s3, bucket=blobs.bucket, cache=tmp_path / "other-host")
    with pytest.raises(ArtifactStoreUnavailable, match="cannot be reached") as exc:
        other.local_path(rel.manifest.artifacts[0].sha256)
    assert "\n" not in str(exc.value)


def test_an_endpoint_that_is_down_gives_one_clear_line(
    store: Store, make_s3_blobs: MakeS3Blobs, s3_server: S3Server, artifact: Path, tmp_path: Path
) -> None:
    down = S3BlobStore(
        "models", "releases", endpoint=f"http://127.0.0.1:{free_port()}",
        cache=BlobCache(tmp_path / "cache"),
    )  # fmt: skip
    registry = Registry(store, down)
    with pytest.raises(ArtifactStoreUnavailable) as exc:
        registry.register("iris", "1.0.0", [artifact])
    message = str(exc.value)
    assert message.startswith("artifact store s3://models/releases at http://127.0.0.1:")
    assert "cannot be reached" in message and "--s3-endpoint" in message and "\n" not in message
    assert registry.list("iris") == []  # the failed upload left the store as it was
    with pytest.raises(ArtifactStoreUnavailable, match="cannot be reached"):
        down.exists("0" * 64)


def test_a_missing_bucket_is_named_and_init_creates_it(
    make_s3_blobs: MakeS3Blobs, artifact: Path
) -> None:
    blobs = make_s3_blobs(bucket="no-such-bucket-here")
    with pytest.raises(
        ArtifactStoreUnavailable, match="bucket 'no-such-bucket-here' does not exist"
    ):
        blobs.put_file(artifact)
    assert blobs.ensure() is True
    assert blobs.ensure() is False
    digest, _ = blobs.put_file(artifact)
    assert blobs.exists(digest)


def test_a_missing_object_is_not_found(s3_blobs: S3BlobStore) -> None:
    assert not s3_blobs.exists("ab" * 32)
    with pytest.raises(NotFound):
        s3_blobs.local_path("ab" * 32)


def _garbage_app(status: int, body: str) -> Starlette:
    async def anything(request: Request) -> Response:
        return PlainTextResponse(body, status_code=status)

    methods = ["GET", "HEAD", "PUT", "POST", "DELETE"]
    return Starlette(routes=[Route("/{path:path}", anything, methods=methods)])


@pytest.mark.parametrize(
    ("status", "body"), [(200, "hello, I am not S3"), (500, "<html>internal error</html>")]
)
def test_an_endpoint_that_answers_garbage_gives_one_clear_line(
    store: Store, s3_env: None, tmp_path: Path, artifact: Path, status: int, body: str
) -> None:
    with serve(_garbage_app(status, body)) as url:
        blobs = S3BlobStore("models", "", endpoint=url, cache=BlobCache(tmp_path / "cache"))
        registry = Registry(store, blobs)
        with pytest.raises(ArtifactStoreUnavailable) as exc:
            registry.register("iris", "1.0.0", [artifact])
        with pytest.raises((ArtifactStoreUnavailable, ArtifactCorrupt, RuntimeLoadError)):
            blobs.local_path(hashlib.sha256(artifact.read_bytes()).hexdigest())
        with pytest.raises(ArtifactStoreUnavailable, match=r"not answering as S3|failed"):
            blobs.ensure()  # what `backout init` runs
    assert str(exc.value).startswith(f"artifact store s3://models at {url}")
    assert "\n" not in str(exc.value)
    assert registry.list("iris") == []


def test_a_location_picks_the_store(tmp_path: Path) -> None:
    assert isinstance(open_blobs(tmp_path / "artifacts"), LocalBlobStore)
    s3 = open_blobs("s3://models/team/fraud", endpoint="http://127.0.0.1:9", cache_dir=tmp_path)
    assert isinstance(s3, S3BlobStore) and s3.url == "s3://models/team/fraud"
    with pytest.raises(ConfigError, match="not supported"):
        open_blobs("gs://models")
    with pytest.raises(ConfigError, match="names no bucket"):
        open_blobs("s3:///releases")


def test_a_file_that_changes_during_its_upload_is_not_stored(
    s3_blobs: S3BlobStore, artifact: Path
) -> None:
    send = s3_blobs.client.upload_file

    def while_written(filename: str, *args: object, **kwargs: object) -> None:
        with open(filename, "ab") as f:
            f.write(b"more weights")
        send(filename, *args, **kwargs)

    s3_blobs.client.upload_file = while_written  # type: ignore[method-assign]
    original = hashlib.sha256(artifact.read_bytes()).hexdigest()
    with pytest.raises(ArtifactError, match="changed while it was being uploaded"):
        s3_blobs.put_file(artifact)
    assert not s3_blobs.exists(original)


def test_the_environment_names_the_store_for_gateway_workers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BACKOUT_ARTIFACTS", "s3://models/p")
    monkeypatch.setenv("BACKOUT_S3_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setenv("BACKOUT_ARTIFACT_CACHE", str(tmp_path / "c"))
    monkeypatch.setenv("BACKOUT_ARTIFACT_CACHE_MB", "64")
    blobs = blobs_from_env(tmp_path)
    assert isinstance(blobs, S3BlobStore) and blobs.endpoint == "http://127.0.0.1:9"
    assert blobs.cache.root == tmp_path / "c" and blobs.cache.max_bytes == 64 << 20
    monkeypatch.setenv("BACKOUT_ARTIFACT_CACHE_MB", "lots")
    with pytest.raises(ConfigError, match="BACKOUT_ARTIFACT_CACHE_MB is 'lots'"):
        blobs_from_env(tmp_path)
    monkeypatch.delenv("BACKOUT_ARTIFACTS")
    assert isinstance(blobs_from_env(tmp_path), LocalBlobStore)


class _BreaksAfter:
    """A response body whose connection is lost after ``limit`` bytes."""

    def __init__(self, body: Any, limit: int) -> None:
        self.body, self.limit, self.read_so_far = body, limit, 0

    def read(self, amt: int) -> bytes:
        if self.read_so_far >= self.limit:
            raise ResponseStreamingError(error="connection reset by peer")
        data = bytes(self.body.read(amt))
        self.read_so_far += len(data)
        return data

    def close(self) -> None:
        self.body.close()


def test_a_download_that_breaks_resumes_where_it_stopped(s3_blobs: S3BlobStore) -> None:
    data = os.urandom(3 << 20)
    digest, _ = s3_blobs.put_bytes(data)
    real = s3_blobs.client.get_object
    ranges: list[str | None] = []

    def get_object(**kwargs: Any) -> Any:
        ranges.append(kwargs.get("Range"))
        response = real(**kwargs)
        if len(ranges) == 1:
            response["Body"] = _BreaksAfter(response["Body"], 1 << 20)
        return response

    s3_blobs.client.get_object = get_object
    assert s3_blobs.local_path(digest).read_bytes() == data
    assert ranges == [None, f"bytes={1 << 20}-"]
