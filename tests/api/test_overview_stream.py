"""The dashboard's overview follows decisions over server-sent events (no page reload)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from backout.api.app import create_app
from tests.api.pages_world import Pages, make_pages
from tests.control.world import FakeProber
from tests.loopback import serve

pytestmark = pytest.mark.databases("sqlite")


@pytest.fixture
def pages(tmp_path: Path) -> Iterator[Pages]:
    p = make_pages(tmp_path)
    yield p
    p.controller.close()
    p.store.dispose()


def rows_events(resp: httpx.Response) -> Iterator[str]:
    """The data of each ``rows`` event of a server-sent stream, as it arrives."""
    event, data = "", []
    for line in resp.iter_lines():
        if line.startswith("event:"):
            event = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].removeprefix(" "))
        elif not line and data:
            if event == "rows":
                yield "\n".join(data)
            event, data = "", []


def test_the_overview_streams_its_rows_and_a_decision_at_once(pages: Pages) -> None:
    app = create_app(pages.url, artifacts=pages.folder / "artifacts", prober=FakeProber())
    with serve(app) as url, httpx.Client(base_url=url, timeout=30) as c:
        page = c.get("/dashboard", headers={"Authorization": f"Bearer {pages.tokens['viewer']}"})
        assert page.status_code == 200 and 'http-equiv="refresh"' not in page.text
        assert 'id="models-rows"' in page.text
        with c.stream("GET", "/dashboard/stream",
                      headers={"Authorization": f"Bearer {pages.tokens['viewer']}"}) as resp:  # fmt: skip
            assert resp.status_code == 200
            events = rows_events(resp)
            first = next(events)
            assert 'data-model="iris"' in first and "paused" not in first
            pages.controller.pause("iris", actor="ops", reason="look closer")
            paused_at = time.monotonic()
            for html in events:
                if "paused" in html:
                    break
            # Sooner than the overview's own 5-second round: the decision sent it.
            assert time.monotonic() - paused_at < 4.0
        anon = c.get("/dashboard/stream")
        assert anon.status_code == 401
