"""Bad marks on the command line: mark-bad, clear-bad, deploy --override-bad, list and status."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from backout.registry import badmarks
from backout.store import open_store
from tests.cli.runner import Cli, fraud_live


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> Cli:
    """fraud@1.0.0 live at 100%, fraud@1.1.0 registered (both proven to load and answer)."""
    return Cli(capsys, fraud_live(tmp_path), tmp_path)


def mark_by_controller(cli: Cli, version: str, operation: int) -> None:
    store = open_store(cli.base[1])
    try:
        with store.write() as conn:
            badmarks.record_bad(conn, "fraud", version, actor="controller", source="gate",
                                operation=operation,
                                evidence="gate failed at step 1: error rate 2.40% on 1.1.0 vs 1.10% on 1.0.0")  # fmt: skip
    finally:
        store.dispose()


def test_mark_bad_and_clear_bad_need_a_reason_and_show_in_the_list(cli: Cli) -> None:
    code, _, err = cli("release", "mark-bad", "fraud@1.1.0")
    assert code == 2 and "--reason" in err
    code, out, _ = cli("release", "mark-bad", "fraud@1.1.0", "--reason", "wrong labels")
    assert (code, out) == (0, "fraud@1.1.0 is marked bad: wrong labels\n")
    code, out, _ = cli("release", "list")
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["release", "runtime", "mark"]
    assert lines[1].split()[:4] == ["fraud@1.1.0", "sklearn", "bad", "(by"]
    assert ["fraud@1.0.0", "sklearn", "known-good"] in [line.split()[:3] for line in lines]
    assert re.fullmatch(
        r"fraud@1\.1\.0 is marked bad: wrong labels \(by ana \S+ \S+ UTC\)",
        lines[-1],
    )
    (rel,) = [r for r in cli.json("release", "list") if r["ref"] == "fraud@1.1.0"]  # type: ignore[union-attr]
    assert rel["bad"]["evidence"] == "wrong labels"
    assert rel["bad"]["operation"] is None and rel["bad"]["actor"] == "ana"
    code, out, _ = cli("release", "clear-bad", "fraud@1.1.0", "--reason", "relabelled")
    assert code == 0 and out.startswith("fraud@1.1.0 is no longer marked bad")
    code, _, err = cli("release", "clear-bad", "fraud@1.1.0", "--reason", "again")
    assert code == 1 and err == "error: fraud@1.1.0 is not marked bad: nothing to clear\n"
    kinds = [e["kind"] for e in cli.json("history", "fraud")["events"]]  # type: ignore[index]
    assert kinds[-2:] == ["release.marked-bad", "release.bad-cleared"]


def test_deploy_of_a_bad_release_is_refused_in_one_line_unless_overridden(cli: Cli) -> None:
    mark_by_controller(cli, "1.1.0", operation=7)
    code, out, err = cli("deploy", "fraud@1.1.0")
    assert code == 1 and out == "" and err.count("\n") == 1
    assert err.startswith("error: fraud@1.1.0 is marked bad and cannot be deployed: gate failed")
    assert "(operation 7, by controller " in err
    assert err.rstrip().endswith(
        "deploy it anyway with `backout deploy fraud@1.1.0 --override-bad --reason TEXT`"
    )
    code, _, err = cli("deploy", "fraud@1.1.0", "--override-bad")
    assert code == 1 and "cannot be deployed without a reason" in err
    code, out, _ = cli("deploy", "fraud@1.1.0", "--override-bad", "--reason", "hotfix verified")
    assert code == 0 and out.startswith("rollout of fraud@1.1.0 started")
    events = cli.json("history", "fraud")["events"]  # type: ignore[index]
    (override,) = [e for e in events if e["kind"] == "release.bad-overridden"]
    assert override["actor"] == "ana" and override["reason"].endswith(": hotfix verified")
    assert override["data"]["bad"]["operation"] == 7


def test_list_and_status_show_a_mark_left_by_a_rollback(cli: Cli) -> None:
    mark_by_controller(cli, "1.1.0", operation=7)
    code, out, _ = cli("release", "list", "fraud")
    row = next(line for line in out.splitlines() if line.split()[:1] == ["fraud@1.1.0"])
    assert row.split()[2:4] == ["bad", "(op"]
    code, out, _ = cli("status", "fraud")
    assert code == 0
    assert re.search(
        r"^fraud@1\.1\.0 is marked bad: gate failed at step 1: error rate 2\.40% on 1\.1\.0 vs "
        r"1\.10% on 1\.0\.0 \(operation 7, by controller \S+ \S+ UTC\)$",
        out,
        re.M,
    )
    d = cli.json("status", "fraud")
    assert isinstance(d, dict)
    assert [(b["version"], b["operation"]) for b in d["bad"]] == [("1.1.0", 7)]
    assert [r["bad"] for r in d["releases"]] == [None]  # 1.0.0, the only one with traffic
