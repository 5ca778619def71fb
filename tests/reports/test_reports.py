"""Incident reports: the numbers, the words, a self-contained page, and a real browser.

The incidents are written straight into a store, as the controller would have left them
(operations rows, audit events, telemetry batches), so these tests need no controller.
"""

from __future__ import annotations

import importlib
import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
import typer
from typer.testing import CliRunner

from backout.cli import app as cli
from backout.cli.report import report_command
from backout.errors import NotFound
from backout.registry.releases import Registry
from backout.reports.builder import build_report, latest_incident
from backout.reports.writer import render_markdown, write_report
from backout.store import Store, audit, schema
from backout.telemetry.batches import Batch, ErrorKind, write_batches

# On SQLite; the numbers of a staged incident also on PostgreSQL (see tests/conftest.py).
pytestmark = pytest.mark.databases("sqlite")

T0 = 1_717_000_000.0  # 2024-05-29 16:26:40 UTC
RATE = 40  # requests per second across the model
FAST_MS = (15, 18, 20, 21, 22, 24, 27, 30, 40, 55)
SLOW_MS = (24, 28, 33, 36, 40, 48, 60, 90, 160, 260)

GATE_PASS = {
    "verdict": "pass",
    "alpha": 0.05,
    "summary": "gate pass: error rate 0.9% vs 1.0% (ratio ≤ 1.5)",
    "judgements": [
        {"judge": "errors", "verdict": "pass", "metric": "error_rate", "estimate": 0.92,
         "lower": 0.4, "upper": 1.4, "tolerance": 1.5, "e_value": 0.3, "threshold": 40.0,
         "alpha": 0.025, "samples": 400, "baseline_samples": 3600, "batches": 40,
         "summary": "error rate 0.9% vs 1.0% (ratio ≤ 1.5)", "effects": {}},
    ],
}  # fmt: skip
GATE_FAIL = {
    "verdict": "fail",
    "alpha": 0.05,
    "summary": "gate fail: error rate 10.1% vs 1.0%: ratio 10.1 > 1.5",
    "judgements": [
        {"judge": "errors", "verdict": "fail", "metric": "error_rate", "estimate": 10.1,
         "lower": 6.2, "upper": 15.9, "tolerance": 1.5, "e_value": "inf", "threshold": 40.0,
         "alpha": 0.025, "samples": 350, "baseline_samples": 1050, "batches": 35,
         "summary": "error rate 10.1% vs 1.0%: ratio 10.1 > 1.5", "effects": {}},
        {"judge": "latency", "verdict": "continue", "metric": "log_latency", "estimate": 0.31,
         "lower": -0.1, "upper": 0.7, "tolerance": 0.3, "e_value": 3.2, "threshold": 40.0,
         "alpha": 0.025, "samples": 350, "baseline_samples": 1050, "batches": 35,
         "summary": "latency +36% (not decided)", "effects": {}},
    ],
}  # fmt: skip
POLICY = {
    "rollout": {"steps": [10, 25, 50, 100], "bake": 30},
    "rollback": {"mode": "staged", "steps": [90, 100], "verification": {"duration": 60}},
}


@dataclass
class Incident:
    """What a scenario wrote, so tests can check the report against it."""

    store: Store
    rollback_id: int
    batches: list[Batch]


def _at(t: float) -> datetime:
    return datetime.fromtimestamp(t, UTC)


def _event(conn: Any, t: float, event_kind: str, reason: str = "", actor: str = "controller",
           **data: Any) -> None:  # fmt: skip
    audit.append(conn, event_kind, model="fraud", actor=actor, reason=reason, data=data, at=_at(t))


def _traffic(conn: Any, t: float, op: int, weights: dict[str, float], gen: int) -> None:
    _event(conn, t, "traffic.applied", " ".join(f"{v}={w:g}%" for v, w in weights.items()),
           operation=op, weights=weights, generation=gen, shadow=None, pins={})  # fmt: skip


def _op(conn: Any, **row: Any) -> int:
    base = {"model": "fraud", "policy": POLICY, "actor": "controller", "step": 0}
    return int(
        conn.execute(schema.operations.insert().values(**(base | row))).inserted_primary_key[0]
    )


