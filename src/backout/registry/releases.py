"""The release registry: register, get, list, verify, mark known-good or bad; immutability.

A registered release never changes. Registering ``model@version`` again with the same
content is a no-op; with other content it is refused. A release that has ever served
production traffic can never be deleted. Every change appends an audit event in the same
transaction as the change itself.
"""

from __future__ import annotations

import builtins
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from backout.errors import (
    ArtifactError,
    ReleaseExists,
    ReleaseInUse,
    ReleaseNotFound,
    ValidationError,
)
from backout.registry import badmarks
from backout.registry.artifacts import BlobStore
from backout.registry.badmarks import BadMark
from backout.registry.manifest import (
    Artifact,
    Contract,
    Lineage,
    ReleaseManifest,
    RollbackPlan,
    Runtime,
    RuntimeKind,
    check_model_name,
    check_version,
    manifest_from_json,
    parse_ref,
)
from backout.store import Store, as_utc, audit, bump_generation, schema
from backout.types import Clock, system_clock

R = schema.releases


@dataclass(frozen=True, slots=True)
class Release:
    """A registered release: its immutable manifest and its current status."""

    manifest: ReleaseManifest
    digest: str
    registered_at: datetime
    known_good: bool
    first_served_at: datetime | None
    quarantined: str | None
    bad: BadMark | None = None  # see :mod:`backout.registry.badmarks`

    @property
    def model(self) -> str:
        return self.manifest.model

    @property
    def version(self) -> str:
        return self.manifest.version

    @property
    def ref(self) -> str:
        return self.manifest.ref

    def to_dict(self) -> dict[str, Any]:
        return {
            "ref": self.ref,
            "digest": self.digest,
            "registered_at": self.registered_at.isoformat(),
            "known_good": self.known_good,
            "first_served_at": self.first_served_at.isoformat() if self.first_served_at else None,
            "quarantined": self.quarantined,
            "bad": self.bad.to_dict() if self.bad else None,
            "manifest": self.manifest.model_dump(mode="json"),
        }


@dataclass(frozen=True, slots=True)
class Registered:
    """What ``register`` did: the release, and whether it was new."""

    release: Release
    created: bool


@dataclass(slots=True)
class VerifyReport:
    """The outcome of re-hashing a release's manifest and every artifact."""

    ref: str
    digest: str
    checked: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        return {"ref": self.ref, "digest": self.digest, "ok": self.ok,
                "checked": self.checked, "problems": self.problems}  # fmt: skip


@dataclass(frozen=True, slots=True)
class Mark:
    """One entry of a release's mark history: known-good (mark, unmark) or bad (bad, clear-bad)."""

    model: str
    version: str
    action: str
    actor: str
    reason: str
    at: datetime

    def to_dict(self) -> dict[str, Any]:
        return {"ref": f"{self.model}@{self.version}", "action": self.action,
                "actor": self.actor, "reason": self.reason, "at": self.at.isoformat()}  # fmt: skip


