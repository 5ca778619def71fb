"""Artifacts in S3-compatible object storage, and the choice of store from a location.

For every process that reads or writes artifacts: :func:`open_blobs` turns the
``--artifacts`` location into a :class:`BlobStore` — a folder path gives
:class:`LocalBlobStore`, ``s3://bucket/prefix`` gives :class:`S3BlobStore` — and
:func:`blobs_from_env` does the same from the environment ``backout serve`` hands its
workers.

:class:`S3BlobStore` keeps each blob under ``prefix/sha256/ab/abcdef…`` through boto3
(credentials the standard boto3 way: environment, profile, instance role). Uploads go
through boto3's multipart machinery (:class:`boto3.s3.transfer.TransferConfig`), which
reads each part from the file as it sends it; downloads are one streamed GET, a MiB at a
time, resumed where a broken connection stopped: memory stays bounded whatever the
artifact's size. Every byte is verified:
an upload is hashed while it is read and checked again from the object's metadata
afterwards; a download is hashed before it enters the per-host :class:`BlobCache`, and
runtimes load from that cache, so a host keeps loading what it holds while the object
store is down. Each boto3 failure is translated at this boundary into
:class:`ArtifactStoreUnavailable` (down, refused, garbage), :class:`NotFound` or
:class:`ArtifactCorrupt`, with one line naming the store and the endpoint.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import os
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import urlsplit

from backout.errors import (
    ArtifactCorrupt,
    ArtifactError,
    ArtifactStoreUnavailable,
    BackoutError,
    ConfigError,
    NotFound,
)
from backout.registry.artifacts import (
    BlobStore,
    LocalBlobStore,
    VerifyingReader,
    hash_file,
    open_artifact,
)
from backout.registry.cache import DEFAULT_MAX_BYTES, BlobCache

log = logging.getLogger(__name__)

__all__ = [
    "PART_BYTES",
    "S3BlobStore",
    "blobs_from_env",
    "cache_bytes_from_env",
    "is_remote",
    "open_blobs",
]

PART_BYTES = 8 << 20  # one multipart part (boto3 grows it for objects over 80 GB)
CONCURRENCY = 4  # parts in flight at once
CONNECT_TIMEOUT_S = 3.0
# Long enough for a CompleteMultipartUpload of a large object, which S3 (and MinIO, moto)
# may take a minute to answer; a retry after it timed out would find the upload gone.
READ_TIMEOUT_S = 120.0
ATTEMPTS = 3  # boto3's standard retry mode, backing off between tries; and stream resumes
STREAM_CHUNK = 1 << 20  # a download is read and written one MiB at a time


def is_remote(location: str) -> bool:
    """Whether ``location`` names object storage (``s3://…``) rather than a folder."""
    return "://" in location


def open_blobs(
    location: str | Path,
    *,
    endpoint: str | None = None,
    cache_dir: Path | None = None,
    cache_bytes: int = DEFAULT_MAX_BYTES,
) -> BlobStore:
    """The artifact store at ``location``: a folder, or ``s3://bucket[/prefix]``.

    ``endpoint`` is the S3 API's URL (MinIO, Ceph, moto; None: AWS); ``cache_dir`` is the
    per-host cache an object store downloads into (default: a ``cache`` folder beside the
    working directory's ``.backout``).
    """
    text = str(location)
    if not is_remote(text):
        return LocalBlobStore(Path(text))
    parts = urlsplit(text)
    if parts.scheme != "s3":
        raise ConfigError(
            f"artifact location {text!r} is not supported: give a folder or s3://bucket/prefix"
        )
    if not parts.netloc:
        raise ConfigError(f"artifact location {text!r} names no bucket: use s3://bucket/prefix")
    cache = BlobCache(cache_dir or Path(".backout") / "cache", cache_bytes)
    return S3BlobStore(parts.netloc, parts.path.strip("/"), endpoint=endpoint, cache=cache)


def blobs_from_env(home: Path) -> BlobStore:
    """The artifact store the environment names (what ``backout serve`` hands its workers).

    ``BACKOUT_ARTIFACTS`` (default ``HOME/artifacts``); for object storage the endpoint
    from ``BACKOUT_S3_ENDPOINT`` or ``AWS_ENDPOINT_URL``, the cache folder from
    ``BACKOUT_ARTIFACT_CACHE`` (default ``HOME/cache``) and its bound in MiB from
    ``BACKOUT_ARTIFACT_CACHE_MB``.
    """
    env = os.environ
    location = env.get("BACKOUT_ARTIFACTS") or str(home / "artifacts")
    if not is_remote(location):
        return LocalBlobStore(Path(location))
    return open_blobs(
        location,
        endpoint=env.get("BACKOUT_S3_ENDPOINT") or env.get("AWS_ENDPOINT_URL") or None,
        cache_dir=Path(env.get("BACKOUT_ARTIFACT_CACHE") or home / "cache"),
        cache_bytes=cache_bytes_from_env(),
    )


def cache_bytes_from_env() -> int:
    """The host cache's bound: ``BACKOUT_ARTIFACT_CACHE_MB`` MiB, by default 10 GiB."""
    mb = os.environ.get("BACKOUT_ARTIFACT_CACHE_MB")
    try:
        value = int(mb) << 20 if mb else DEFAULT_MAX_BYTES
    except ValueError as exc:
        raise ConfigError(
            f"BACKOUT_ARTIFACT_CACHE_MB is {mb!r}: give the cache's bound in MiB, e.g. 10240"
        ) from exc
    if value <= 0:
        raise ConfigError(f"BACKOUT_ARTIFACT_CACHE_MB is {mb!r}: give a positive number of MiB")
    return value


class S3BlobStore:
    """Blobs in an S3 bucket under ``prefix/sha256/ab/abcdef…``, read through a host cache."""

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        endpoint: str | None = None,
        cache: BlobCache,
        client: Any = None,
    ) -> None:
        from boto3.s3.transfer import TransferConfig

        self.bucket = bucket
        self.prefix = f"{prefix.strip('/')}/" if prefix.strip("/") else ""
        self.endpoint = endpoint
        self.cache = cache
        self.url = f"s3://{bucket}/{self.prefix}".rstrip("/")
        self._client = client
        self.transfer = TransferConfig(
            multipart_threshold=PART_BYTES,
            multipart_chunksize=PART_BYTES,
            max_concurrency=CONCURRENCY,
            preferred_transfer_client="classic",  # the bounded-memory path measured here
        )

    def __repr__(self) -> str:
        return f"S3BlobStore({self.url!r}, endpoint={self.endpoint!r})"

    @property
    def client(self) -> Any:
        """The boto3 client, made on first use (each process makes its own)."""
        if self._client is None:
            import boto3
            from botocore.config import Config

            config = Config(
                connect_timeout=CONNECT_TIMEOUT_S,
                read_timeout=READ_TIMEOUT_S,
                retries={"max_attempts": ATTEMPTS, "mode": "standard"},
                # MinIO, Ceph and moto serve buckets under the path, not as host names.
                s3={"addressing_style": "path"} if self.endpoint else None,
            )
            with self.translate_errors("making a client"), _SESSION_LOCK:
                self._client = _session(boto3).client(
                    "s3", endpoint_url=self.endpoint, config=config
                )
        return self._client

    def key(self, digest: str) -> str:
        """The object key of the blob with ``digest``."""
        return f"{self.prefix}sha256/{digest[:2]}/{digest}"

    def where(self, digest: str) -> str:
        """The blob's URL, for messages."""
        return f"s3://{self.bucket}/{self.key(digest)}"

    # -- the bucket ----------------------------------------------------------------------

    def ensure(self) -> bool:
        """Check the bucket answers as S3 and takes writes; create it when there is none.

        True if it was created. For ``backout init``, the one command that creates things:
        a small probe object is written, read back and deleted, so an endpoint that
        answers 200 to anything, or a bucket backout may not write, fails here.
        """
        created = False
        try:
            with self.translate_errors("checking the bucket"):
                self.client.head_bucket(Bucket=self.bucket)
        except ArtifactStoreUnavailable as exc:
            if "does not exist" not in exc.message:
                raise
            region = self.client.meta.region_name
            kwargs: dict[str, Any] = {"Bucket": self.bucket}
            if region and region != "us-east-1":
                kwargs["CreateBucketConfiguration"] = {"LocationConstraint": region}
            with self.translate_errors("creating the bucket"):
                self.client.create_bucket(**kwargs)
            created = True
        probe = f"{self.prefix}probe/{uuid.uuid4().hex}"
        with self.translate_errors("writing a probe object to the bucket"):
            self.client.put_object(Bucket=self.bucket, Key=probe, Body=b"backout",
                                   Metadata={"probe": "backout"})  # fmt: skip
            head = self.client.head_object(Bucket=self.bucket, Key=probe)
            self.client.delete_object(Bucket=self.bucket, Key=probe)
        if head.get("ContentLength") != 7 or head.get("Metadata", {}).get("probe") != "backout":
            raise ArtifactStoreUnavailable(
                f"artifact store {self.url} at {self._endpoint()} accepted a probe object but "
                "does not hold it: it is not answering as S3 object storage; check --s3-endpoint"
            )
        return created

    # -- writing ---------------------------------------------------------------------------

    def put_file(self, path: Path) -> tuple[str, int]:
        # Hash first: the address is the key, and bytes already stored are not sent again.
        before = _stamp(path)
        digest, size = hash_file(path)
        if self._holds(digest, size):
            return digest, size
        # boto3's file upload reads each part from the file as it sends it, in parallel and
        # without buffering parts in memory; it cannot hash in order, so a file that changed
        # since it was hashed is caught by its stamp instead (and by every load's hash).
        with self.translate_errors("uploading", digest):
            self.client.upload_file(
                str(path), self.bucket, self.key(digest),
                ExtraArgs={"Metadata": {"sha256": digest}}, Config=self.transfer,
            )  # fmt: skip
        if _stamp(path) != before:
            self._delete_quietly(digest)
            raise ArtifactError(
                f"artifact {str(path)!r} changed while it was being uploaded: register it "
                "again once it is complete; nothing was stored"
            )
        self._check_held(digest, size)
        return digest, size

    def put_stream(self, stream: BinaryIO, *, digest: str | None = None) -> tuple[str, int]:
        if digest is not None:
            head = self._head(digest)
            if head is not None:
                return digest, int(head.get("ContentLength") or 0)
        # Spooled through the cache folder, hashing: the address is known only at the end
        # of a stream, and bytes that do not hash to the digest asked for must never reach
        # the bucket (LocalBlobStore refuses them before anything is stored).
        spooled = LocalBlobStore(self.cache.root / "spool")
        got, _ = spooled.put_stream(stream, digest=digest)
        try:
            return self.put_file(spooled.blob_path(got))
        finally:
            spooled.delete(got)

    def put_bytes(self, data: bytes) -> tuple[str, int]:
        digest = hashlib.sha256(data).hexdigest()
        if not self._holds(digest, len(data)):  # small (a manifest): one PUT
            with self.translate_errors("uploading", digest):
                self.client.put_object(
                    Bucket=self.bucket, Key=self.key(digest), Body=data,
                    Metadata={"sha256": digest},
                )  # fmt: skip
            self._check_held(digest, len(data))
        return digest, len(data)

    def _check_held(self, digest: str, size: int) -> None:
        # An endpoint that answers 200 to anything is not storage: read back what it holds.
        if not self._holds(digest, size):
            raise ArtifactStoreUnavailable(
                f"artifact store {self.url} at {self._endpoint()} accepted sha256:{digest[:12]}… "
                "but does not hold it afterwards: it is not answering as S3 object storage; "
                "check --s3-endpoint"
            )

    def delete(self, digest: str) -> None:
        with self.translate_errors("deleting", digest):
            self.client.delete_object(Bucket=self.bucket, Key=self.key(digest))

    def _delete_quietly(self, digest: str) -> None:
        with contextlib.suppress(BackoutError):
            self.delete(digest)

    # -- reading ---------------------------------------------------------------------------

    def _head(self, digest: str) -> dict[str, Any] | None:
        try:
            with self.translate_errors("reading", digest):
                head: dict[str, Any] = self.client.head_object(
                    Bucket=self.bucket, Key=self.key(digest)
                )
        except NotFound:
            return None
        return head

    def _holds(self, digest: str, size: int) -> bool:
        head = self._head(digest)
        if head is None or head.get("ContentLength") != size:
            return False
        # Objects copied in by other tools carry no metadata; those backout wrote do.
        return bool(head.get("Metadata", {}).get("sha256", digest) == digest)

    def exists(self, digest: str) -> bool:
        try:
            return self._head(digest) is not None
        except ArtifactStoreUnavailable:
            if self.cache.path(digest).is_file():  # held here: loads verify it anyway
                return True
            raise

    def size(self, digest: str) -> int:
        head = self._head(digest)
        if head is None:
            raise NotFound(f"blob sha256:{digest} is not in the artifact store {self.url}")
        try:
            return int(head["ContentLength"])
        except (KeyError, TypeError, ValueError) as exc:
            raise self._garbage("reading", exc) from exc

    def open(self, digest: str) -> BinaryIO:
        cached = self.cache.get(digest)
        if cached is not None:
            return VerifyingReader(open(cached, "rb"), digest, str(self.cache.root))  # type: ignore[return-value]
        with self.translate_errors("reading", digest):
            body = self.client.get_object(Bucket=self.bucket, Key=self.key(digest))["Body"]
        return VerifyingReader(_Translated(self, body, digest), digest, self.url)  # type: ignore[arg-type,return-value]

    def verify(self, digest: str) -> bool:
        """Whether this host would load the blob's true bytes.

        The object must be in the bucket (when the bucket answers), and the bytes this host
        loads — its cached copy, or the object downloaded into the cache now — must hash to
        the address. While the bucket is down a verified cached copy suffices: a rollback
        to a release this host holds must not wait for the object store.
        """
        try:
            head = self._head(digest)
        except ArtifactStoreUnavailable:
            if self.cache.get(digest) is not None:
                return True
            raise
        if head is None:
            return False
        cached = self.cache.get(digest)
        if cached is not None:
            return bool(head.get("ContentLength") == cached.stat().st_size)
        try:
            self.local_path(digest)
        except (ArtifactCorrupt, NotFound):
            return False
        return True

    def read_bytes(self, digest: str) -> bytes:
        return self.local_path(digest).read_bytes()

    def local_path(self, digest: str) -> Path:
        """The verified blob in the host cache, downloaded first when it is not there."""
        cached = self.cache.get(digest)
        if cached is not None:
            return cached

        path, actual = self.cache.fill(digest, lambda f: self._download(digest, f))
        if actual != digest:
            raise ArtifactCorrupt(
                f"object {self.where(digest)} is corrupt: its bytes hash to "
                f"sha256:{actual[:12]}…, so it was neither cached nor loaded; restore it from "
                "a backup or register the release again from the original file"
            )
        return path

    def _download(self, digest: str, out: BinaryIO) -> str:
        """Stream the object into ``out`` in one GET, resuming where a broken read stopped;
        return the SHA-256 of the bytes written (hashed on the way: no second read).

        One sequential stream, not boto3's parallel ranged GETs: memory is one chunk, and
        S3-compatible servers that read a whole object to answer each range (moto does)
        are not asked for it 128 times per GiB. A connection lost mid-object resumes from
        the last byte written, pinned to the same object version by its ETag.
        """
        from botocore.exceptions import BotoCoreError

        offset, etag = 0, None
        h = hashlib.sha256()
        for attempt in range(ATTEMPTS):
            args: dict[str, Any] = {"Bucket": self.bucket, "Key": self.key(digest)}
            if offset:
                args.update(Range=f"bytes={offset}-", IfMatch=etag)
            with self.translate_errors("downloading", digest):
                response = self.client.get_object(**args)
            etag = etag or response.get("ETag")
            body = response["Body"]
            try:
                while chunk := body.read(STREAM_CHUNK):
                    out.write(chunk)
                    h.update(chunk)
                    offset += len(chunk)
                return h.hexdigest()
            except (BotoCoreError, ConnectionError, TimeoutError) as exc:
                if attempt == ATTEMPTS - 1:
                    with self.translate_errors("downloading", digest):
                        raise
                log.warning("download of %s broke after %d bytes (%s): resuming",
                            self.where(digest), offset, type(exc).__name__)  # fmt: skip
            finally:
                body.close()
        raise AssertionError("unreachable: the last attempt returns or raises")

    # -- errors ----------------------------------------------------------------------------

    def _endpoint(self) -> str:
        return self.endpoint or "the AWS endpoint"

    def _garbage(self, action: str, exc: BaseException) -> ArtifactStoreUnavailable:
        return ArtifactStoreUnavailable(
            f"artifact store {self.url} at {self._endpoint()} answered something that is not "
            f"S3 while {action} ({type(exc).__name__}): check --s3-endpoint"
        )

    @contextlib.contextmanager
    def translate_errors(self, action: str, digest: str | None = None) -> Iterator[None]:
        """Turn boto3's exceptions into backout's, naming the store and the endpoint."""
        try:
            yield
        except BackoutError:
            raise
        except Exception as exc:
            raise self._translate(exc, action, digest) from exc

    def _translate(self, exc: Exception, action: str, digest: str | None) -> BackoutError:
        from boto3.exceptions import Boto3Error, S3UploadFailedError
        from botocore.exceptions import (
            BotoCoreError,
            ClientError,
            ConnectionError,
            NoCredentialsError,
        )
        from botocore.parsers import ResponseParserError

        where = f"artifact store {self.url} at {self._endpoint()}"
        if digest is not None:
            action = f"{action} sha256:{digest[:12]}…"
        if isinstance(exc, S3UploadFailedError) and isinstance(exc.__context__, ClientError):
            exc = exc.__context__  # boto3 wraps the refusal of an upload; the code is inside
        if isinstance(exc, ClientError):
            error = exc.response.get("Error", {})
            code = str(error.get("Code", ""))
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if code == "NoSuchBucket" or (code in {"404", "NotFound"} and digest is None):
                return ArtifactStoreUnavailable(
                    f"{where}: bucket {self.bucket!r} does not exist: create it "
                    "(`backout init` does) or check --artifacts"
                )
            if code in {"404", "NoSuchKey", "NotFound"}:
                return NotFound(f"blob sha256:{digest} is not in the artifact store {self.url}")
            if code in {"AccessDenied", "403", "InvalidAccessKeyId", "SignatureDoesNotMatch"}:
                return ArtifactStoreUnavailable(
                    f"{where} refused {action} ({code}): check the "
                    "credentials (AWS_ACCESS_KEY_ID / AWS_PROFILE) and the bucket's policy"
                )
            message = " ".join(str(error.get("Message", "")).split())[:200]
            return ArtifactStoreUnavailable(
                f"{where} failed {action}: {code or status} {message}".rstrip()
                + "; try again, or check the object store"
            )
        if isinstance(exc, NoCredentialsError):
            return ArtifactStoreUnavailable(
                f"{where}: no credentials found: set AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY, or AWS_PROFILE"
            )
        if isinstance(exc, ConnectionError):  # refused, reset, timed out (after retries)
            return ArtifactStoreUnavailable(
                f"{where} cannot be reached ({type(exc).__name__}) while {action}: check that "
                "it is running and --s3-endpoint / BACKOUT_S3_ENDPOINT"
            )
        if isinstance(exc, ResponseParserError | ValueError | KeyError | TypeError):
            return self._garbage(action, exc)
        if isinstance(exc, BotoCoreError | Boto3Error):
            text = " ".join(str(exc).split())[:200]
            return ArtifactStoreUnavailable(
                f"{where} failed {action}: {text}; try again, or check the object store"
            )
        if isinstance(exc, OSError):  # the local side: the file read, or the cache's disk
            return ArtifactError(
                f"{where}: a local file failed while {action}: {type(exc).__name__}: {exc}; check the "
                "file and the free space of the cache folder"
            )
        raise exc  # not a failure of the object store: a bug, shown as one


def _stamp(path: Path) -> tuple[int, int, int, int]:
    """What changes when a file is written: size, mtime, ctime, inode."""
    try:
        st = os.stat(path)
    except OSError as exc:
        open_artifact(path).close()  # raises the one clear message for this path
        raise ArtifactError(f"artifact {str(path)!r} could not be read: {exc}") from exc
    return st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino


_SESSION_LOCK = threading.Lock()  # a boto3 session is not safe to make clients from in parallel


@functools.cache
def _session(boto3: Any) -> Any:
    # One session per process: making one loads botocore's service models (~0.3 s), and
    # its credential chain (environment, profile, role) refreshes itself when it must.
    return boto3.session.Session()


class _Translated:
    """A botocore body whose read errors (a connection lost mid-object) are backout's."""

    def __init__(self, store: S3BlobStore, body: Any, digest: str) -> None:
        self.store = store
        self.body = body
        self.digest = digest

    def read(self, n: int = -1) -> bytes:
        with self.store.translate_errors("reading", self.digest):
            return bytes(self.body.read(n if n >= 0 else None))

    def close(self) -> None:
        self.body.close()
