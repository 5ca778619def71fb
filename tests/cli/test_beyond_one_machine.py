"""The README's "Beyond one machine": its shell commands run as written, its policy excerpt
is a valid policy, every file it names exists, and what cannot run here says so."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import backout
from backout.control.policy import parse_policy
from backout.control.routing import TraefikRouting
from backout.traffic.router import ROUTER_LIMITS, Capability

ROOT = Path(__file__).resolve().parents[2]
SRC = Path(backout.__file__).resolve().parents[1]
# The one command the section shows being refused, and how.
REFUSED = {"backout policy check examples/policies/default.yaml --router traefik": 2}
# Commands another test runs as written (they start servers and take a minute).
ELSEWHERE = {"python examples/scale/run.py": "tests/examples/test_scale.py"}


def section() -> str:
    text = (ROOT / "README.md").read_text()
    body = text.split("\n## Beyond one machine\n", 1)[1]
    return body.split("\n## ", 1)[0]


def blocks() -> list[tuple[str, str]]:
    return re.findall(r"```(\w*)\n(.*?)```", section(), re.S)


def commands() -> list[str]:
    out = []
    for lang, body in blocks():
        if lang != "sh":
            continue
        for line in body.replace("\\\n", " ").splitlines():
            line = re.sub(r"\s+#\s.*$", "", line).strip()
            if line and not line.startswith("#") and line != "source .venv/bin/activate":
                out.append(" ".join(line.split()))
    return out


def test_the_section_has_commands_a_policy_and_marks_what_does_not_run_here() -> None:
    langs = [lang for lang, _ in blocks()]
    assert "sh" in langs and "yaml" in langs and set(REFUSED) <= set(commands())
    for lang, body in blocks():
        if lang not in ("sh", "yaml", ""):
            assert body.startswith("# on a cluster: not run here\n"), body
    assert "have not run on a live cluster here" in section()


def test_the_policy_excerpt_is_a_valid_policy() -> None:
    [excerpt] = [body for lang, body in blocks() if lang == "yaml"]
    policy = parse_policy(excerpt + "capture: {rate: 0}\nreplay: {allowed: false}\n")
    assert isinstance(policy.router, TraefikRouting) and policy.telemetry.kind == "prometheus"


def test_every_file_the_section_names_exists() -> None:
    named = re.findall(
        r"(?<![\w/.])((?:deploy|examples|tests|traffic|telemetry)/[\w./-]*\w/?)", section()
    )
    assert named
    for path in named:
        assert (ROOT / path).exists() or (SRC / "backout" / path).exists(), path


def test_the_commands_run_elsewhere_are_shown_and_their_tests_exist() -> None:
    for command, test in ELSEWHERE.items():
        assert command in commands() and (ROOT / test).exists(), command


@pytest.mark.parametrize("command", [c for c in commands() if c not in ELSEWHERE])
def test_each_command_runs_as_written(command: str) -> None:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])}  # fmt: skip
    ran = subprocess.run(["bash", "-c", command], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=120)  # fmt: skip
    assert ran.returncode == REFUSED.get(command, 0), ran.stderr
    assert "Traceback" not in ran.stderr
    if command in REFUSED:
        assert ran.stderr.startswith("error: the policy cannot run on the traefik router: ")
        assert ran.stderr.count("\n") == 1 and ran.stdout == ""
    else:
        assert ran.stdout.startswith("model: fraud\n")
        kind = "gateway-api" if "gateway-api" in command else "traefik"
        assert ran.stderr.splitlines() == [
            f"note: on the {kind} router, routing keys (x-backout-key) are not sticky ("
            + ROUTER_LIMITS[kind][Capability.STICKY_KEYS]
            + ")",
            f"note: on the {kind} router, `backout drill` is refused ("
            + ROUTER_LIMITS[kind][Capability.FAULT_INJECTION]
            + ")",
        ]
