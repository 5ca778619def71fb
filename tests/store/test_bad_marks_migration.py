"""The bad-marks migration upgrades a store in use: every release, mark and event is kept."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy.engine import make_url

from backout.registry import badmarks
from backout.registry.artifacts import LocalBlobStore
from backout.registry.manifest import Artifact, ReleaseManifest, Runtime, RuntimeKind
from backout.registry.releases import Registry
from backout.store import audit, open_store
from backout.store.engine import MIGRATIONS

REVISION = "0008"


def test_upgrading_an_existing_store_keeps_its_releases_and_marks(
    store_url: str, tmp_path: Path
) -> None:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    before = ScriptDirectory.from_config(cfg).get_revision(REVISION).down_revision
    assert isinstance(before, str)
    # A store as the release before this migration left it, with a release in use.
    url = make_url(store_url)
    if url.drivername == "postgresql":
        url = url.set(drivername="postgresql+psycopg")
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, before)
        conn.commit()
        assert "bad" not in {c["name"] for c in sa.inspect(conn).get_columns("releases")}
    file = tmp_path / "model.bin"
    file.write_bytes(b"weights")
    blobs = LocalBlobStore(tmp_path / "artifacts")
    digest, size = blobs.put_file(file)
    manifest = ReleaseManifest(
        model="iris", version="1.0.0", artifacts=(Artifact(path="model.bin", sha256=digest, size=size),),
        runtime=Runtime(kind=RuntimeKind.SKLEARN),
    )  # fmt: skip
    body = manifest.canonical()
    now = datetime.now(UTC)
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO releases (model, version, digest, content_digest, manifest, "
                "registered_at, first_served_at, known_good, quarantined) VALUES ('iris', "
                "'1.0.0', :d, :c, :m, :at, :at, :kg, NULL)"
            ),
            {"d": hashlib.sha256(body).hexdigest(), "c": manifest.content_digest(),
             "m": body.decode(), "at": now, "kg": True},
        )  # fmt: skip
        conn.execute(
            sa.text(
                "INSERT INTO release_marks (model, version, action, actor, reason, at) "
                "VALUES ('iris', '1.0.0', 'mark', 'ana', 'first', :at)"
            ),
            {"at": now},
        )
        audit.append(conn, "release.registered", model="iris", actor="ana", data={})
    engine.dispose()

    store = open_store(store_url)  # migrates to the head
    try:
        reg = Registry(store, blobs)
        rel = reg.get("iris@1.0.0")
        assert rel.known_good and rel.bad is None and rel.first_served_at is not None
        assert [m.reason for m in reg.marks("iris@1.0.0")] == ["first"]
        with store.write() as conn:
            badmarks.record_bad(conn, "iris", "1.0.0", evidence="gate failed", actor="ctl",
                                operation=3, source="gate")  # fmt: skip
        rel = reg.get("iris@1.0.0")
        assert rel.bad is not None and (rel.bad.evidence, rel.bad.operation) == ("gate failed", 3)
        assert not rel.known_good
        with store.read() as conn:
            assert audit.verify_chain(conn) == []
            kinds = [e.kind for e in audit.list_events(conn)]
        assert kinds == ["release.registered", "release.marked-bad"]
    finally:
        store.dispose()
