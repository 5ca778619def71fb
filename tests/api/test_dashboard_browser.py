"""The dashboard and the status page in Debian's Chromium (Playwright), on a live API process.

A viewer sees no action button; a responder clicks "Roll back", confirms, and watches the
rollback live while the public status page turns to partial outage and back to
operational. Screenshots are saved under the folder the test prints (``$BACKOUT_TEST_ARTIFACTS``
or the test's own temporary folder).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from backout.api.app import create_app
from backout.control.controller import Controller
from backout.control.phases import Phase
from tests.api.pages_world import Pages, Traffic, make_pages
from tests.control.world import FakeProber
from tests.loopback import serve
from tests.waits import wait_for

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip


def artifacts(tmp_path: Path) -> Path:
    folder = Path(os.environ.get("BACKOUT_TEST_ARTIFACTS") or tmp_path) / "dashboard"
    folder.mkdir(parents=True, exist_ok=True)
    print(f"screenshots: {folder}")
    return folder


@contextmanager
def browser(tmp_path: Path) -> Iterator[Any]:
    from playwright.sync_api import Error, sync_playwright

    if not CHROMIUM.exists():
        pytest.fail(
            f"{CHROMIUM} is missing: run `bash scripts/ensure-chromium.sh` (make test does)"
        )
    with sync_playwright() as pw:
        try:
            context = pw.chromium.launch_persistent_context(
                str(tmp_path / "profile"), executable_path=str(CHROMIUM), headless=True,
                args=CHROMIUM_FLAGS, viewport={"width": 1280, "height": 1000},
            )  # fmt: skip
        except Error as exc:
            pytest.fail(f"Chromium could not start: {exc}")
        try:
            yield context
        finally:
            context.close()


@contextmanager
def running(pages: Pages) -> Iterator[str]:
    """The API process on loopback, with the controller and synthetic traffic running."""
    app = create_app(pages.url, artifacts=pages.folder / "artifacts", prober=FakeProber())
    stop = threading.Event()
    ctl = Controller(pages.store, pages.registry, prober=FakeProber())
    loop = threading.Thread(target=ctl.run, args=(stop,), kwargs={"interval": 0.2}, daemon=True)
    with Traffic(pages.store, pages.registry), serve(app) as url:
        loop.start()
        try:
            yield url
        finally:
            stop.set()
            loop.join(15)
            ctl.close()


def promote(pages: Pages) -> None:
    """1.1.0 at 100% and known-good: a rollback from there walks back in steps."""
    pages.controller.promote("iris", actor="setup")
    with Traffic(pages.store, pages.registry):
        wait_for(lambda: pages.controller.tick("iris") is None or pages.controller.active("iris")
                 is None, 30, "1.1.0 to complete its rollout", interval=0.3)  # fmt: skip


def log_in(page: Any, url: str, token: str) -> None:
    page.goto(f"{url}/dashboard/login")
    page.fill("#token", token)
    page.click("#login")
    page.wait_for_url(f"{url}/dashboard")


def test_a_viewer_sees_no_action_buttons(tmp_path: Path) -> None:
    pages = make_pages(tmp_path)
    shots = artifacts(tmp_path)
    try:
        with running(pages) as url, browser(tmp_path) as context:
            page = context.new_page()
            log_in(page, url, pages.tokens["viewer"])
            assert page.inner_text("#models tbody tr[data-model=iris] .phase") == "rolling-out"
            page.click("text=iris")
            page.wait_for_selector("#timeline tbody tr")
            assert page.locator("#actions button").count() == 0
            assert page.locator("#incident-form").count() == 0
            assert pages.tokens["viewer"] not in page.content()
            assert page.evaluate("document.cookie") == ""  # HttpOnly: no script can read it
            page.screenshot(path=str(shots / "viewer.png"), full_page=True)
    finally:
        pages.controller.close()
        pages.store.dispose()


@pytest.mark.slow
def test_a_responder_rolls_back_and_the_status_page_follows(tmp_path: Path) -> None:
    from playwright.sync_api import expect

    pages = make_pages(tmp_path)
    promote(pages)
    shots = artifacts(tmp_path)
    try:
        with running(pages) as url, browser(tmp_path) as context:
            status = context.new_page()
            status.goto(f"{url}/status")
            assert status.inner_text("#components .cstatus") == "operational"
            page = context.new_page()
            log_in(page, url, pages.tokens["responder"])
            page.goto(f"{url}/dashboard/models/iris")
            page.wait_for_selector("#actions button[data-action=rollback]")
            assert page.locator("#actions button[data-action=promote]").count() == 0
            confirmations: list[str] = []

            def accept(dialog: Any) -> None:
                confirmations.append(dialog.message)
                dialog.accept()

            page.on("dialog", accept)
            page.click("#actions button[data-action=rollback]")
            expect(page.locator("#phase")).to_have_text("rolling-back", timeout=10_000)
            assert "from 1.1.0 to 1.0.0 (staged: 50% → 100%" in confirmations[0]
            page.wait_for_selector("#timeline tr[data-kind='rollback.started']")
            page.wait_for_selector("#actions button[data-action=abort]")
            assert page.locator("#actions button[data-action=rollback]").count() == 0
            page.screenshot(path=str(shots / "dashboard-rollback.png"), full_page=True)
            component = status.locator("#components .cstatus")
            expect(component).to_have_attribute("data-status", "partial_outage", timeout=10_000)
            status.screenshot(path=str(shots / "status-incident.png"), full_page=True)
            assert "investigating" in status.inner_text("#incidents")
            started = time.monotonic()
            expect(component).to_have_attribute("data-status", "operational", timeout=60_000)
            print(f"back to operational {time.monotonic() - started:.1f} s after partial outage")
            assert "resolved" in status.inner_text("#incidents")
            status.screenshot(path=str(shots / "status-resolved.png"), full_page=True)
            expect(page.locator("#phase")).to_have_text("steady", timeout=10_000)
            assert pages.controller.operations("iris", limit=1)[0].phase == Phase.ROLLED_BACK
    finally:
        pages.controller.close()
        pages.store.dispose()
