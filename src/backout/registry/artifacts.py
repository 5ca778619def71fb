"""Content-addressed blobs: every artifact file is stored once, under its SHA-256.

Blobs are written atomically (temporary file in the same folder, fsync, rename) and
streamed in fixed-size chunks, so a 1 GB model never sits whole in memory. Reads verify
the bytes against the address. :class:`BlobStore` is the small interface every artifact
store implements; :class:`LocalBlobStore` (a folder) is the default,
:class:`backout.registry.objectstore.S3BlobStore` keeps blobs in S3-compatible object
storage, and :class:`MemoryBlobStore` serves unit tests. :class:`VerifyingReader` and
:class:`HashingReader` hash a stream as it is read, for stores that stream.
"""

from __future__ import annotations

import errno
import hashlib
import io
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO, Protocol

from backout.errors import ArtifactCorrupt, ArtifactError, NotFound

CHUNK = 1 << 20  # 1 MiB: large enough that hashing runs at OpenSSL speed, small in memory


class BlobStore(Protocol):
    """Where artifact bytes live, addressed by SHA-256.

    The contract: a blob is stored whole or not at all (a failed put leaves nothing a reader
    can see); every read that hands bytes to a caller verifies them against the address and
    raises :class:`ArtifactCorrupt` rather than serve a byte that does not match; a missing
    blob raises :class:`NotFound`; a store that cannot be reached raises a
    :class:`BackoutError` saying so (never a third-party exception).
    """

    def put_stream(self, stream: BinaryIO, *, digest: str | None = None) -> tuple[str, int]:
        """Store everything left in ``stream``; return its SHA-256 and size. Idempotent.

        With ``digest``, the bytes must hash to it: otherwise nothing is stored and
        :class:`ArtifactCorrupt` is raised.
        """
        ...

    def put_file(self, path: Path) -> tuple[str, int]:
        """Store the file at ``path``; return its SHA-256 and size. Idempotent."""
        ...

    def put_bytes(self, data: bytes) -> tuple[str, int]:
        """Store ``data``; return its SHA-256 and size. Idempotent."""
        ...

    def open(self, digest: str) -> BinaryIO:
        """A stream of the blob's bytes; reading to the end raises if they do not verify."""
        ...

    def exists(self, digest: str) -> bool:
        """Whether a blob with this digest is stored (not re-hashed)."""
        ...

    def size(self, digest: str) -> int:
        """The stored blob's size in bytes."""
        ...

    def delete(self, digest: str) -> None:
        """Remove the blob if it is stored (for retention and tests); idempotent."""
        ...

    def verify(self, digest: str) -> bool:
        """Re-hash the stored blob; True when its bytes still match ``digest``."""
        ...

    def read_bytes(self, digest: str) -> bytes:
        """The whole blob, verified. For small blobs such as manifests."""
        ...

    def local_path(self, digest: str) -> Path:
        """A local file holding the verified blob, for runtimes that load from a path."""
        ...


def hash_stream(stream: BinaryIO) -> tuple[str, int]:
    """SHA-256 hex digest and size of everything left in ``stream``, read in chunks."""
    h = hashlib.sha256()
    size = 0
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    while n := stream.readinto(view):  # type: ignore[attr-defined]
        h.update(view[:n])
        size += n
    return h.hexdigest(), size


class HashingReader(io.RawIOBase):
    """A read-only, forward-only view of ``raw`` that hashes (SHA-256) what passes through.

    Not seekable on purpose: a consumer that seeks (boto3 reads the parts of a seekable
    file in parallel) would have it hash the bytes out of order.
    """

    def __init__(self, raw: BinaryIO) -> None:
        self.raw = raw
        self.hash = hashlib.sha256()
        self.size = 0

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        # Straight from the raw stream: RawIOBase.read would copy each part twice more.
        whole = size is None or size < 0
        data = self.raw.read() if size is None or size < 0 else self.raw.read(size)
        self.hash.update(data)
        self.size += len(data)
        if whole or (not data and size):
            self.at_end()
        return data

    def readinto(self, b: memoryview) -> int:  # type: ignore[override]
        data = self.raw.read(len(b))
        n = len(data)
        b[:n] = data
        self.hash.update(b[:n])
        self.size += n
        if n == 0 and len(b):
            self.at_end()
        return n

    def at_end(self) -> None:
        """Called when the stream is read to its end."""

    def hexdigest(self) -> str:
        return self.hash.hexdigest()

    def close(self) -> None:
        try:
            self.raw.close()
        finally:
            super().close()


class VerifyingReader(HashingReader):
    """A stream of a blob that raises :class:`ArtifactCorrupt` at its end unless the bytes
    hash to ``digest``, so whoever reads it to the end never accepts a corrupt blob."""

    def __init__(self, raw: BinaryIO, digest: str, label: str) -> None:
        super().__init__(raw)
        self.digest = digest
        self.label = label

    def at_end(self) -> None:
        if self.hexdigest() != self.digest:
            raise ArtifactCorrupt(
                f"blob sha256:{self.digest} in {self.label} is corrupt: its bytes hash to "
                f"sha256:{self.hexdigest()[:12]}…, so they will not be used; restore it from a "
                "backup or register the release again from the original file"
            )


