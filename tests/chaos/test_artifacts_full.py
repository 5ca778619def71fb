"""The artifact folder full (a 1 MiB tmpfs mounted by the test): registering a larger
artifact fails in one line and leaves the store and the folder as they were."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import joblib
import numpy as np
import pytest

from backout.registry.artifacts import LocalBlobStore
from backout.registry.releases import Registry
from backout.store import open_store
from tests.chaos.served import backout, one_line
from tests.models import register_iris


@pytest.fixture
def full_folder(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs, unmounted when the test ends; skipped where mounting is not allowed."""
    folder = tmp_path / "artifacts"
    folder.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m,mode=0700", "tmpfs", str(folder)],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {mounted.stderr.strip() or 'no mount'}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=True, timeout=30)


def _files(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_size for p in folder.rglob("*") if p.is_file()}


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_registering_into_a_full_artifact_folder_fails_in_one_line_and_changes_nothing(
    tmp_path: Path, full_folder: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'store.db'}"
    store = open_store(url, create=True)
    register_iris(Registry(store, LocalBlobStore(full_folder)), tmp_path / "models", "1.0.0")
    with store.read() as conn:
        before = {t: [tuple(r) for r in conn.exec_driver_sql(f"SELECT * FROM {t}")]
                  for t in ("releases", "events")}  # fmt: skip
    files = _files(full_folder)
    big = tmp_path / "big.joblib"
    model = joblib.load(tmp_path / "models" / "iris-1.0.0.joblib")
    model.padding_ = np.random.default_rng(1).random(300_000)  # 2.4 MB: more than the folder
    joblib.dump(model, big)
    result = backout(url, full_folder, "release", "register", "iris", "2.0.0",
                     "--artifact", str(big), "--runtime", "sklearn")  # fmt: skip
    print(f"register into a full folder: rc {result.returncode} {result.stderr.strip()!r}")
    assert result.returncode != 0 and one_line(result), result.stderr
    # The store is to blame, not the source file, and the line says which folder.
    assert "artifact store" in result.stderr and "is full" in result.stderr, result.stderr
    assert str(full_folder) in result.stderr and "could not be read" not in result.stderr
    with store.read() as conn:
        after = {t: [tuple(r) for r in conn.exec_driver_sql(f"SELECT * FROM {t}")]
                 for t in ("releases", "events")}  # fmt: skip
    store.dispose()
    assert after == before  # no release row, no event
    assert _files(full_folder) == files  # no partial blob, no temporary file left behind
    listed = backout(url, full_folder, "release", "list", "iris")
    assert listed.returncode == 0 and "2.0.0" not in listed.stdout, listed.stdout