def _telemetry(
    weights_at: Any, bad_from: dict[str, float], start: float, end: float
) -> list[Batch]:
    """One batch per release per second: 1.4.0 fails 1%, 1.5.0 fails 10% (from bad_from)."""
    batches = []
    owed = {"1.4.0": 0.0, "1.5.0": 0.0}
    for s in range(int(start), int(end)):
        for version, pct in weights_at(s).items():
            n = round(RATE * pct / 100)
            if not n:
                continue
            rate = 0.10 if s >= bad_from.get(version, math.inf) else 0.01
            lat = SLOW_MS if rate > 0.05 else FAST_MS
            b = Batch("fraud", version, float(s), s + 1.0)
            for i in range(n):
                owed[version] += rate
                err = owed[version] >= 1
                owed[version] -= 1 if err else 0
                b.observe(lat[i % len(lat)] / 1000, error=ErrorKind.MODEL if err else None)
            batches.append(b)
    return batches


def staged_incident(store: Store, registry: Registry, artifact: Path) -> Incident:
    """1.5.0 rolls out; its gate fails at 25%; a staged rollback to 1.4.0 is verified."""
    registry.register("fraud", "1.4.0", [artifact], owner="risk")
    registry.register("fraud", "1.5.0", [artifact], owner="risk")
    registry.mark_good("fraud@1.4.0", actor="ana")
    with store.write() as conn:
        _event(conn, T0 - 600, "deploy.first", "first deploy of fraud@1.4.0", actor="ana",
               weights={"1.4.0": 100.0}, generation=1)  # fmt: skip
        rollout = _op(conn, kind="rollout", phase="aborted", step=1, stable="1.4.0", target="1.5.0",
                      weights={"1.4.0": 75.0, "1.5.0": 25.0}, state={"last_gate": GATE_PASS},
                      reason="deploy fraud@1.5.0", actor="ana", started_at=T0, step_started_at=T0 + 40,
                      updated_at=T0 + 75, ended_at=T0 + 75, outcome="aborted")  # fmt: skip
        _traffic(conn, T0, rollout, {"1.4.0": 90.0, "1.5.0": 10.0}, 2)
        _event(conn, T0, "rollout.started", "deploy fraud@1.5.0", actor="ana", operation=rollout,
               stable="1.4.0", candidate="1.5.0", steps=[10, 25, 50, 100])  # fmt: skip
        _traffic(conn, T0 + 40, rollout, {"1.4.0": 75.0, "1.5.0": 25.0}, 3)
        _event(conn, T0 + 40, "phase.rolling-out", "gate passed; step 2: 1.5.0 at 25%",
               operation=rollout, kind="rollout", to="rolling-out", step=1,
               weights={"1.4.0": 75.0, "1.5.0": 25.0}, evidence=GATE_PASS, **{"from": "rolling-out"})  # fmt: skip
        reason = f"gate failed at step 2: {GATE_FAIL['summary']}"
        rollback = _op(conn, kind="rollback", phase="rolled-back", step=1, stable="1.5.0",
                       target="1.4.0", weights={"1.4.0": 100.0},
                       state={"trigger": {"gate": GATE_FAIL}, "mode": "staged", "warm": "",
                              "from_weights": {"1.4.0": 75.0, "1.5.0": 25.0}},
                       reason=reason, started_at=T0 + 75, step_started_at=T0 + 90,
                       updated_at=T0 + 150, ended_at=T0 + 150, outcome="rolled-back")  # fmt: skip
        _event(conn, T0 + 75, "phase.aborted", "superseded by a rollback to 1.4.0",
               operation=rollout, kind="rollout", to="aborted", step=1, weights={}, evidence={},
               **{"from": "rolling-out"})  # fmt: skip
        _event(conn, T0 + 75, "rollback.started", reason, operation=rollback, target="1.4.0",
               mode="staged", trigger={"gate": GATE_FAIL}, warm="", skip_gates=False,
               weights_before={"1.4.0": 75.0, "1.5.0": 25.0}, **{"from": "1.5.0"})  # fmt: skip
        _traffic(conn, T0 + 75, rollback, {"1.4.0": 90.0, "1.5.0": 10.0}, 4)
        _event(conn, T0 + 76, "compat.checked", "contract check before moving traffic",
               operation=rollback, verdict="pass",
               summary="1.4.0 accepts every field 1.5.0 accepted; 3 consumers compatible",
               consumers=["checkout-api: compatible", "batch-scorer: compatible", "risk-ui: compatible"])  # fmt: skip
        _traffic(conn, T0 + 90, rollback, {"1.4.0": 100.0}, 5)
        _event(conn, T0 + 90, "phase.verifying", "all traffic on 1.4.0; verifying",
               operation=rollback, kind="rollback", to="verifying", step=1,
               weights={"1.4.0": 100.0}, evidence=GATE_PASS, **{"from": "rolling-back"})  # fmt: skip
        _event(conn, T0 + 150, "phase.rolled-back", "1.4.0 healthy for 60 s over 2,400 requests",
               operation=rollback, kind="rollback", to="rolled-back", step=1,
               weights={"1.4.0": 100.0}, evidence={"requests": 2400, "seconds": 60.0},
               **{"from": "verifying"})  # fmt: skip

    def weights_at(s: float) -> dict[str, float]:
        if s < T0:
            return {"1.4.0": 100.0}
        if s < T0 + 40:
            return {"1.4.0": 90.0, "1.5.0": 10.0}
        if s < T0 + 75:
            return {"1.4.0": 75.0, "1.5.0": 25.0}
        if s < T0 + 90:
            return {"1.4.0": 90.0, "1.5.0": 10.0}
        return {"1.4.0": 100.0}

    batches = _telemetry(weights_at, {"1.5.0": T0}, T0 - 30, T0 + 175)
    write_batches(store, batches, worker="w1")
    return Incident(store, rollback, batches)


