"""The README's ten-minute tour, run as written: every command of its shell block, in order.

The block is parsed from README.md, so the test and the README cannot drift apart. The
commands run in a fresh folder holding a copy of ``examples/``, each in its own ``bash``,
with the venv this test runs in first on the PATH; ``backout serve`` and the callers run in
the background on a free loopback port (the only change made to the text), and every
process the tour started is stopped at the end.

Some outcomes depend on timing: the rollout gate may catch the slow release (and roll back,
or freeze the model) before the tour's own ``rollback --emergency`` runs, which then fails
in one line; a drill with no other known-good release cannot recover fully and exits 1.
What must hold either way is checked: no traceback anywhere, one-line errors, and a report
of the incident from ``report fraud --last``.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import backout
from tests.postgres_server import free_port

ROOT = Path(__file__).resolve().parents[2]
SRC = Path(backout.__file__).resolve().parents[1]
# Commands whose failure the tour allows, each as a one-line error or exit 1 (see above).
MAY_FAIL = ("backout rollback fraud --emergency", "backout drill fraud --fault")


def tour_commands(readme: str) -> list[str]:
    """The shell commands of the README's tour: continuations joined, comments dropped."""
    section = readme.split("## A ten-minute tour", 1)[1]
    block = re.search(r"```sh\n(.*?)```", section, re.S)
    assert block, "the tour has no ```sh block"
    commands = []
    for line in block.group(1).replace("\\\n", " ").splitlines():
        line = re.sub(r"\s+#\s.*$", "", line).strip()
        if line and not line.startswith("#"):
            commands.append(" ".join(line.split()) if "'" not in line else line)
    return commands


def test_the_tour_block_is_what_this_test_expects() -> None:
    commands = tour_commands((ROOT / "README.md").read_text())
    assert commands[0] == "source .venv/bin/activate"
    assert any(c.startswith("backout serve") and c.endswith("&") for c in commands)
    assert "backout report fraud --last" in commands
    for c in commands:  # every file the tour names is shipped
        for path in re.findall(r"examples/\S+", c):
            assert (ROOT / path).exists() or path.endswith(".joblib"), path


@dataclass
class Ran:
    command: str
    code: int
    out: str
    err: str


@pytest.fixture
def folder(tmp_path: Path) -> Iterator[Path]:
    """A fresh working folder with the examples and a ``.venv`` that is this test's venv."""
    shutil.copytree(ROOT / "examples", tmp_path / "examples",
                    ignore=shutil.ignore_patterns("*.joblib"))  # fmt: skip
    (tmp_path / ".venv").symlink_to(sys.prefix, target_is_directory=True)
    yield tmp_path


@pytest.mark.slow
@pytest.mark.timeout(480)
def test_the_readme_tour_runs_as_written(folder: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("BACKOUT_")}
    env |= {
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
        "PYTHONPATH": os.pathsep.join([str(SRC), str(SRC.parent)]),
    }
    background: list[subprocess.Popen[bytes]] = []
    ran: list[Ran] = []
    try:
        for command in tour_commands((ROOT / "README.md").read_text()):
            command = command.replace("127.0.0.1:8000", f"127.0.0.1:{port}")
            command = command.replace("--port 8000", f"--port {port}")
            if command.endswith("&"):
                with open(folder / f"background-{len(background)}.log", "wb") as log:
                    background.append(
                        subprocess.Popen(
                            ["bash", "-c", command.rstrip("& ")],
                            cwd=folder,
                            env=env,
                            stdout=log,
                            stderr=log,
                            start_new_session=True,
                        )
                    )
                continue
            done = subprocess.run(["bash", "-c", command], cwd=folder, env=env,
                                  capture_output=True, text=True, timeout=150)  # fmt: skip
            ran.append(Ran(command, done.returncode, done.stdout, done.stderr))
            transcript = "\n".join(f"$ {r.command}  → {r.code} {r.err.strip()[:300]}" for r in ran)
            problem = f"{transcript}\n\n{command}\nexit {done.returncode}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
            assert "Traceback" not in done.stderr, problem
            if done.returncode == 0:
                continue
            assert command.startswith(MAY_FAIL), problem
            if command.startswith("backout rollback"):
                assert done.stderr.count("\n") == 1, problem
                assert done.stderr.startswith("error: "), problem
            else:
                assert done.returncode == 1, problem
    finally:
        for proc in background:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in background:
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)
    logs = "".join(p.read_text(errors="replace") for p in folder.glob("background-*.log"))
    assert "Traceback" not in logs, logs[-4000:]

    by = {r.command.split(" --", 1)[0]: r for r in ran}
    predict = next(r for r in ran if "/models/fraud/predict" in r.command)
    assert '"predictions"' in predict.out, predict
    infer = next(r for r in ran if "/v2/models/fraud/infer" in r.command)
    assert '"outputs"' in infer.out, infer
    assert "chain verified" in by["backout history fraud"].out
    report = by["backout report fraud"]
    assert re.match(r"incident \d+: fraud ", report.out), report
    reports = folder / ".backout" / "reports"
    assert list(reports.glob("incident-*.html")) and list(reports.glob("incident-*.md"))
    assert "fraud" in (folder / "traffic.log").read_text()