class Registry:
    """Releases in a store, their bytes in a blob store."""

    def __init__(self, store: Store, blobs: BlobStore, *, clock: Clock = system_clock) -> None:
        self.store = store
        self.blobs = blobs
        self.clock = clock  # when marks and their events happened (shared with the controller)

    # -- writing -----------------------------------------------------------------------

    def register(
        self,
        model: str,
        version: str,
        artifacts: Sequence[Path],
        *,
        runtime: Runtime | RuntimeKind | str = RuntimeKind.SKLEARN,
        contract: Contract | None = None,
        config: dict[str, Any] | None = None,
        changelog: str = "",
        rollback_plan: RollbackPlan | None = None,
        lineage: Lineage | None = None,
        owner: str = "",
        actor: str = "unknown",
    ) -> Registered:
        """Store the artifacts and register ``model@version``.

        Identical content registered again returns the existing release with
        ``created=False``; other content under the same version raises ReleaseExists.
        """
        check_model_name(model)
        check_version(version)
        if not isinstance(runtime, Runtime):
            runtime = Runtime(kind=RuntimeKind(runtime))
        runtime = pin_runtime(runtime)
        names = [Path(p).name for p in artifacts]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ArtifactError(
                f"two artifacts are both named {dupes[0]!r}: a release's files need distinct names"
            )
        # Blobs are content-addressed and written before the row: a failure below leaves at
        # most an unreferenced blob, never a row pointing at missing bytes.
        stored: list[Artifact] = []
        for path, name in zip(artifacts, names, strict=True):
            digest, size = self.blobs.put_file(Path(path))
            stored.append(Artifact(path=name, sha256=digest, size=size))
        manifest = ReleaseManifest(
            model=model,
            version=version,
            artifacts=tuple(stored),
            runtime=runtime,
            contract=contract or Contract(),
            config=config or {},
            changelog=changelog,
            rollback_plan=rollback_plan or RollbackPlan(),
            lineage=lineage or Lineage(),
            owner=owner,
            created_by=actor,
        )
        return self.register_manifest(manifest, actor=actor)

    def register_manifest(self, manifest: ReleaseManifest, *, actor: str) -> Registered:
        """Register a manifest whose artifacts are already in the blob store."""
        for a in manifest.artifacts:
            if not self.blobs.exists(a.sha256):
                raise ArtifactError(
                    f"{manifest.ref}: artifact {a.path!r} (sha256:{a.sha256[:12]}…) is not in "
                    "the artifact store: register it with its file"
                )
        body = manifest.canonical()
        digest = hashlib.sha256(body).hexdigest()
        content = manifest.content_digest()
        self.blobs.put_bytes(body)
        try:
            with self.store.write() as conn:
                existing = self._row(conn, manifest.model, manifest.version)
                if existing is not None:
                    return self._existing(existing, content)
                now = datetime.now(UTC)
                conn.execute(
                    R.insert().values(
                        model=manifest.model, version=manifest.version, digest=digest,
                        content_digest=content, manifest=body.decode(), registered_at=now,
                        known_good=False,
                    )
                )  # fmt: skip
                audit.append(
                    conn, "release.registered", model=manifest.model, actor=actor,
                    reason=manifest.changelog or "registered",
                    data={"version": manifest.version, "digest": digest,
                          "artifacts": [a.model_dump() for a in manifest.artifacts]},
                )  # fmt: skip
        except sa.exc.IntegrityError:
            # Another process registered the same version between our check and our insert
            # (only possible where the write lock is not held, e.g. a foreign writer).
            with self.store.read() as conn:
                row = self._row(conn, manifest.model, manifest.version)
            if row is None:
                raise
            return self._existing(row, content)
        return Registered(self.get(manifest.ref), created=True)

    def _existing(self, row: Any, content: str) -> Registered:
        release = _release(row)
        if row.content_digest == content:
            return Registered(release, created=False)
        raise ReleaseExists(
            f"{release.ref} is already registered with other content (manifest "
            f"sha256:{release.digest[:12]}…): releases never change; register the new content "
            "under a new version"
        )

    def mark_good(self, ref: str, *, actor: str, reason: str = "", good: bool = True) -> Release:
        """Mark (or with ``good=False`` unmark) a release as a rollback point."""
        model, version = parse_ref(ref)
        with self.store.write() as conn:
            row = self._require(conn, model, version)
            if row.quarantined and good:
                raise ValidationError(
                    f"{ref} is quarantined ({row.quarantined}) and cannot be marked known-good"
                )
            mark = badmarks.bad_of(row)
            if mark is not None and good:
                raise ValidationError(
                    badmarks.refusal(ref, mark, "be marked known-good",
                                     f"lift the mark first with `backout release clear-bad {ref} --reason TEXT`")
                )  # fmt: skip
            self.record_mark(
                conn, model, version, actor=actor, reason=reason, good=good, at=self.clock()
            )
        return self.get(ref)

    @staticmethod
    def record_mark(conn: Connection, model: str, version: str, *, actor: str, reason: str,
                    good: bool = True, at: float | None = None) -> None:  # fmt: skip
        """Mark or unmark a release known-good inside the caller's write, with its history.

        ``at``: when, in seconds since the epoch (default: now); the rollback window is
        measured from it. Marking a bad release known-good (a deploy that overrode its mark
        completed, or became the model's first release) lifts the bad mark in the same write.
        """
        if good:
            badmarks.clear_bad_in(conn, model, version, actor=actor, at=at,
                                  reason=f"marked known-good: {reason or 'proved itself'}")  # fmt: skip
        action = "mark" if good else "unmark"
        when = datetime.fromtimestamp(at, UTC) if at is not None else datetime.now(UTC)
        conn.execute(
            R.update().where(R.c.model == model, R.c.version == version).values(known_good=good)
        )
        bump_generation(conn)  # gateways keep rollback points warm: tell them
        conn.execute(
            schema.release_marks.insert().values(
                model=model, version=version, action=action, actor=actor, reason=reason,
                at=when,
            )
        )  # fmt: skip
        audit.append(
            conn, f"release.{action}ed-good", model=model, actor=actor,
            reason=reason or f"{action}ed known-good", data={"version": version}, at=when,
        )  # fmt: skip

    def quarantine(self, ref: str, *, actor: str, reason: str, lift: bool = False) -> Release:
        """Bar a release from traffic (or, with ``lift``, allow it again), with the reason.

        Gateways learn of it at once: a request pinned to a quarantined release gets 409.
        """
        model, version = parse_ref(ref)
        if not lift and not reason:
            raise ValidationError(f"quarantining {ref} needs a reason: pass --reason")
        with self.store.write() as conn:
            row = self._require(conn, model, version)
            values: dict[str, Any] = {"quarantined": None if lift else reason}
            if not lift:
                values["known_good"] = False  # a quarantined release is no rollback point
            conn.execute(R.update().where(R.c.id == row.id).values(**values))
            bump_generation(conn)
            audit.append(
                conn, "release.quarantine-lifted" if lift else "release.quarantined",
                model=model, actor=actor, reason=reason or "lifted", data={"version": version},
            )  # fmt: skip
        return self.get(ref)

    def mark_bad(self, ref: str, *, actor: str, reason: str) -> Release:
        """Mark a release bad by hand: no rollback targets it, deploying it needs an override."""
        model, version = parse_ref(ref)
        reason = badmarks.require_reason(reason, f"marking {ref} bad")
        with self.store.write() as conn:
            self._require(conn, model, version)
            badmarks.record_bad(conn, model, version, evidence=reason,
                                actor=actor, source="hand", at=self.clock())  # fmt: skip
        return self.get(ref)

    def clear_bad(self, ref: str, *, actor: str, reason: str) -> Release:
        """Lift a release's bad mark, with the reason. It does not become known-good again."""
        model, version = parse_ref(ref)
        reason = badmarks.require_reason(reason, f"clearing {ref}'s bad mark")
        with self.store.write() as conn:
            self._require(conn, model, version)
            if not badmarks.clear_bad_in(conn, model, version, actor=actor, reason=reason,
                                         at=self.clock()):  # fmt: skip
                raise badmarks.not_bad(ref)
        return self.get(ref)

    def delete(self, ref: str, *, actor: str, reason: str) -> None:
        """Delete a release that has never served production traffic."""
        model, version = parse_ref(ref)
        with self.store.write() as conn:
            row = self._require(conn, model, version)
            if row.first_served_at is not None:
                since = f"{as_utc(row.first_served_at):%Y-%m-%d %H:%M}"
                raise ReleaseInUse(
                    f"{ref} has served production traffic (since {since} UTC) and can never be "
                    "deleted; quarantine it instead"
                )
            conn.execute(R.delete().where(R.c.id == row.id))
            audit.append(
                conn, "release.deleted", model=model, actor=actor, reason=reason,
                data={"version": version, "digest": row.digest},
            )  # fmt: skip

    @staticmethod
    def mark_served(conn: Connection, model: str, versions: Sequence[str]) -> None:
        """Record that these releases now take production traffic (inside a write)."""
        conn.execute(
            R.update()
            .where(
                R.c.model == model, R.c.version.in_(list(versions)), R.c.first_served_at.is_(None)
            )
            .values(first_served_at=datetime.now(UTC))
        )

    # -- reading -----------------------------------------------------------------------

    def get(self, ref: str) -> Release:
        model, version = parse_ref(ref)
        with self.store.read() as conn:
            return _release(self._require(conn, model, version))

    def list(
        self,
        model: str | None = None,
        *,
        owner: str | None = None,
        known_good: bool | None = None,
        runtime: str | None = None,
        limit: int | None = None,
    ) -> builtins.list[Release]:
        """Releases, newest first, with optional filters."""
        q = sa.select(R).order_by(R.c.registered_at.desc(), R.c.id.desc())
        if model is not None:
            q = q.where(R.c.model == check_model_name(model))
        if known_good is not None:
            q = q.where(R.c.known_good == known_good)
        with self.store.read() as conn:
            rows = [_release(r) for r in conn.execute(q)]
        if owner is not None:
            rows = [r for r in rows if r.manifest.owner == owner]
        if runtime is not None:
            rows = [r for r in rows if r.manifest.runtime.kind == runtime]
        return rows[:limit] if limit is not None else rows

    def models(self) -> builtins.list[str]:
        with self.store.read() as conn:
            return list(conn.execute(sa.select(R.c.model).distinct().order_by(R.c.model)).scalars())

    def marks(self, ref: str) -> builtins.list[Mark]:
        """The history of known-good marks of a release, oldest first."""
        model, version = parse_ref(ref)
        M = schema.release_marks
        with self.store.read() as conn:
            self._require(conn, model, version)
            rows = conn.execute(
                sa.select(M).where(M.c.model == model, M.c.version == version).order_by(M.c.id)
            )
            return [
                Mark(r.model, r.version, r.action, r.actor, r.reason, as_utc(r.at)) for r in rows
            ]

    def verify(self, ref: str) -> VerifyReport:
        """Re-hash the stored manifest and every artifact; report each mismatch."""
        model, version = parse_ref(ref)
        with self.store.read() as conn:
            row = self._require(conn, model, version)
        report = VerifyReport(ref=f"{model}@{version}", digest=row.digest)
        body = row.manifest.encode()
        actual = hashlib.sha256(body).hexdigest()
        report.checked.append("manifest")
        if actual != row.digest:
            report.problems.append(
                f"manifest: stored manifest hashes to sha256:{actual[:12]}…, "
                f"expected sha256:{row.digest[:12]}… (the manifest was changed)"
            )
        try:
            manifest = manifest_from_json(body)
        except Exception as exc:
            report.problems.append(
                f"manifest: cannot be parsed any more ({exc.__class__.__name__})"
            )
            return report
        for a in manifest.artifacts:
            report.checked.append(a.path)
            if not self.blobs.exists(a.sha256):
                report.problems.append(f"{a.path}: blob sha256:{a.sha256[:12]}… is missing")
            elif not self.blobs.verify(a.sha256):
                report.problems.append(
                    f"{a.path}: bytes no longer hash to sha256:{a.sha256[:12]}… (corrupt)"
                )
        return report

    # -- helpers -----------------------------------------------------------------------

    @staticmethod
    def _row(conn: Connection, model: str, version: str) -> Any:
        return conn.execute(sa.select(R).where(R.c.model == model, R.c.version == version)).first()

    def _require(self, conn: Connection, model: str, version: str) -> Any:
        row = self._row(conn, model, version)
        if row is None:
            known = list(
                conn.execute(
                    sa.select(R.c.version)
                    .where(R.c.model == model)
                    .order_by(R.c.id.desc())
                    .limit(10)
                ).scalars()
            )
            hint = (
                f"registered versions: {', '.join(known)}"
                if known
                else f"model {model!r} has no releases"
            )
            raise ReleaseNotFound(f"release {model}@{version} is not registered ({hint})")
        return row