@pytest.fixture
def incident(store: Store, registry: Registry, artifact: Path) -> Incident:
    return staged_incident(store, registry, artifact)


# -- the numbers ---------------------------------------------------------------------------


@pytest.mark.databases("sqlite", "postgresql")
def test_times_to_detect_recover_and_verify(
    store: Store, registry: Registry, artifact: Path
) -> None:
    """Detect: step start → trigger; recover: trigger → 100% on target; verified: → end."""
    inc = staged_incident(store, registry, artifact)
    r = build_report(store, inc.rollback_id)
    assert (r.time_to_detect, r.time_to_recover, r.time_to_verified) == (35.0, 15.0, 75.0)
    assert r.detect_basis == "the start of rollout step 2 (1.5.0 at 25%)"
    assert [(at - T0, w) for at, w in r.weights] == [
        (-12, {"1.4.0": 100.0}),  # the window opens 12 s before the rollout, on what was live
        (0, {"1.4.0": 90.0, "1.5.0": 10.0}),
        (40, {"1.4.0": 75.0, "1.5.0": 25.0}),
        (75, {"1.4.0": 90.0, "1.5.0": 10.0}),
        (90, {"1.4.0": 100.0}),
    ]
    assert r.rollout is not None and r.rollout.active_at_trigger and r.rollout.candidate == "1.5.0"
    assert (r.outcome, r.mode, r.from_version, r.target) == (
        "rolled-back",
        "staged",
        "1.5.0",
        "1.4.0",
    )


def test_requests_affected_and_failed_come_from_the_batches(incident: Incident) -> None:
    r = build_report(incident.store, incident.rollback_id)
    lo, recovered, end = T0 + 40, T0 + 90, T0 + 150
    bad = [b for b in incident.batches if b.version == "1.5.0"]
    assert r.requests_affected == sum(b.requests for b in bad if lo <= b.start < recovered) == 410
    assert r.requests_failed == sum(b.error_count for b in incident.batches if lo <= b.start < end)
    assert r.failed_on_bad == sum(b.error_count for b in bad if lo <= b.start < end) == 41
    assert r.baseline_error_rate == pytest.approx(0.01, abs=0.002)


