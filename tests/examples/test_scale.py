"""``examples/scale/``, run as the README's "Beyond one machine" shows it, end to end.

It starts PostgreSQL, an S3 endpoint, three gateway replicas, two controllers, Traefik and
Prometheus, rolls out a regressed release under load, kills the leading controller during
the rollback and stops everything. Checked: the rollback finished (by the other
controller), no request failed but the regressed canary's own, the good release serves
everything afterwards, and no process the example started (or any descendant it saw)
survives it — checked here as well as by the example itself.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

import backout
from tests.cli.test_beyond_one_machine import commands

ROOT = Path(__file__).resolve().parents[2]
SRC = Path(backout.__file__).resolve().parents[1]
COMMAND = "python examples/scale/run.py"
LIMIT_S = 300  # a bound, not a target: about 75 s on a busy 2-core machine


def test_the_readme_shows_the_example_command() -> None:
    assert COMMAND in commands()


def gone(pid: int) -> bool:
    try:
        return bool(psutil.Process(pid).status() == psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return True


@pytest.mark.slow
def test_the_scale_example_rolls_back_a_regression_through_a_controller_failover(
    tmp_path: Path,
) -> None:
    out = tmp_path / "outcome.json"
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "PYTHONPATH": os.pathsep.join([str(SRC), str(ROOT), os.environ.get("PYTHONPATH", "")])}  # fmt: skip
    ran = subprocess.run(["bash", "-c", f"{COMMAND} --json {out}"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=LIMIT_S)  # fmt: skip
    doc = json.loads(out.read_text())
    assert ran.returncode == 0 and doc["ok"], ran.stdout[-3000:] + ran.stderr[-3000:]
    assert "Traceback" not in ran.stderr
    assert doc["outcome"] == "rolled-back" and doc["rollout_outcome"] == "aborted"
    assert doc["failed"] == 0 and doc["canary_errors"] > 0 and doc["requests"] > 100
    assert doc["served_after"] == ["iris@1.0.0"]
    assert doc["takeover_s"] > 0 and doc["detect_s"] > 0
    assert len(doc["prometheus_replicas"]) == 3  # Prometheus scraped every replica
    assert doc["alive_after"] == []
    if doc["replica_isolation"] == "netns":  # where `ip netns` works (as root, on Linux)
        assert len(set(doc["replica_namespaces"])) == 3 and "" not in doc["replica_namespaces"]
        listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        assert sorted(doc["namespaces_deleted"]) == sorted(doc["replica_namespaces"])
        assert not any(ns in listed for ns in doc["namespaces_deleted"]), listed
    else:
        assert doc["replica_isolation"] == "loopback-ports"
    assert len(doc["pids"]) >= 8
    assert [pid for pid in doc["pids"] if not gone(pid)] == []
    story = ran.stdout
    for line in ("kill -9 controller-", "took the lease", "rollback rolled-back", "stopped "):
        assert line in story, story
