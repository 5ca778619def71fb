"""The content-addressed blob store."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from backout.errors import ArtifactCorrupt, ArtifactError
from backout.registry.artifacts import LocalBlobStore, MemoryBlobStore, hash_file


def test_put_file_stores_under_its_sha256(tmp_path: Path, artifact: Path) -> None:
    store = LocalBlobStore(tmp_path / "blobs")
    digest, size = store.put_file(artifact)
    assert digest == hashlib.sha256(artifact.read_bytes()).hexdigest()
    assert size == artifact.stat().st_size
    assert store.blob_path(digest).read_bytes() == artifact.read_bytes()


def test_the_same_bytes_are_stored_once(tmp_path: Path, artifact: Path) -> None:
    store = LocalBlobStore(tmp_path / "blobs")
    copy = tmp_path / "copy.bin"
    copy.write_bytes(artifact.read_bytes())
    d1, _ = store.put_file(artifact)
    d2, _ = store.put_file(copy)
    assert d1 == d2
    assert len(list((tmp_path / "blobs").rglob("*"))) == 3  # sha256/, ab/, the blob


def test_no_temporary_file_is_left_behind(tmp_path: Path, artifact: Path) -> None:
    store = LocalBlobStore(tmp_path / "blobs")
    store.put_file(artifact)
    assert not list((tmp_path / "blobs").rglob(".incoming-*"))


def test_a_flipped_byte_fails_verification_and_reads(tmp_path: Path, artifact: Path) -> None:
    store = LocalBlobStore(tmp_path / "blobs")
    digest, _ = store.put_file(artifact)
    path = store.blob_path(digest)
    os.chmod(path, 0o644)
    data = bytearray(path.read_bytes())
    data[10] ^= 0x01
    path.write_bytes(bytes(data))
    assert not store.verify(digest)
    with pytest.raises(ArtifactCorrupt, match="corrupt"):
        store.read_bytes(digest)
    with pytest.raises(ArtifactCorrupt):
        store.local_path(digest)


def test_a_missing_file_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match="does not exist"):
        LocalBlobStore(tmp_path / "b").put_file(tmp_path / "nope.bin")


def test_a_folder_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match="is a folder"):
        hash_file(tmp_path)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads every file whatever its mode")
def test_an_unreadable_file_is_refused(tmp_path: Path, artifact: Path) -> None:
    os.chmod(artifact, 0)
    with pytest.raises(ArtifactError, match="not readable"):
        hash_file(artifact)


def test_memory_store_detects_corruption() -> None:
    store = MemoryBlobStore()
    digest, _ = store.put_bytes(b"abc")
    store.blobs[digest] = b"abd"
    assert not store.verify(digest)
    with pytest.raises(ArtifactCorrupt):
        store.read_bytes(digest)
