"""The gateway benchmark runs end to end (``--quick --no-write``) and no request fails."""

from __future__ import annotations

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
