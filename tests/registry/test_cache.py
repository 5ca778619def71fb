"""The per-host cache of blobs from object storage: verified, bounded, LRU, multi-process."""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import time
from pathlib import Path
from typing import BinaryIO

from backout.registry.cache import IN_USE_S, BlobCache


def _put(cache: BlobCache, data: bytes) -> str:
    digest = hashlib.sha256(data).hexdigest()

    def download(f: BinaryIO) -> None:
        f.write(data)

    path, actual = cache.fill(digest, download)
    assert actual == digest and path.read_bytes() == data
    return digest


def _age(cache: BlobCache, digest: str, seconds: float) -> None:
    then = time.time() - seconds
    os.utime(cache.path(digest), (then, then))


def test_bytes_that_do_not_match_their_address_are_not_cached(tmp_path: Path) -> None:
    cache = BlobCache(tmp_path)
    digest = hashlib.sha256(b"model").hexdigest()

    def download(f: BinaryIO) -> None:
        f.write(b"something else")

    path, actual = cache.fill(digest, download)
    assert actual == hashlib.sha256(b"something else").hexdigest()
    assert not path.exists() and cache.get(digest) is None
    assert not list(tmp_path.rglob(".incoming-*"))


def test_a_cached_file_that_rotted_is_dropped(tmp_path: Path) -> None:
    cache = BlobCache(tmp_path)
    digest = _put(cache, b"model")
    os.chmod(cache.path(digest), 0o644)
    cache.path(digest).write_bytes(b"modem")
    assert cache.get(digest) is None
    assert not cache.path(digest).exists()


def test_the_least_recently_used_blob_goes_first(tmp_path: Path) -> None:
    cache = BlobCache(tmp_path, max_bytes=250)
    a = _put(cache, b"a" * 100)
    b = _put(cache, b"b" * 100)
    _age(cache, a, 2 * IN_USE_S)
    _age(cache, b, 3 * IN_USE_S)
    assert cache.get(b) is not None  # a hit makes b the most recently used
    _age(cache, b, 1.5 * IN_USE_S)
    c = _put(cache, b"c" * 100)  # 300 bytes > 250: the oldest (a) goes
    assert cache.get(a) is None
    assert cache.get(b) is not None and cache.get(c) is not None
    assert cache.usage() == 200


def test_a_blob_in_use_is_kept_over_the_bound(tmp_path: Path) -> None:
    cache = BlobCache(tmp_path, max_bytes=150)
    a = _put(cache, b"a" * 100)
    b = _put(cache, b"b" * 100)  # a was used just now: a process may be opening it
    assert cache.get(a) is not None and cache.get(b) is not None
    _age(cache, a, 2 * IN_USE_S)
    assert cache.evict() == [a]


def _fill_many(root: str, data: bytes, n: int) -> None:
    cache = BlobCache(Path(root), max_bytes=len(data) * 2)
    for i in range(n):
        _put(cache, data)
        _put(cache, data + str(i % 3).encode())
        assert cache.get(hashlib.sha256(data).hexdigest()) is not None


def test_processes_filling_one_cache_at_once_see_whole_blobs(tmp_path: Path) -> None:
    data = os.urandom(1 << 20)
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_fill_many, args=(str(tmp_path), data, 10)) for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0, 0, 0]
    cache = BlobCache(tmp_path)
    assert cache.get(hashlib.sha256(data).hexdigest()) is not None
    assert not list(tmp_path.rglob(".incoming-*"))