def test_the_timeline_folds_traffic_into_the_decisions_that_set_it(incident: Incident) -> None:
    r = build_report(incident.store, incident.rollback_id)
    rows = [(round(d.at - T0), d.kind, d.verdict) for d in r.timeline]
    assert rows == [
        (0, "rollout.started", None),
        (40, "phase.rolling-out", "pass"),
        (75, "phase.aborted", None),
        (75, "rollback.started", "fail"),
        (76, "compat.checked", "pass"),
        (90, "phase.verifying", "pass"),
        (150, "phase.rolled-back", None),
    ]
    started = r.timeline[3]
    assert started.weights == {"1.4.0": 90.0, "1.5.0": 10.0}
    assert [j.judge for j in started.judges] == ["errors", "latency"]
    assert "e-value ∞ (fails at 40)" in started.judges[0].detail


def test_questions_come_from_the_data(incident: Incident) -> None:
    r = build_report(incident.store, incident.rollback_id)
    assert r.questions[0] == (
        "Why did 1.5.0 pass the 10% step? Its gate saw: error rate 0.9% vs 1.0% (ratio ≤ 1.5)."
    )
    assert any("No replay verdict" in q for q in r.questions)
    assert not any("compatibility gate left no verdict" in q for q in r.questions)
    assert [f.verdict for f in r.compat] == ["pass"] and r.replay == []


def idle_incident(store: Store, registry: Registry, artifact: Path) -> int:
    """1.5.0 serves everything, goes bad; an error-rate trigger rolls back in an emergency."""
    registry.register("fraud", "1.4.0", [artifact])
    registry.register("fraud", "1.5.0", [artifact])
    fired = {"triggers": [{"name": "errors", "kind": "error_rate", "fired": True,
                           "summary": "error rate 10.0% over 1,200 requests (limit 5.00%)",
                           "evidence": {"rate": 0.1, "limit": 0.05, "requests": 1200}}]}  # fmt: skip
    with store.write() as conn:
        op = _op(conn, kind="rollback", phase="verifying", stable="1.5.0", target="1.4.0",
                 weights={"1.4.0": 100.0}, reason="trigger: error rate", started_at=T0 + 50,
                 step_started_at=T0 + 50, updated_at=T0 + 50,
                 state={"trigger": fired, "mode": "emergency", "from_weights": {"1.5.0": 100.0},
                        "warm": "1.4.0 is not a warm rollback point: gateways load it before switching"})  # fmt: skip
        _event(conn, T0 + 50, "rollback.started", "trigger: error rate", operation=op,
               target="1.4.0", mode="emergency", trigger=fired, **{"from": "1.5.0"})  # fmt: skip
        _traffic(conn, T0 + 50, op, {"1.4.0": 100.0}, 7)
    write_batches(
        store,
        _telemetry(
            lambda s: {"1.5.0": 100.0} if s < T0 + 50 else {"1.4.0": 100.0},
            {"1.5.0": T0 + 20},
            T0 - 60,
            T0 + 70,
        ),
        worker="w1",
    )
    return op


def test_an_idle_release_going_bad_is_detected_from_its_first_bad_batch(
    store: Store, registry: Registry, artifact: Path
) -> None:
    """No rollout before it: time to detect counts from the first batch that looked bad."""
    op = idle_incident(store, registry, artifact)
    r = build_report(store, op)
    assert r.first_bad_at == T0 + 20 and r.time_to_detect == 30.0
    assert r.detect_basis == "the first bad batch of 1.5.0"
    assert r.time_to_recover == 0.0 and r.time_to_verified is None and r.outcome == "in progress"
    assert any("1.4.0 was not warm" in q for q in r.questions)
    assert any("emergency mode" in q for q in r.questions)
    assert r.weights == [(r.window[0], {"1.5.0": 100.0}), (T0 + 50, {"1.4.0": 100.0})]


def test_latest_incident_and_clear_errors(incident: Incident) -> None:
    assert latest_incident(incident.store, "fraud") == incident.rollback_id
    with pytest.raises(NotFound, match="model 'churn' has had no rollback"):
        latest_incident(incident.store, "churn")
    with pytest.raises(NotFound, match="operation 1 of fraud is a rollout, not a rollback"):
        build_report(incident.store, 1)
    with pytest.raises(NotFound, match="incident 99 does not exist"):
        build_report(incident.store, 99)


# -- the words and the page ----------------------------------------------------------------


