"""The status page, its feed and summary, and the dashboard's login, pages and buttons."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from backout.api.app import create_app
from backout.control.incidents import Incidents
from tests.api.pages_world import Pages, make_pages
from tests.control.world import FakeProber
from tests.loopback import serve

HOSTILE = '<script>alert("x")</script> & <img src=x onerror=alert(1)>'


@pytest.fixture
def pages(tmp_path: Path) -> Iterator[Pages]:
    p = make_pages(tmp_path)
    yield p
    p.controller.close()
    p.store.dispose()


@pytest.fixture
def client(pages: Pages) -> Iterator[httpx.Client]:
    app = create_app(pages.url, artifacts=pages.folder / "artifacts", prober=FakeProber())
    with serve(app) as url, httpx.Client(base_url=url, timeout=30) as c:
        c.app = app  # type: ignore[attr-defined]
        yield c


def login(client: httpx.Client, pages: Pages, role: str) -> None:
    r = client.post("/dashboard/login", data={"token": pages.tokens[role]}, follow_redirects=False)
    assert r.status_code == 303, r.text


def test_the_status_page_needs_no_login_and_is_operational(client: httpx.Client) -> None:
    r = client.get("/status")
    assert r.status_code == 200 and "All Systems Operational" in r.text
    doc = client.get("/status/summary.json").json()
    assert doc["components"][0]["status"] == "operational"
    assert doc["components"][0]["name"] == "Iris <b>scoring</b>"


def test_the_status_page_and_feed_escape_hostile_text(client: httpx.Client, pages: Pages) -> None:
    pages.controller.rollback("iris", actor="oncall", reason=HOSTILE)
    Incidents(pages.store).add_update("iris", "identified", HOSTILE, actor="ana")
    client.app.state.backout.extra.pop("status_summary", None)  # type: ignore[attr-defined]
    html = client.get("/status").text
    assert "<script>alert" not in html and "<img src=x" not in html and "<b>scoring" not in html
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in html
    assert "Iris &lt;b&gt;scoring&lt;/b&gt;" in html
    assert "degraded performance" in html  # a 10% canary rolled back at once: verifying
    feed = client.get("/status/feed.atom")
    assert feed.headers["content-type"].startswith("application/atom+xml")
    assert b"<script>" not in feed.content
    root = ET.fromstring(feed.content)
    ns = {"a": "http://www.w3.org/2005/Atom"}
    contents = [e.text for e in root.findall("a:entry/a:content", ns)]
    assert HOSTILE in contents  # the text survives, as text
    assert "1.1.0" not in feed.text and "1.0.0" not in client.get("/status").text


def test_a_bad_token_is_refused_at_login_and_a_good_one_is_kept_httponly(
    client: httpx.Client, pages: Pages
) -> None:
    r = client.post("/dashboard/login", data={"token": "bko_nope_nope"})
    assert r.status_code == 401 and "login-error" in r.text
    assert client.get("/dashboard", follow_redirects=False).status_code == 303
    r = client.post("/dashboard/login", data={"token": pages.tokens["viewer"]},
                    follow_redirects=False)  # fmt: skip
    cookie = r.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie
    page = client.get("/dashboard")
    assert page.status_code == 200 and 'data-model="iris"' in page.text
    assert pages.tokens["viewer"] not in page.text


def test_a_viewer_gets_no_actions_and_a_responder_gets_rollback(
    client: httpx.Client, pages: Pages
) -> None:
    login(client, pages, "viewer")
    assert client.get("/dashboard/models/iris/live").json()["actions"] == []
    login(client, pages, "responder")
    live = client.get("/dashboard/models/iris/live").json()
    keys = [a["key"] for a in live["actions"]]
    assert keys == ["rollback", "rollback-emergency", "abort", "pause", "freeze"]
    assert "promote" not in keys  # a releaser's right
    rollback = live["actions"][0]
    assert rollback["path"] == "/api/v1/models/iris/rollback"
    assert "from 1.1.0 to 1.0.0" in rollback["confirm"]
    assert {"weights", "errors", "latency"} <= set(live["charts"])
    assert live["charts"]["weights"].startswith("<svg")


def test_the_model_page_renders_and_its_data_is_escaped(client: httpx.Client, pages: Pages) -> None:
    pages.controller.rollback("iris", actor="oncall", reason=HOSTILE)
    login(client, pages, "responder")
    page = client.get("/dashboard/models/iris")
    assert page.status_code == 200
    assert "<script>alert" not in page.text and "<img src=x" not in page.text
    assert page.headers["content-security-policy"].startswith("default-src 'self'")
    assert client.get("/dashboard/models/nope").status_code == 404


def test_an_incident_commander_posts_an_update_through_the_api(
    client: httpx.Client, pages: Pages
) -> None:
    pages.controller.rollback("iris", actor="oncall", reason="errors")
    login(client, pages, "viewer")
    r = client.post("/api/v1/models/iris/incident/updates",
                    json={"status": "identified", "message": "found it"})  # fmt: skip
    assert r.status_code == 403 and r.json()["error"]["right"] == "rollback"
    login(client, pages, "responder")
    r = client.post("/api/v1/models/iris/incident/updates",
                    json={"status": "identified", "message": "A bad feature export."})  # fmt: skip
    assert r.status_code == 200 and r.json()["updates"][-1]["actor"] == "responder"
    incident = client.get("/api/v1/models/iris/incident").json()
    view = client.get(f"/dashboard/incidents/{incident['id']}")
    assert view.status_code == 200 and "A bad feature export." in view.text
    assert "incident-form" in view.text
