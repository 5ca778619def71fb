"""`backout demo` end to end: the main job runs to the end and tells the whole story."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_the_demo_tells_the_whole_story(tmp_path: Path) -> None:
    home = tmp_path / "demo"
    run = subprocess.run(
        [sys.executable, "-m", "backout", "demo", "--home", str(home)],
        capture_output=True, text=True, timeout=400, cwd=tmp_path, env={"COLUMNS": "200", "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    out = run.stdout
    assert run.returncode == 0, out[-3000:] + run.stderr[-3000:]
    assert "rollback.started" in out  # the regressed canary was caught
    # The public status page went to partial outage during the rollback, and back.
    assert re.search(r"status page +Iris species API: partial outage", out), out[-3000:]
    assert re.search(r"status page +Iris species API: operational\s*$", out, re.M)
    assert re.search(r"dashboard: http://127\.0\.0\.1:\d+/dashboard", out)
    assert "refused" in out and "breaks checkout" in out  # the breaking release was refused
    assert re.search(
        r"drill\.ended\s+drill 1: rolled-back; detect [0-9.]+ s, recover [0-9.]+ s", out
    ), out[-3000:]
    # Not one request failed for any consumer, pinned or not (the drill's injected errors aside).
    rows = re.findall(
        r"^ (checkout|garden-app|nightly-report) .*?([0-9,]+)\s+(\d+)\s+(\d+)\s*$", out, re.M
    )
    assert len(rows) == 3, out[-2000:]
    assert all(failed == "0" for _, _, failed, _ in rows)
    report = re.search(r"incident report: (\S+\.html)", out)
    assert report is not None
    assert (tmp_path / report.group(1)).exists() or Path(report.group(1)).exists()
    # What the demo-runs benchmark counts, read from this run's store: the good release
    # completed, the regressed canary was rolled back by the gate at its first step.
    sys.path.insert(0, str(Path(__file__).parents[2] / "benchmarks"))
    import demo_runs

    outcome = demo_runs.read_outcome(home, run.returncode, 0.0)
    assert outcome.ok, outcome
