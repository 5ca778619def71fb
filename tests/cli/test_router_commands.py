"""The command line for an external router: ``policy check --router traefik`` refuses what
Traefik cannot carry, with its reason; ``serve --release`` serves one release as a backend."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from backout.registry.artifacts import LocalBlobStore
from backout.registry.releases import Registry
from backout.store import open_store
from tests.models import register_iris
from tests.postgres_server import free_port

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "policies"


def test_policy_check_refuses_for_traefik_what_traefik_cannot_do(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from backout.cli import main

    with pytest.raises(SystemExit) as code:
        main(["policy", "check", str(EXAMPLES / "default.yaml"), "--router", "traefik"])
    captured = capsys.readouterr()
    assert code.value.code == 2 and captured.out == ""
    assert captured.err == (
        "error: the policy cannot run on the traefik router: capture.rate: 0.01 needs the "
        "capture capability (Traefik forwards requests without recording them for replay); "
        "replay.allowed: true needs the capture capability (Traefik forwards requests without "
        "recording them for replay), which it lacks (turn those settings off for this model, "
        "or route it through a router that has them)\n"
    )


def test_policy_check_accepts_for_traefik_a_policy_without_capture(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from backout.cli import main

    policy = tmp_path / "policy.yaml"
    policy.write_text("capture: {rate: 0}\nreplay: {allowed: false}\n")
    with pytest.raises(SystemExit) as code:
        main(["policy", "check", str(policy), "--router", "traefik"])
    assert code.value.code == 0 and "capture:\n  rate: 0" in capsys.readouterr().out


def _env(tmp_path: Path) -> dict[str, str]:
    # The subprocess imports this checkout's backout, whatever the environment had.
    src = str(Path(__file__).resolve().parents[2] / "src")
    return {
        **os.environ,
        "BACKOUT_STORE": f"sqlite:///{tmp_path / 'store.db'}",
        "BACKOUT_ARTIFACTS": str(tmp_path / "artifacts"),
        "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")]),
    }


def test_serve_release_answers_for_that_release_alone(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'store.db'}", create=True)
    registry = Registry(store, LocalBlobStore(tmp_path / "artifacts"))
    for v in ("1.0.0", "1.1.0"):
        register_iris(registry, tmp_path / "models", v)
    store.dispose()  # nothing is deployed: the backend needs no route table
    port = free_port()
    log = tmp_path / "serve.log"
    with log.open("wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "backout", "serve", "--port", str(port), "--workers", "1",
             "--no-access-log", "--release", "iris@1.1.0"],
            env=_env(tmp_path), stdout=subprocess.DEVNULL, stderr=err, start_new_session=True,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/v2/health/ready", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-2000:]
            time.sleep(0.2)
        r = httpx.post(f"{url}/models/iris/predict", json={"instances": [[5.1, 3.5, 1.4, 0.2]]})
        assert r.status_code == 200 and r.headers["x-backout-release"] == "iris@1.1.0"
        assert "serving iris@1.1.0 alone" in log.read_text()
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)


def test_serve_release_of_an_unknown_release_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from backout.cli import main

    store = f"sqlite:///{tmp_path / 'store.db'}"
    open_store(store, create=True).dispose()
    with pytest.raises(SystemExit) as code:
        main(["--store", store, "--artifacts", str(tmp_path), "serve", "--release", "iris@9.9.9"])
    err = capsys.readouterr().err
    assert code.value.code != 0 and err.startswith("error: ") and err.count("\n") == 1
    assert "iris@9.9.9" in err


@pytest.mark.slow
def test_serve_steers_the_traefik_its_policy_names_and_holds_while_traefik_is_down(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """As a user runs it: the policy names Traefik; `backout deploy` and `backout serve`'s
    controller steer it; while Traefik is down the rollout holds, `status` says why in one
    line and the timeline has it once; when Traefik is back it serves the committed table."""
    from backout.store import audit
    from backout.traffic.traefik import TraefikRouter
    from tests.cli.runner import Cli
    from tests.proxy_servers import TraefikServer
    from tests.waits import wait_for

    store_url = f"sqlite:///{tmp_path / 'store.db'}"
    store = open_store(store_url, create=True)
    registry = Registry(store, LocalBlobStore(tmp_path / "artifacts"))
    for v in ("1.0.0", "1.1.0"):
        register_iris(registry, tmp_path / "models", v)
    traefik = TraefikServer()  # its ports and folder; started below, after the outage
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        "rollout: {steps: [10, 100], bake: 1s, min_requests: 0}\n"
        "capture: {rate: 0}\nreplay: {allowed: false}\n"
        f"router: {{kind: traefik, api: '{traefik.api_url}', web: '{traefik.web_url}', "
        f"config_dir: '{traefik.config_dir}', backend: 'http://127.0.0.1:9/{{slug}}'}}\n"
    )
    cli = Cli(capsys, store_url, tmp_path)
    assert cli("deploy", "iris@1.0.0", "--policy", str(policy))[0] == 0
    assert cli("deploy", "iris@1.1.0")[0] == 0
    port = free_port()
    log = tmp_path / "serve.log"
    with log.open("wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "backout", "serve", "--port", str(port), "--workers", "1",
             "--no-access-log"],
            env=_env(tmp_path), stdout=subprocess.DEVNULL, stderr=err, start_new_session=True,
        )  # fmt: skip

    def router_events(kind: str) -> list[audit.Event]:
        with store.read() as conn:
            return [e for e in audit.list_events(conn, "iris") if e.kind == kind]

    try:
        wait_for(lambda: any(e.actor == "controller" for e in router_events("router.error")),
                 60, "the controller to record that Traefik is down")  # fmt: skip
        time.sleep(3)  # past the 1 s bake: nothing may move while Traefik cannot be verified
        doc = cli.json("status", "iris")
        assert isinstance(doc, dict) and doc["routes"] == "iris: 1.0.0=90% 1.1.0=10%"
        assert doc["router"]["kind"] == "traefik" and "cannot be reached" in doc["router"]["error"]
        code, out, _ = cli("status", "iris")
        assert code == 0 and "router traefik: ERROR Traefik's API at" in out
        assert proc.poll() is None
        assert [e.actor for e in router_events("router.error")].count("controller") == 1
        traefik.start()
        wait_for(lambda: router_events("router.recovered"), 60, "the controller to recover")
        router = TraefikRouter(traefik.api_url, traefik.config_dir, lambda m, v: "http://x")
        try:  # no traffic flows here, so the rollout waits at its first step: silence is no pass
            wait_for(lambda: router.served("iris") == {"1.0.0": 90.0, "1.1.0": 10.0}, 30,
                     "Traefik to serve the committed table")  # fmt: skip
        finally:
            router.close()
        assert "router traefik: serves the committed table (verified)" in cli("status", "iris")[1]
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
        traefik.__exit__(None, None, None)
        store.dispose()
    assert "Traceback" not in log.read_text()
