"""Cheap reads and a bounded audit of refusals.

Refused attempts are still audited, but repeats of one refusal become one summary event per
window, so a client without credentials cannot flood the hash-chained log. Reads reuse what
they computed while the store's generation stays: a revoked token is refused at once, and
a change that writes an event shows in ``status`` at once.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from backout.api import tokens
from backout.api.attempts import Attempts
from backout.api.roles import make_grant
from backout.store import Store, audit
from tests.api.world import Template, app_for, close_app, copy_store, make_template
from tests.loopback import serve

pytestmark = pytest.mark.databases("sqlite")


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Template:
    return make_template(tmp_path_factory.mktemp("api-reads"))


@pytest.fixture
def api(template: Template, tmp_path: Path) -> Iterator[tuple[Any, httpx.Client]]:
    app = app_for(template, copy_store(template, f"reads-{tmp_path.name}"))
    with serve(app, lifespan="off") as url, httpx.Client(base_url=f"{url}/api/v1") as c:
        yield app, c
    close_app(app)


def events(store: Store, kind: str) -> list[audit.Event]:
    with store.read() as conn:
        return [e for e in audit.list_events(conn, None) if e.kind == kind]


def test_a_flood_of_anonymous_requests_is_audited_as_one_event_per_window(api: Any) -> None:
    app, c = api
    st = app.state.backout
    before = len(events(st.store, "access.unauthenticated"))
    for i in range(60):
        assert c.get(f"/models/m{i}/status").status_code == 401
        bad = c.get("/whoami", headers={"Authorization": f"Bearer bko_{i:08x}_" + "y" * 43})
        assert bad.status_code == 401
    written = events(st.store, "access.unauthenticated")[before:]
    # The first refusal of each kind (no credentials; a wrong token) is written at once.
    assert [e.data["route"] for e in written] == [
        "GET /api/v1/models/m0/status",
        "GET /api/v1/whoami",
    ]
    assert st.attempts.flush(everything=True) == 2
    summaries = events(st.store, "access.unauthenticated")[before + 2 :]
    assert sorted(e.data["repeats"] for e in summaries) == [59, 59]
    by_token = next(e for e in summaries if "token_ids" in e.data)
    assert by_token.actor == "anonymous" and len(by_token.data["token_ids"]) == 5
    assert "y" * 20 not in str([e.to_dict() for e in summaries])  # secrets never logged
    anon = next(e for e in summaries if "token_ids" not in e.data)
    assert len(anon.data["routes"]) == 5 and "59 more refused attempt(s)" in anon.reason
    with st.store.read() as conn:
        assert audit.verify_chain(conn) == []


def test_repeated_denials_of_one_principal_are_summed_and_each_still_answers_403(
    api: Any,
) -> None:
    app, c = api
    st = app.state.backout
    viewer = tokens.create(st.store, [make_grant("viewer", ["*"])], actor="setup", name="vic")
    auth = {"Authorization": f"Bearer {viewer.token}"}
    before = len(events(st.store, "access.denied"))
    for _ in range(20):
        r = c.post("/models/iris/freeze", json={"reason": "x"}, headers=auth)
        assert r.status_code == 403 and r.json()["error"]["right"] == "freeze"
    assert len(events(st.store, "access.denied")) == before + 1
    st.attempts.flush(everything=True)
    last = events(st.store, "access.denied")[-1]
    assert last.actor == "vic" and last.model == "iris" and last.data["repeats"] == 19


def test_a_window_ends_and_the_next_refusal_is_written_at_once(store: Store) -> None:
    now = [1000.0]
    att = Attempts(store, interval=60.0, clock=lambda: now[0])

    def refuse() -> bool:
        return att.record("access.unauthenticated", ("10.0.0.1", "none"), source="10.0.0.1",
                          model=None, actor="anonymous", reason="GET /x: no credentials",
                          data={"route": "GET /x"})  # fmt: skip

    assert refuse() and not refuse() and not refuse()
    now[0] += 61
    assert refuse()  # a new window: the old one's summary, then this one, both written
    kinds = events(store, "access.unauthenticated")
    assert [e.data.get("repeats") for e in kinds] == [None, 2, None]
    assert att.flush() == 0  # nothing repeated in the open window


def test_the_number_of_open_windows_is_bounded(store: Store) -> None:
    att = Attempts(store, max_keys=3)
    for i in range(50):
        att.record("access.unauthenticated", (f"10.0.0.{i}", "none"), source=f"10.0.0.{i}",
                   model=None, actor="anonymous", reason="no credentials", data={})  # fmt: skip
    # Three sources have windows of their own; the rest share one.
    assert len(events(store, "access.unauthenticated")) == 4
    assert att.flush(everything=True) == 1
    assert events(store, "access.unauthenticated")[-1].data["repeats"] == 46


def test_a_revoked_token_is_refused_at_once_and_status_shows_a_freeze_at_once(
    api: Any,
) -> None:
    app, c = api
    st = app.state.backout
    made = tokens.create(st.store, [make_grant("responder", ["*"])], actor="setup", name="rita")
    auth = {"Authorization": f"Bearer {made.token}"}
    first = c.get("/models/iris/status", headers=auth)
    assert first.status_code == 200 and first.json()["frozen"] is None
    assert c.get("/models/iris/status", headers=auth).json() == first.json()  # from the cache
    assert c.post("/models/iris/freeze", json={"reason": "hold"}, headers=auth).status_code == 200
    assert c.get("/models/iris/status", headers=auth).json()["frozen"]
    tokens.revoke(st.store, made.info.id, actor="setup")
    assert c.get("/models/iris/status", headers=auth).status_code == 401


def test_one_reader_refreshes_a_view_while_the_others_get_the_one_they_have() -> None:
    from backout.api.readcache import ReadCache

    now = [0.0]
    cache: ReadCache[str] = ReadCache(ttl=1.0, clock=lambda: now[0])
    cache.put("k", 7, "old")
    now[0] = 1.5
    assert cache.get("k", 7) is None  # past its time to live
    assert cache.claim("k") and not cache.claim("k")  # one refresh at a time
    assert cache.stale("k", 7, max_age=3.0) == "old"
    assert cache.stale("k", 8, max_age=3.0) is None  # the store changed: never the old one
    cache.release("k")
    assert cache.claim("k")
