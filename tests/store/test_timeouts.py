"""Every wait on the store is bounded: a PostgreSQL address that never answers is one line
within seconds, without the password."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from backout.errors import StoreUnavailable
from backout.store import open_store
from backout.store.engine import CONNECT_TIMEOUT_S
from tests.silent import silent_server

SECRET = "PLANTEDpassw0rd"


@pytest.mark.timeout(60)
def test_status_against_a_server_that_never_answers_fails_in_seconds_with_one_line() -> None:
    with silent_server() as port:
        url = f"postgresql+psycopg://ana:{SECRET}@127.0.0.1:{port}/backout"
        started = time.monotonic()
        done = subprocess.run(
            [sys.executable, "-m", "backout", "--store", url, "status"],
            capture_output=True, text=True, timeout=45, env=os.environ.copy(),
        )  # fmt: skip
        took = time.monotonic() - started
    assert done.returncode != 0 and done.stdout == ""
    assert done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith(
        f"error: cannot open store 'postgresql+psycopg://ana:***@127.0.0.1:{port}/backout'"
    )
    assert SECRET not in done.stderr
    assert took < CONNECT_TIMEOUT_S * 2 + 5, took


@pytest.mark.timeout(30)
def test_a_url_may_set_its_own_connect_timeout() -> None:
    with silent_server() as port:
        started = time.monotonic()
        with pytest.raises(StoreUnavailable, match="timeout"):
            open_store(f"postgresql+psycopg://ana@127.0.0.1:{port}/backout?connect_timeout=1")
        assert time.monotonic() - started < 4


@pytest.mark.postgres
def test_a_statement_slower_than_the_timeout_is_store_unavailable(postgres: object) -> None:
    url = postgres.create_database()  # type: ignore[attr-defined]
    store = open_store(f"{url}?options=-c%20statement_timeout%3D200", create=True)
    import sqlalchemy as sa

    with pytest.raises(StoreUnavailable, match="statement timeout"), store.read() as conn:
        conn.execute(sa.text("SELECT pg_sleep(5)"))
    store.dispose()
