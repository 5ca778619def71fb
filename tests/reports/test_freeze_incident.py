"""A freeze is an incident: a rollout whose gate failed when no rollback was safe.

Written straight into a store as the controller leaves it: the rollout's operation row in
phase ``frozen`` (no rollback operation at all), its ``phase.frozen`` event and the
escalation. ``backout report MODEL --last`` must find and describe it.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from backout.cli import main
from backout.errors import NotFound
from backout.reports.builder import build_report, latest_incident
from backout.reports.writer import render_html, render_markdown
from backout.store import Store, audit, open_store, schema

T0 = 1_717_000_000.0
GATE = {"verdict": "fail", "alpha": 0.05, "summary": "gate fail: p99 latency 494 ms vs budget 100 ms",
        "judgements": [{"judge": "latency_budget", "verdict": "fail",
                        "summary": "p99 latency 494 ms vs budget 100 ms"}]}  # fmt: skip
WHY = (
    "gate failed at step 1: gate fail: p99 latency 494 ms vs budget 100 ms; and no safe "
    "rollback: rollback target fraud@1.4.0 cannot take 1.5.0's traffic"
)


def _event(conn: Any, t: float, event_kind: str, reason: str, **data: Any) -> None:
    audit.append(conn, event_kind, model="fraud", actor="controller", reason=reason, data=data,
                 at=datetime.fromtimestamp(t, UTC))  # fmt: skip


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = open_store(f"sqlite:///{tmp_path / 'store.db'}", create=True)
    with s.write() as conn:
        op = conn.execute(
            schema.operations.insert().values(
                model="fraud", kind="rollout", phase="frozen", step=0, stable="1.4.0",
                target="1.5.0", weights={"1.4.0": 90.0, "1.5.0": 10.0},
                policy={"rollout": {"steps": [10, 50, 100], "bake": 20}},
                state={"last_gate": GATE}, actor="ana", reason="deploy fraud@1.5.0",
                started_at=T0, step_started_at=T0, updated_at=T0 + 12,
            )
        ).inserted_primary_key[0]  # fmt: skip
        _event(conn, T0, "rollout.started", "deploy fraud@1.5.0", operation=op,
               stable="1.4.0", candidate="1.5.0", steps=[10, 50, 100])  # fmt: skip
        _event(conn, T0, "traffic.applied", "1.4.0=90% 1.5.0=10%", operation=op,
               weights={"1.4.0": 90.0, "1.5.0": 10.0})  # fmt: skip
        _event(conn, T0 + 12, "phase.frozen", WHY, operation=op, kind="rollout", to="frozen",
               evidence=GATE, **{"from": "rolling-out"})  # fmt: skip
        _event(conn, T0 + 12, "escalation", "fraud is frozen", operation=op, contact="fraud-oncall")
    try:
        yield s
    finally:
        s.dispose()


def test_the_newest_incident_of_a_model_may_be_a_freeze(store: Store) -> None:
    assert latest_incident(store, "fraud") == 1
    with pytest.raises(NotFound, match="has had no rollback and no freeze"):
        latest_incident(store, "churn")


def test_a_frozen_rollout_is_described_as_a_freeze(store: Store) -> None:
    r = build_report(store, 1)
    assert (r.kind, r.outcome, r.from_version, r.target) == ("freeze", "frozen", "1.5.0", "1.4.0")
    assert r.started_at == T0 + 12 and r.recovered_at is None
    assert r.trigger.kind == "gate" and "p99 latency 494 ms" in r.trigger.summary
    assert r.escalations == ["fraud-oncall"]
    assert "no rollback was safe, so the controller froze the model" in r.summary
    assert r.rollout is not None and r.rollout.active_at_trigger
    md = render_markdown(r)
    assert md.startswith("# Incident 1: fraud frozen while rolling out 1.5.0 (stable 1.4.0)\n")
    assert any("No rollback to 1.4.0 was safe" in q for q in r.questions)
    page = render_html(r)
    assert "frozen while rolling out" in page and "no rollback was safe" in page


def test_report_last_writes_the_freeze(
    store: Store, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--store", str(store.url), "report", "fraud", "--last", "--out", str(tmp_path / "r")])
    out = capsys.readouterr().out
    assert exc.value.code == 0
    assert out.startswith("incident 1: fraud 1.5.0 → 1.4.0, frozen (freeze)\n")
    assert (tmp_path / "r" / "incident-1.html").exists()
