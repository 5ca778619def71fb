"""Opening a store: only `init` creates one, owner-only, with an identity; a moved file is
an outage, never a new store."""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

import pytest

from backout.cli import main
from backout.errors import StoreMissing, StoreUnavailable
from backout.store import open_store, read_identity


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    try:
        main(list(args))
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


READ_COMMANDS = [
    ("status",),
    ("status", "--json"),
    ("release", "list"),
    ("history", "fraud"),
    ("release", "register", "fraud", "1.0.0", "--artifact", "/dev/null"),
    ("consumers", "list", "fraud"),
    ("deploy", "fraud@1.0.0"),
    ("rollback", "fraud", "--emergency"),
    ("serve", "--port", "1"),  # a gateway opens an existing store too (`serve --init` creates)
]


@pytest.mark.parametrize("command", READ_COMMANDS, ids=" ".join)
def test_no_command_but_init_creates_a_store(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, command: tuple[str, ...]
) -> None:
    path = tmp_path / "typo" / "backout.db"
    code, out, err = run(capsys, "--store", f"sqlite:///{path}", *command)
    assert code != 0 and out == ""
    assert err.count("\n") == 1, err
    assert err.startswith(f"error: no store at '{path}': create it with `backout init`")
    assert not path.parent.exists()  # not the file, not even its folder


def test_a_database_without_backout_tables_is_not_a_store(
    capsys: pytest.CaptureFixture[str], store_url: str
) -> None:
    """An empty file or an empty PostgreSQL database is refused, and left empty."""
    if store_url.startswith("sqlite"):
        Path(store_url.removeprefix("sqlite:///")).touch()
    code, _, err = run(capsys, "--store", store_url, "status")
    assert code != 0 and err.count("\n") == 1
    assert "is not a backout store" in err and "`backout init`" in err
    with pytest.raises(StoreMissing):
        open_store(store_url)  # still not one: nothing was migrated into it
    code, out, _ = run(capsys, "--store", store_url, "init")
    assert code == 0 and out.rstrip().endswith("ready.")
    open_store(store_url).dispose()


def test_init_makes_the_store_and_the_artifacts_owner_only(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    home = tmp_path / "ws" / ".backout"
    code, _, err = run(
        capsys, "--store", f"sqlite:///{home / 'backout.db'}", "--artifacts",
        str(home / "artifacts"), "init",
    )  # fmt: skip
    assert code == 0, err
    mode = lambda p: stat.S_IMODE(p.stat().st_mode)  # noqa: E731
    assert mode(home) == 0o700 and mode(tmp_path / "ws") == 0o700
    assert mode(home / "backout.db") == 0o600
    assert mode(home / "artifacts") == 0o700
    # SQLite's journal files take the database file's mode.
    for f in home.iterdir():
        if f.is_file():
            assert mode(f) == 0o600, f


def test_each_store_has_its_own_identity_written_once(tmp_path: Path) -> None:
    a = open_store(f"sqlite:///{tmp_path / 'a.db'}", create=True)
    b = open_store(f"sqlite:///{tmp_path / 'b.db'}", create=True)
    again = open_store(f"sqlite:///{tmp_path / 'a.db'}", create=True)
    with a.read() as ca, b.read() as cb, again.read() as cc:
        ida, idb, idc = read_identity(ca), read_identity(cb), read_identity(cc)
    assert ida and idb and ida != idb and ida == idc
    for s in (a, b, again):
        s.dispose()


def test_a_store_file_moved_away_is_unavailable_and_returns_by_itself(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    store = open_store(f"sqlite:///{path}", create=True)
    with store.read() as conn:
        identity = read_identity(conn)
    os.rename(path, tmp_path / "away.db")
    with pytest.raises(StoreUnavailable) as info, store.read():
        pass
    assert str(path) in str(info.value)
    assert not path.exists()  # a read never creates the file
    os.rename(tmp_path / "away.db", path)
    with store.read() as conn:
        assert read_identity(conn) == identity
    store.dispose()


def test_pooled_connections_never_read_a_file_that_replaced_theirs(tmp_path: Path) -> None:
    """A connection opened before the file was replaced reads the file now at the path."""
    path = tmp_path / "store.db"
    store = open_store(f"sqlite:///{path}", create=True)
    other = open_store(f"sqlite:///{tmp_path / 'other.db'}", create=True)
    with store.read() as conn:  # leaves a pooled connection on the original file
        original = read_identity(conn)
    with other.read() as conn:
        replacement = read_identity(conn)
    other.dispose()
    (tmp_path / "original").mkdir()
    for f in tmp_path.glob("store.db*"):  # the database with its journal files
        shutil.move(f, tmp_path / "original" / f.name)
    shutil.copy(tmp_path / "other.db", path)
    with store.read() as conn:
        assert read_identity(conn) == replacement != original
    store.dispose()