def pin_runtime(runtime: Runtime) -> Runtime:
    """Resolve what could move under a release to what it is now, so the release never changes.

    An MLflow ``models:/name@alias`` (or a version) is resolved once, at registration, and
    the concrete version is recorded in the runtime options: moving the alias later never
    changes what this release serves.
    """
    if runtime.kind != RuntimeKind.MLFLOW or "version" in runtime.options:
        return runtime
    uri = runtime.options.get("uri")
    if not isinstance(uri, str):
        raise ValidationError(
            "an mlflow release needs the runtime option uri=models:/NAME@ALIAS or models:/NAME/VERSION"
        )
    from backout.registry.mlflow import resolve_mlflow_uri

    resolved, version = resolve_mlflow_uri(
        uri,
        tracking_uri=runtime.options.get("tracking_uri"),
        registry_uri=runtime.options.get("registry_uri"),
    )
    return Runtime(
        kind=runtime.kind, options={**runtime.options, "version": version, "resolved_uri": resolved}
    )


def _release(row: Any) -> Release:
    return Release(
        manifest=manifest_from_json(row.manifest),
        digest=row.digest,
        registered_at=as_utc(row.registered_at),
        known_good=bool(row.known_good),
        first_served_at=as_utc(row.first_served_at) if row.first_served_at else None,
        quarantined=row.quarantined,
        bad=badmarks.bad_of(row),
    )
