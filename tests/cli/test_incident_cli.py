"""``backout incident`` and what ``backout status`` says of incidents and overdue runbooks."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.cli.runner import Cli, fraud_live


@pytest.fixture
def live(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> Cli:
    """fraud@1.0.0 live and known-good, 1.1.0 registered and proven."""
    return Cli(capsys, fraud_live(tmp_path), tmp_path)


def test_an_incident_commander_updates_the_rollbacks_incident(live: Cli) -> None:
    assert live("deploy", "fraud@1.1.0")[0] == 0
    assert live("rollback", "fraud", "--emergency")[0] == 0
    code, out, _ = live("incident", "update", "fraud", "--status", "identified",
                        "--message", "A bad feature export.")  # fmt: skip
    assert (code, out) == (0, "incident 1 (fraud): identified — A bad feature export.\n")
    doc = live.json("status", "fraud")
    assert isinstance(doc, dict) and doc["incident"]["status"] == "identified"
    shown = live("incident", "show", "1")[1]
    assert "monitoring" in shown and "A bad feature export.  (ana)" in shown
    code, _, err = live("incident", "update", "fraud", "--status", "done", "--message", "x")
    assert code == 1 and err == (
        "error: status 'done' is not one of investigating, identified, monitoring, resolved\n"
    )


def test_an_update_without_an_open_incident_is_one_line(live: Cli) -> None:
    code, _, err = live("incident", "update", "fraud", "--status", "resolved", "--message", "x")
    assert code != 0 and err == (
        "error: fraud has no open incident: one opens when a rollback starts\n"
    )


def test_status_warns_when_the_runbook_is_overdue(live: Cli, tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text("review_every: 90d\nreviewed: 2020-01-01\n")
    assert live("deploy", "fraud@1.1.0", "--policy", str(policy))[0] == 0
    out = live("status", "fraud")[1]
    assert "warning: fraud's runbook is overdue for review by" in out
    assert "set 'reviewed' in its policy" in out
