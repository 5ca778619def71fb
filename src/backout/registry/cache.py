"""A per-host read-through cache of blobs fetched from a remote artifact store.

For :class:`backout.registry.objectstore.S3BlobStore`: runtimes load from a local path, so
a blob kept in object storage is downloaded once per host into ``ROOT/sha256/ab/abcdef…``
and read from there afterwards, also while the object store is down.

- **Content-addressed and verified**: a blob enters the cache only after its bytes hashed
  to its address, and is re-hashed each time it is handed out; a cached file that no longer
  verifies is dropped and fetched again, never served.
- **Safe with concurrent processes** (gateway workers, the controller, the CLI on one host):
  each download goes to its own temporary file in the cache folder and is renamed into
  place, which is atomic, so a reader sees a whole blob or none. Two processes fetching the
  same blob both rename identical bytes over each other; no lock is needed.
- **Bounded, least recently used out first**: after each fill the cache removes the blobs
  used longest ago (a hit refreshes a file's mtime, which is the LRU clock: atime is often
  off) until it fits ``max_bytes``. A blob used in the last :data:`IN_USE_S` seconds is kept
  even over the bound, because a process may be about to open it; so is the newest blob,
  which the caller is waiting for. The bound may therefore be exceeded by blobs in use.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from backout.registry.artifacts import hash_stream

__all__ = ["DEFAULT_MAX_BYTES", "IN_USE_S", "BlobCache"]

DEFAULT_MAX_BYTES = 10 << 30  # 10 GiB: a few releases of a large model per host
IN_USE_S = 60.0  # a blob handed out this recently may be about to be opened: never evicted
STALE_INCOMING_S = 3600.0  # a temporary file this old belongs to a process that died


class BlobCache:
    """Blobs of a remote store kept in a local folder, bounded to ``max_bytes``."""

    def __init__(self, root: Path, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.root = Path(root)
        self.max_bytes = max_bytes
        self._objects = self.root / "sha256"

    def path(self, digest: str) -> Path:
        """Where the blob with ``digest`` is cached (it may not be)."""
        return self._objects / digest[:2] / digest

    def get(self, digest: str) -> Path | None:
        """The cached file of ``digest``, verified now; None when it is not cached (or was
        cached corrupt, in which case it is removed)."""
        path = self.path(digest)
        try:
            with open(path, "rb", buffering=0) as f:
                actual, _ = hash_stream(f)
        except FileNotFoundError:  # not cached, or evicted by another process just now
            return None
        if actual != digest:
            path.unlink(missing_ok=True)  # a disk fault: fetch it again rather than serve it
            return None
        with contextlib.suppress(FileNotFoundError):
            os.utime(path)  # the LRU clock
        return path

    def fill(self, digest: str, download: Callable[[BinaryIO], str | None]) -> tuple[Path, str]:
        """Run ``download`` into a new temporary file; cache it under ``digest``.

        ``download`` returns the SHA-256 of the bytes it wrote when it hashed them on the
        way, or None to have the file hashed here. Returns the cached path and the SHA-256
        the downloaded bytes really have. When that is not ``digest`` nothing is cached and
        the path returned does not exist: the caller raises, naming its source.
        """
        dest = self.path(digest)
        dest.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=".incoming-")
        try:
            with os.fdopen(fd, "w+b") as f:
                actual = download(f)
                f.flush()
                # No fsync: a cache file a crash left half-written is caught by the hash in
                # get() and fetched again, so durability would buy nothing here.
                if actual is None:
                    f.seek(0)
                    actual, _ = hash_stream(f)
            if actual != digest:
                os.unlink(tmp_name)
                return dest, actual
            os.chmod(tmp_name, 0o444)
            os.replace(tmp_name, dest)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp_name)
            raise
        self.evict(keep=digest)
        return dest, actual

    def usage(self) -> int:
        """Bytes of blobs in the cache now."""
        return sum(size for _, _, size in self._entries())

    def evict(self, *, keep: str | None = None, now: float | None = None) -> list[str]:
        """Remove the least recently used blobs until the cache fits; return their digests."""
        now = time.time() if now is None else now
        entries = sorted(self._entries())  # oldest mtime first
        total = sum(size for _, _, size in entries)
        removed: list[str] = []
        for mtime, path, size in entries:
            if total <= self.max_bytes:
                break
            if path.name == keep or now - mtime < IN_USE_S:
                continue
            with contextlib.suppress(FileNotFoundError):  # another process evicted it first
                path.unlink()
            total -= size
            removed.append(path.name)
        return removed

    def _entries(self) -> list[tuple[float, Path, int]]:
        entries: list[tuple[float, Path, int]] = []
        if not self._objects.is_dir():
            return entries
        now = time.time()
        for folder in self._objects.iterdir():
            if not folder.is_dir():
                continue
            for path in folder.iterdir():
                try:
                    st = path.stat()
                except FileNotFoundError:
                    continue
                if path.name.startswith(".incoming-"):
                    if now - st.st_mtime > STALE_INCOMING_S:
                        path.unlink(missing_ok=True)  # left by a process that died mid-download
                    continue
                entries.append((st.st_mtime, path, st.st_size))
        return entries
