"""The gateway benchmark runs end to end (``--quick --no-write``) and no request fails."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
@pytest.mark.skipif(
    shutil.which("wrk") is None, reason="wrk is not installed (scripts/ensure-wrk.sh)"
)
def test_gateway_benchmark_quick_run_reports_every_target() -> None:
    """About 50 s: bare app and gateway under wrk, open-loop latency, ten cutovers."""
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "gateway.py"), "--quick", "--no-write"],
        capture_output=True, text=True, timeout=240, cwd=ROOT,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    assert "cutover, requests failed = 0: **0**: met" in out.stdout
    for target in ("throughput gateway / bare", "added p50", "added p99", "switch p99"):
        assert target in out.stdout


@pytest.mark.slow
def test_soak_benchmark_tiny_run_reports_every_figure(tmp_path: Path) -> None:
    """About 40 s: ``backout serve`` under load for half a minute, a rollout and a rollback
    through the CLI; the figures' structure is checked, not their speed."""
    out_json = tmp_path / "soak.json"
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "soak.py"), "--minutes", "0.5",
         "--period", "10", "--bucket", "5", "--window", "0.1", "--rate", "40", "--no-write",
         "--json", str(out_json)],
        capture_output=True, text=True, timeout=240, cwd=ROOT,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    doc = json.loads(out_json.read_text())
    assert [c["command"] for c in doc["changes"]] == ["deploy iris@1.1.0", "rollback iris"]
    assert all(c["rc"] == 0 for c in doc["changes"]), doc["changes"]
    assert doc["outcomes"], doc
    assert len(doc["rows"]) == 6 and doc["requests"] == 1200
    for row in doc["rows"]:
        assert {"requests", "failed", "late", "p50_ms", "p99_ms", "rss_mib", "store_mib"} <= set(
            row
        )
    assert doc["samples"] and all(s["rss"] > 0 and s["processes"] >= 3 for s in doc["samples"])
    assert set(doc["targets"]) == {"rss_growth", "p99_ratio", "failed"}
    assert doc["failed"] == sum(row["failed"] for row in doc["rows"])
    for target in ("RSS growth", "p99 of the last", "failed requests = 0"):
        assert target in out.stdout