def test_markdown_names_the_trigger_and_the_outcome(incident: Incident) -> None:
    md = render_markdown(build_report(incident.store, incident.rollback_id))
    assert md.startswith("# Incident 2: fraud rolled back from 1.5.0 to 1.4.0\n")
    assert "**Outcome:** rolled-back" in md
    assert "**Trigger:** rollout gate failed: error rate 10.1% vs 1.0%: ratio 10.1 > 1.5" in md
    assert "| 35 s | 15 s | 1 min 15 s | 410 |" in md
    assert "## Replay\n\nnot run" in md


def test_the_html_is_self_contained(incident: Incident, tmp_path: Path) -> None:
    html_path, md_path = write_report(
        build_report(incident.store, incident.rollback_id), tmp_path / "reports"
    )
    assert (html_path.name, md_path.name) == ("incident-2.html", "incident-2.md")
    html = html_path.read_text()
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:|//)""", html, re.I)
    assert "<script" not in html and "<link" not in html and "@import" not in html
    assert html.count('src="data:image/svg+xml;base64,') == 3


def test_the_cli_writes_both_files_and_prints_json(incident: Incident, tmp_path: Path) -> None:
    app = typer.Typer()
    app.callback()(cli.global_options)
    app.command("report")(report_command)
    url = str(incident.store.url)
    out = tmp_path / "out"
    result = CliRunner().invoke(
        app, ["--store", url, "report", "fraud", "--last", "--out", str(out), "--json"]
    )
    assert result.exit_code == 0, result.output
    doc = orjson.loads(result.stdout)
    assert doc["html"] == str(out / "incident-2.html") and Path(doc["markdown"]).exists()
    assert doc["report"]["time_to_detect"] == 35.0
    bad = CliRunner().invoke(app, ["--store", url, "report", "fraud"])
    assert isinstance(bad.exception, Exception) and "--last" in str(bad.exception)


# -- a real browser ------------------------------------------------------------------------

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip


def test_the_report_renders_in_headless_chromium(incident: Incident, tmp_path: Path) -> None:
    """Debian's Chromium opens the file: title, timeline rows and three drawn plots."""
    from playwright.sync_api import Error, sync_playwright

    if not CHROMIUM.exists():
        pytest.fail(
            f"{CHROMIUM} is missing: run `bash scripts/ensure-chromium.sh` (make test does)"
        )
    report = build_report(incident.store, incident.rollback_id)
    html_path, _ = write_report(report, tmp_path / "reports")
    with sync_playwright() as pw:
        try:
            context = pw.chromium.launch_persistent_context(
                str(tmp_path / "profile"),  # a fresh --user-data-dir
                executable_path=str(CHROMIUM),
                headless=True,
                args=CHROMIUM_FLAGS,
                viewport={"width": 1280, "height": 900},
                offline=True,
            )
        except Error as exc:
            pytest.fail(f"Chromium could not start: {exc}")
        try:
            page = context.new_page()
            page.goto(html_path.as_uri())
            assert page.title() == "Incident 2 · fraud · 1.5.0 → 1.4.0"
            assert page.inner_text("#outcome") == "rolled back"
            kinds = page.eval_on_selector_all(
                "#timeline-table tbody tr", "rows => rows.map(r => r.dataset.kind)"
            )
            assert kinds == [d.kind for d in report.timeline] and len(kinds) == 7
            for plot in ("traffic", "errors", "latency"):
                img = page.locator(f"#plot-{plot} img")
                size = img.evaluate("i => [i.complete, i.naturalWidth, i.naturalHeight]")
                box = img.bounding_box()
                assert size[0] and size[1] > 0 and size[2] > 0, plot
                assert box is not None and box["width"] > 600 and box["height"] > 100, plot
            width = page.evaluate("document.documentElement.scrollWidth")
            assert width <= 1280, "the page scrolls sideways at 1280 px"
            page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
        finally:
            context.close()
    assert (tmp_path / "report.png").stat().st_size > 10_000


@pytest.mark.parametrize("module_name", ["model", "builder", "writer"])
def test_the_public_names_are_real(module_name: str) -> None:
    module = importlib.import_module(f"backout.reports.{module_name}")

    assert all(hasattr(module, name) for name in module.__all__)
