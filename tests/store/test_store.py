"""Opening the store: migrations, URLs, and errors that hide passwords."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from backout.errors import StoreUnavailable
from backout.store import Store, open_store, redact_url
from backout.store.engine import MIGRATIONS
from backout.store.schema import metadata


def test_migrations_create_exactly_the_declared_schema(store: Store) -> None:
    with store.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), metadata)
    assert diff == []


def test_opening_twice_is_a_no_op(store_url: str) -> None:
    open_store(store_url, create=True).dispose()
    s = open_store(store_url, create=True)
    with s.read() as conn:
        head = max(p.name[:4] for p in MIGRATIONS.glob("versions/0*.py"))
        assert conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar() == head
    s.dispose()


@pytest.mark.databases("sqlite")
def test_sqlite_runs_in_wal_mode_with_foreign_keys(store: Store) -> None:
    with store.read() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1


def test_an_unreachable_store_names_the_url_without_its_password() -> None:
    url = "postgresql+psycopg://ana:hunter2@127.0.0.1:1/backout"
    with pytest.raises(StoreUnavailable) as info:
        open_store(url)
    assert "hunter2" not in str(info.value)
    assert "ana:***@127.0.0.1:1/backout" in str(info.value)


def test_an_unknown_scheme_is_refused() -> None:
    with pytest.raises(StoreUnavailable, match="sqlite or postgresql"):
        open_store("mysql://x@localhost/db")


def test_garbage_is_not_a_url() -> None:
    with pytest.raises(StoreUnavailable, match="not a URL"):
        open_store("::::")


def test_redact_url_hides_the_password() -> None:
    assert redact_url("postgresql://u:pw@h/db") == "postgresql://u:***@h/db"


def test_a_failed_write_leaves_the_store_as_it_was(store: Store) -> None:
    from backout.store import audit

    with pytest.raises(RuntimeError), store.write() as conn:
        audit.append(conn, "test", model=None, actor="t")
        raise RuntimeError("boom")
    with store.read() as conn:
        assert audit.list_events(conn) == []
