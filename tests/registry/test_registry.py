"""The release registry on SQLite and PostgreSQL: immutability, verify, marks, deletion."""

from __future__ import annotations

import multiprocessing as mp
import os
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from backout.errors import ReleaseExists, ReleaseInUse, ReleaseNotFound
from backout.registry.artifacts import LocalBlobStore
from backout.registry.releases import Registry
from backout.store import audit, open_store, schema


def test_register_then_get_returns_the_manifest(registry: Registry, artifact: Path) -> None:
    result = registry.register("fraud", "1.0.0", [artifact], owner="risk", changelog="first")
    assert result.created
    rel = registry.get("fraud@1.0.0")
    assert rel.manifest.owner == "risk"
    assert rel.manifest.artifacts[0].path == "model.bin"
    assert rel.digest == result.release.digest


def test_identical_content_again_is_a_no_op(registry: Registry, artifact: Path) -> None:
    first = registry.register("fraud", "1.0.0", [artifact])
    again = registry.register("fraud", "1.0.0", [artifact])
    assert not again.created
    assert again.release.digest == first.release.digest
    with registry.store.read() as conn:
        assert len(audit.list_events(conn, "fraud")) == 1


def test_other_bytes_under_the_same_version_are_refused(
    registry: Registry, artifact: Path, tmp_path: Path
) -> None:
    registry.register("fraud", "1.0.0", [artifact])
    other = tmp_path / "other" / "model.bin"
    other.parent.mkdir()
    other.write_bytes(b"different weights")
    with pytest.raises(ReleaseExists, match="already registered with other content"):
        registry.register("fraud", "1.0.0", [other])
    assert registry.get("fraud@1.0.0").manifest.artifacts[0].size == artifact.stat().st_size


def test_list_is_newest_first_and_filters(registry: Registry, artifact: Path) -> None:
    registry.register("fraud", "1.0.0", [artifact], owner="a")
    registry.register("fraud", "1.1.0", [artifact], owner="b")
    registry.register("churn", "0.1.0", [artifact], owner="a")
    assert [r.version for r in registry.list("fraud")] == ["1.1.0", "1.0.0"]
    assert [r.ref for r in registry.list(owner="a")] == ["churn@0.1.0", "fraud@1.0.0"]
    registry.mark_good("fraud@1.0.0", actor="t")
    assert [r.ref for r in registry.list(known_good=True)] == ["fraud@1.0.0"]
    assert registry.models() == ["churn", "fraud"]


def test_an_unknown_release_names_the_versions_that_exist(
    registry: Registry, artifact: Path
) -> None:
    registry.register("fraud", "1.0.0", [artifact])
    with pytest.raises(ReleaseNotFound, match=r"registered versions: 1\.0\.0"):
        registry.get("fraud@9.9.9")


def test_verify_passes_on_an_intact_release(registry: Registry, artifact: Path) -> None:
    registry.register("fraud", "1.0.0", [artifact])
    report = registry.verify("fraud@1.0.0")
    assert report.ok and report.checked == ["manifest", "model.bin"]


def test_verify_catches_one_flipped_byte_in_an_artifact(
    registry: Registry, artifact: Path, blobs: LocalBlobStore
) -> None:
    rel = registry.register("fraud", "1.0.0", [artifact]).release
    path = blobs.blob_path(rel.manifest.artifacts[0].sha256)
    os.chmod(path, 0o644)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x80
    path.write_bytes(bytes(data))
    report = registry.verify("fraud@1.0.0")
    assert not report.ok
    assert report.problems[0].startswith("model.bin:")


def test_verify_catches_one_flipped_byte_in_the_manifest(
    registry: Registry, artifact: Path
) -> None:
    registry.register("fraud", "1.0.0", [artifact], changelog="first")
    with registry.store.engine.begin() as conn:
        text = conn.execute(sa.select(schema.releases.c.manifest)).scalar_one()
        flipped = text.replace('"first"', '"firsu"')
        conn.execute(schema.releases.update().values(manifest=flipped))
    report = registry.verify("fraud@1.0.0")
    assert not report.ok
    assert report.problems[0].startswith("manifest:")


def test_mark_and_unmark_keep_a_history(registry: Registry, artifact: Path) -> None:
    registry.register("fraud", "1.0.0", [artifact])
    assert registry.mark_good("fraud@1.0.0", actor="ana", reason="rollout done").known_good
    assert not registry.mark_good("fraud@1.0.0", actor="bo", good=False).known_good
    marks = registry.marks("fraud@1.0.0")
    assert [(m.action, m.actor) for m in marks] == [("mark", "ana"), ("unmark", "bo")]


def test_a_release_that_never_served_can_be_deleted(registry: Registry, artifact: Path) -> None:
    registry.register("fraud", "1.0.0", [artifact])
    registry.delete("fraud@1.0.0", actor="ana", reason="typo")
    with pytest.raises(ReleaseNotFound):
        registry.get("fraud@1.0.0")


def test_a_release_that_served_traffic_can_never_be_deleted(
    registry: Registry, artifact: Path
) -> None:
    registry.register("fraud", "1.0.0", [artifact])
    with registry.store.write() as conn:
        Registry.mark_served(conn, "fraud", ["1.0.0"])
    with pytest.raises(ReleaseInUse, match="can never be deleted"):
        registry.delete("fraud@1.0.0", actor="ana", reason="cleanup")
    assert registry.get("fraud@1.0.0").first_served_at is not None


def test_every_change_appends_a_verifiable_event(registry: Registry, artifact: Path) -> None:
    registry.register("fraud", "1.0.0", [artifact], actor="ana")
    registry.mark_good("fraud@1.0.0", actor="bo", reason="ok")
    with registry.store.read() as conn:
        events = audit.list_events(conn, "fraud")
        assert audit.verify_chain(conn) == []
    assert [(e.kind, e.actor) for e in events] == [
        ("release.registered", "ana"),
        ("release.marked-good", "bo"),
    ]


def _race(url: str, root: str, file: str, barrier: Any, results: Any) -> None:
    registry = Registry(open_store(url), LocalBlobStore(Path(root)))
    barrier.wait()
    try:
        registry.register("fraud", "2.0.0", [Path(file)])
        results.put("created")
    except ReleaseExists:
        results.put("refused")


def test_two_processes_registering_one_version_exactly_one_wins(
    store_url: str, tmp_path: Path
) -> None:
    open_store(store_url, create=True).dispose()  # migrate first, as `backout init` would
    ctx = mp.get_context("spawn")
    files = []
    for i in range(2):
        f = tmp_path / f"p{i}" / "model.bin"
        f.parent.mkdir()
        f.write_bytes(f"weights from process {i}".encode() * 1000)
        files.append(str(f))
    barrier = ctx.Barrier(2)
    results = ctx.Queue()
    procs = [
        ctx.Process(target=_race, args=(store_url, str(tmp_path / "a"), f, barrier, results))
        for f in files
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    outcomes = sorted(results.get(timeout=5) for _ in procs)
    assert outcomes == ["created", "refused"]
    store = open_store(store_url, create=True)
    with store.read() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(schema.releases)).scalar() == 1
        assert len(audit.list_events(conn)) == 1
        assert audit.verify_chain(conn) == []
    store.dispose()