def mismatch(label: str, actual: str, expected: str) -> ArtifactCorrupt:
    """The error for bytes offered under ``expected`` that hash to ``actual``."""
    return ArtifactCorrupt(
        f"{label} hashes to sha256:{actual[:12]}… where sha256:{expected[:12]}… was expected; "
        "nothing was stored"
    )


def hash_file(path: Path) -> tuple[str, int]:
    """SHA-256 hex digest and size of the file at ``path``."""
    with open_artifact(path) as f:
        return hash_stream(f)


def open_artifact(path: Path) -> BinaryIO:
    """Open a file to register, unbuffered, turning OS errors into one clear message."""
    try:
        return open(path, "rb", buffering=0)
    except FileNotFoundError as exc:
        raise ArtifactError(f"artifact {str(path)!r} does not exist: check the path") from exc
    except IsADirectoryError as exc:
        raise ArtifactError(f"artifact {str(path)!r} is a folder: name each file") from exc
    except PermissionError as exc:
        raise ArtifactError(
            f"artifact {str(path)!r} is not readable: check its permissions"
        ) from exc


class LocalBlobStore:
    """Blobs in a local folder: ``ROOT/sha256/ab/abcdef…``."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._objects = self.root / "sha256"

    def _path(self, digest: str) -> Path:
        return self._objects / digest[:2] / digest

    def exists(self, digest: str) -> bool:
        return self._path(digest).is_file()

    def put_file(self, path: Path) -> tuple[str, int]:
        with open_artifact(path) as src:
            return self._put_stream(src, label=str(path))

    def put_stream(self, stream: BinaryIO, *, digest: str | None = None) -> tuple[str, int]:
        if digest is not None and self.exists(digest):
            return digest, self.size(digest)
        return self._put_stream(stream, label="the stream", expected=digest)

    def open(self, digest: str) -> BinaryIO:
        try:
            raw = open(self._path(digest), "rb")  # noqa: SIM115 - the caller closes the reader
        except FileNotFoundError as exc:
            raise NotFound(
                f"blob sha256:{digest} is not in the artifact store {self.root}"
            ) from exc
        return VerifyingReader(raw, digest, str(self.root))  # type: ignore[return-value]

    def size(self, digest: str) -> int:
        try:
            return self._path(digest).stat().st_size
        except FileNotFoundError as exc:
            raise NotFound(
                f"blob sha256:{digest} is not in the artifact store {self.root}"
            ) from exc

    def delete(self, digest: str) -> None:
        self._path(digest).unlink(missing_ok=True)

    def put_bytes(self, data: bytes) -> tuple[str, int]:
        digest = hashlib.sha256(data).hexdigest()
        if not self.exists(digest):
            self._atomic_write(digest, iter([data]))
        return digest, len(data)

    def _put_stream(
        self, src: BinaryIO, label: str, expected: str | None = None
    ) -> tuple[str, int]:
        # One pass: hash each chunk as it is copied into a temporary file, then rename the
        # file to its address. The rename is atomic, so a reader never sees half a blob.
        # A failure to read the source and a failure to write the store are told apart: the
        # first is the caller's file, the second this folder (full, read-only...).
        tmp_name = ""
        h = hashlib.sha256()
        size = 0
        buf = bytearray(CHUNK)
        view = memoryview(buf)
        try:
            try:
                self._objects.mkdir(parents=True, exist_ok=True)
                fd, tmp_name = tempfile.mkstemp(dir=self._objects, prefix=".incoming-")
            except OSError as exc:
                raise self._write_error(exc, label) from exc
            with os.fdopen(fd, "wb", buffering=0) as out:
                while True:
                    try:
                        n = src.readinto(view)  # type: ignore[attr-defined]
                    except OSError as exc:
                        raise ArtifactError(f"artifact {label!r} could not be read: {exc}") from exc
                    if not n:
                        break
                    h.update(view[:n])
                    try:
                        _write_all(out, view[:n])
                    except OSError as exc:
                        raise self._write_error(exc, label) from exc
                    size += n
                try:
                    os.fsync(out.fileno())
                except OSError as exc:
                    raise self._write_error(exc, label) from exc
            digest = h.hexdigest()
            if expected is not None and digest != expected:
                raise mismatch(label, digest, expected)
            dest = self._path(digest)
            if dest.is_file():
                os.unlink(tmp_name)
            else:
                try:
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    os.chmod(tmp_name, 0o444)
                    os.replace(tmp_name, dest)
                    _fsync_dir(dest.parent)
                except OSError as exc:
                    raise self._write_error(exc, label) from exc
            return digest, size
        except BaseException:
            if tmp_name and os.path.exists(tmp_name):
                os.unlink(tmp_name)
            raise

    def _write_error(self, exc: OSError, label: str) -> ArtifactError:
        """One line naming this folder and what is wrong with it."""
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return ArtifactError(
                f"the artifact store {str(self.root)!r} is full ({exc.strerror}) while storing "
                f"{label!r}: free space there, or point --artifacts at a larger folder"
            )
        if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            return ArtifactError(
                f"the artifact store {str(self.root)!r} is not writable ({exc.strerror}) while "
                f"storing {label!r}: check the folder's permissions and mount"
            )
        return ArtifactError(
            f"the artifact store {str(self.root)!r} could not store {label!r}: "
            f"{exc.strerror or exc}"
        )

    def _atomic_write(self, digest: str, chunks: Iterator[bytes]) -> None:
        dest = self._path(digest)
        tmp_name = ""
        try:
            try:
                dest.parent.mkdir(parents=True, exist_ok=True)
                fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=".incoming-")
                with os.fdopen(fd, "wb") as out:
                    for chunk in chunks:
                        out.write(chunk)
                    out.flush()
                    os.fsync(out.fileno())
                os.chmod(tmp_name, 0o444)
                os.replace(tmp_name, dest)
                _fsync_dir(dest.parent)
            except OSError as exc:
                raise self._write_error(exc, f"sha256:{digest[:12]}…") from exc
        except BaseException:
            if tmp_name and os.path.exists(tmp_name):
                os.unlink(tmp_name)
            raise

    def verify(self, digest: str) -> bool:
        path = self._path(digest)
        if not path.is_file():
            return False
        with open(path, "rb", buffering=0) as f:
            actual, _ = hash_stream(f)
        return actual == digest

    def read_bytes(self, digest: str) -> bytes:
        path = self._path(digest)
        try:
            data = path.read_bytes()
        except FileNotFoundError as exc:
            raise NotFound(
                f"blob sha256:{digest} is not in the artifact store {self.root}"
            ) from exc
        if hashlib.sha256(data).hexdigest() != digest:
            raise ArtifactCorrupt(
                f"blob sha256:{digest} in {self.root} is corrupt: its bytes no longer match "
                "its digest; restore it from a backup or register the release again elsewhere"
            )
        return data

    def local_path(self, digest: str) -> Path:
        path = self._path(digest)
        if not path.is_file():
            raise NotFound(f"blob sha256:{digest} is not in the artifact store {self.root}")
        if not self.verify(digest):
            raise ArtifactCorrupt(
                f"blob sha256:{digest} in {self.root} is corrupt: its bytes no longer match "
                "its digest, so it will not be loaded"
            )
        return path

    def blob_path(self, digest: str) -> Path:
        """Where the blob lives, unverified (for tools and tests that inspect the store)."""
        return self._path(digest)


class MemoryBlobStore:
    """Blobs in a dict, for unit tests. ``local_path`` spills to a temporary folder."""

    def __init__(self) -> None:
        self.blobs: dict[str, bytes] = {}
        self._spill = Path(tempfile.mkdtemp(prefix="backout-blobs-"))

    def put_file(self, path: Path) -> tuple[str, int]:
        try:
            return self.put_bytes(Path(path).read_bytes())
        except OSError as exc:
            raise ArtifactError(f"artifact {str(path)!r} could not be read: {exc}") from exc

    def put_bytes(self, data: bytes) -> tuple[str, int]:
        digest = hashlib.sha256(data).hexdigest()
        self.blobs.setdefault(digest, data)
        return digest, len(data)

    def put_stream(self, stream: BinaryIO, *, digest: str | None = None) -> tuple[str, int]:
        data = stream.read()
        actual = hashlib.sha256(data).hexdigest()
        if digest is not None and actual != digest:
            raise mismatch("the stream", actual, digest)
        return self.put_bytes(data)

    def open(self, digest: str) -> BinaryIO:
        return io.BytesIO(self.read_bytes(digest))

    def exists(self, digest: str) -> bool:
        return digest in self.blobs

    def size(self, digest: str) -> int:
        if digest not in self.blobs:
            raise NotFound(f"blob sha256:{digest} is not stored")
        return len(self.blobs[digest])

    def delete(self, digest: str) -> None:
        self.blobs.pop(digest, None)

    def verify(self, digest: str) -> bool:
        data = self.blobs.get(digest)
        return data is not None and hashlib.sha256(data).hexdigest() == digest

    def read_bytes(self, digest: str) -> bytes:
        if digest not in self.blobs:
            raise NotFound(f"blob sha256:{digest} is not stored")
        if not self.verify(digest):
            raise ArtifactCorrupt(f"blob sha256:{digest} is corrupt")
        return self.blobs[digest]

    def local_path(self, digest: str) -> Path:
        path = self._spill / digest
        if not path.exists():
            path.write_bytes(self.read_bytes(digest))
        return path


def _write_all(out: BinaryIO, data: memoryview) -> None:
    """Write all of ``data``: an unbuffered write may take only part of it (a disk filling up
    takes what fits, and the next write fails)."""
    while data:
        n = out.write(data)
        if not n:
            raise OSError(errno.EIO, "a write made no progress")
        data = data[n:]


def _fsync_dir(path: Path) -> None:
    # The rename is durable only once the folder entry is on disk too.
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
