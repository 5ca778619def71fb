"""The command line with ``--artifacts s3://...`` against a moto endpoint."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import orjson
import pytest

from backout.cli import main
from tests.chaos.served import ROW
from tests.loopback import free_port
from tests.s3_server import S3Server
from tests.waits import wait_for

pytestmark = pytest.mark.databases("sqlite")


class S3Cli:
    """``backout`` in this process, on one store, with its artifacts in a bucket."""

    def __init__(self, capsys: pytest.CaptureFixture[str], store_url: str, home: Path,
                 artifacts: str, endpoint: str) -> None:  # fmt: skip
        self.capsys = capsys
        self.base = ["--store", store_url, "--artifacts", artifacts, "--s3-endpoint", endpoint,
                     "--artifact-cache", str(home / "cache"), "--actor", "ana"]  # fmt: skip

    def __call__(self, *args: str) -> tuple[int, str, str]:
        self.capsys.readouterr()
        try:
            main([*self.base, *args])
            code = 0
        except SystemExit as exc:
            code = int(exc.code or 0)
        captured = self.capsys.readouterr()
        return code, captured.out, captured.err


def test_init_register_verify_and_deploy_through_s3(
    capsys: pytest.CaptureFixture[str], store_url: str, tmp_path: Path, s3_env: None,
    s3_server: S3Server, model_file: Path,
) -> None:  # fmt: skip
    cli = S3Cli(capsys, store_url, tmp_path, "s3://models-cli/team-a", s3_server.endpoint)
    code, out, err = cli("init")
    assert (code, err) == (0, "")
    assert "artifacts  s3://models-cli/team-a (bucket created)" in out
    code, out, err = cli("release", "register", "iris", "1.0.0", "--artifact", str(model_file))
    assert code == 0, err
    keys = s3_server.client().list_objects_v2(Bucket="models-cli", Prefix="team-a/sha256/")
    assert len(keys["Contents"]) == 2  # the model and the manifest
    code, out, err = cli("release", "verify", "iris@1.0.0")
    assert code == 0, out + err
    code, out, err = cli("deploy", "iris@1.0.0")  # pre-flight: load and answer, from the bucket
    assert code == 0, err
    assert "live at 100%" in out
    assert list((tmp_path / "cache" / "sha256").rglob("*"))  # this host's copy
    code, out, _ = cli("init", "--json")
    assert orjson.loads(out)["bucket_created"] is False


def test_an_endpoint_that_is_down_is_one_line_and_changes_nothing(
    capsys: pytest.CaptureFixture[str], store_url: str, tmp_path: Path, s3_env: None,
    own_s3: S3Server, model_file: Path,
) -> None:  # fmt: skip
    cli = S3Cli(capsys, store_url, tmp_path, "s3://models-down", own_s3.endpoint)
    assert cli("init")[0] == 0
    assert cli("release", "register", "iris", "1.0.0", "--artifact", str(model_file))[0] == 0
    own_s3.stop()
    code, out, err = cli(
        "release", "register", "iris", "1.0.1", "--artifact", str(model_file), "--changelog", "x"
    )
    assert code == 2 and out == ""
    assert err.startswith(f"error: artifact store s3://models-down at {own_s3.endpoint} ")
    assert "cannot be reached" in err and err.count("\n") == 1
    code, out, _ = cli("release", "list", "iris", "--json")
    assert [r["ref"] for r in orjson.loads(out)] == ["iris@1.0.0"]
    # The release is not in this host's cache, so it cannot be checked or loaded: one line.
    code, out, err = cli("deploy", "iris@1.0.0")
    assert code == 2 and err.count("\n") == 1 and "cannot be reached" in err
    code, out, _ = cli("status", "iris", "--json")
    assert code != 0  # nothing was deployed


def test_init_on_an_endpoint_that_is_down_creates_no_store(
    capsys: pytest.CaptureFixture[str], store_url: str, tmp_path: Path, s3_env: None
) -> None:
    endpoint = f"http://127.0.0.1:{free_port()}"
    cli = S3Cli(capsys, store_url, tmp_path, "s3://models", endpoint)
    code, _, err = cli("init")
    assert code == 2 and "cannot be reached" in err and err.count("\n") == 1
    code, _, err = cli("release", "list")
    assert code != 0 and "no store" in err


@pytest.mark.slow
def test_serve_loads_a_release_from_the_bucket_on_a_host_that_never_had_it(
    capsys: pytest.CaptureFixture[str], store_url: str, tmp_path: Path, s3_env: None,
    s3_server: S3Server, model_file: Path,
) -> None:  # fmt: skip
    """About 5 s: a real `backout serve` whose workers fetch the release through their own
    (empty) host cache, then answer."""
    cli = S3Cli(capsys, store_url, tmp_path, "s3://models-serve/p", s3_server.endpoint)
    assert cli("init")[0] == 0
    assert cli("release", "register", "iris", "1.0.0", "--artifact", str(model_file))[0] == 0
    assert cli("deploy", "iris@1.0.0")[0] == 0
    port = free_port()
    gateway_cache = tmp_path / "gateway-host-cache"
    env = {**os.environ, "BACKOUT_STORE": store_url, "BACKOUT_ARTIFACTS": "s3://models-serve/p",
           "BACKOUT_S3_ENDPOINT": s3_server.endpoint, "BACKOUT_ARTIFACT_CACHE": str(gateway_cache)}  # fmt: skip
    log = tmp_path / "serve.log"
    with open(log, "wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "backout", "serve", "--port", str(port), "--workers", "1",
             "--no-access-log", "--no-controller"],
            env=env, stdout=subprocess.DEVNULL, stderr=err, start_new_session=True,
        )  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}/models/iris/predict"

        def answered() -> bool:
            assert proc.poll() is None, log.read_text()
            try:
                return httpx.post(url, json={"instances": [ROW]}, timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(answered, 60, "the gateway to answer from the bucket", interval=0.2)
        assert list((gateway_cache / "sha256").rglob("*"))
    finally:
        proc.terminate()
        proc.wait(20)
