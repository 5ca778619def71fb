"""``backout serve``: the gateway's worker processes, with the controller beside them.

For whoever runs backout on a host: it opens the store (an existing one; ``--init`` creates
it when there is none) and migrates it once, hands the settings to the workers through the
environment, and runs uvicorn until stopped. Beyond one machine the two halves run apart:
``--gateway-only`` runs gateway replicas (any number, on any hosts, sharing one PostgreSQL
store) and ``--controller-only`` runs a controller (two or more: one holds the lease and
acts, the others wait to take over).
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Annotated

import typer

from backout.cli.output import Settings, err, settings


def serve(
    ctx: typer.Context,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port to listen on.")] = 8000,
    workers: Annotated[
        int | None, typer.Option(min=1, help="Worker processes (default: one per core).")
    ] = None,
    max_body_bytes: Annotated[
        int, typer.Option(min=1, help="Largest request body accepted (413 above).")
    ] = 1 << 20,
    warm_rollback_points: Annotated[
        int, typer.Option(min=0, help="Known-good releases per model kept loaded.")
    ] = 2,
    access_log: Annotated[
        bool, typer.Option(help="Write a structured access log line per request to stderr.")
    ] = True,
    controller: Annotated[
        bool, typer.Option(help="Run the controller beside the gateway (one acts per store).")
    ] = True,
    gateway_only: Annotated[
        bool,
        typer.Option(
            "--gateway-only",
            help="Run only the gateway workers, a replica among others on the same store "
            "(as --no-controller).",
        ),
    ] = False,
    controller_only: Annotated[
        bool,
        typer.Option(
            "--controller-only",
            help="Run only the controller, no gateway: one of several, the lease holder acts.",
        ),
    ] = False,
    lease: Annotated[
        float,
        typer.Option(
            min=1.0,
            max=300.0,
            help="Seconds a silent controller's lease lasts before another "
            "takes over (it renews it every tick).",
        ),
    ] = 5.0,
    telemetry_buffer: Annotated[
        int,
        typer.Option(
            min=1,
            help="Telemetry batches a worker keeps while the store is unreachable (about "
            "one per release per second); past it the oldest are dropped and counted.",
        ),
    ] = 10_000,
    init: Annotated[
        bool,
        typer.Option("--init", help="Create the store first if there is none (as `backout init`)."),
    ] = False,
    admin_port: Annotated[
        int | None,
        typer.Option(
            min=0,
            max=65535,
            help="Also run the control API, in a process of its own, on this port (e.g. 8001).",
        ),
    ] = None,
    admin_host: Annotated[
        str, typer.Option(help="Address the control API listens on.")
    ] = "127.0.0.1",
    oidc: Annotated[
        Path | None, typer.Option(help="OIDC config (YAML) for the control API.")
    ] = None,
    release: Annotated[
        str | None,
        typer.Option(
            metavar="MODEL@VERSION",
            help="Serve this one release alone, as a backend behind an external router "
            "(Traefik); no controller runs here.",
        ),
    ] = None,
) -> None:
    """Run the gateway (N worker processes), the controller beside it, and the control API."""
    import tempfile

    import uvicorn

    if gateway_only and controller_only:
        raise typer.BadParameter("choose one of --gateway-only and --controller-only")
    if gateway_only:
        controller = False
    s = settings(ctx)
    s.store(create=init)  # migrate once here, before the workers start
    if controller_only:
        _controller_alone(s, lease)
        return
    if release is not None:
        ref = s.registry().get(release).ref  # an unknown release fails here, in one line
        os.environ["BACKOUT_RELEASE"] = ref
        controller = False  # the controller runs once, beside the router, not per backend
    else:
        os.environ.pop("BACKOUT_RELEASE", None)
    s.close()
    os.environ["BACKOUT_STORE"] = s.url()
    if s.artifacts_remote():
        os.environ["BACKOUT_ARTIFACTS"] = s.artifacts_location()
        os.environ["BACKOUT_ARTIFACT_CACHE"] = str(s.cache_root().resolve())
        endpoint = s.endpoint()
        if endpoint:
            os.environ["BACKOUT_S3_ENDPOINT"] = endpoint
    else:
        os.environ["BACKOUT_ARTIFACTS"] = str(s.artifacts_root().resolve())
    os.environ["BACKOUT_MAX_BODY_BYTES"] = str(max_body_bytes)
    os.environ["BACKOUT_WARM_ROLLBACK_POINTS"] = str(warm_rollback_points)
    os.environ["BACKOUT_ACCESS_LOG"] = "1" if access_log else ""
    os.environ["BACKOUT_TELEMETRY_BUFFER"] = str(telemetry_buffer)
    metrics_dir = tempfile.mkdtemp(prefix="backout-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    n = workers or os.cpu_count() or 1
    try:
        import uvloop  # noqa: F401

        loop = "uvloop"
    except ImportError:
        loop = "auto"
    serving = f" serving {os.environ['BACKOUT_RELEASE']} alone" if release else ""
    err.print(
        f"backout gateway on http://{host}:{port} with {n} worker(s){serving}; "
        f"store {_redacted(s.url())}"
    )
    stop = threading.Event()
    admin = None
    if admin_port and release is None:
        admin = ApiProcess(_api_command(s, admin_host, admin_port, oidc), stop)
    if controller:
        from backout.control.controller import Controller

        ctl = Controller(s.store(), s.registry(), actor="controller")
        threading.Thread(
            target=ctl.run, args=(stop,), kwargs={"lease_s": lease}, name="backout-controller",
            daemon=True,
        ).start()  # fmt: skip
        err.print(_who_leads(s))
    try:
        uvicorn.run(
            "backout.serving.app:create_app", factory=True, host=host, port=port, workers=n,
            http="httptools", loop=loop, access_log=False, log_level="warning",
        )  # fmt: skip
    finally:
        import shutil

        stop.set()
        if admin is not None:
            admin.stop()
        shutil.rmtree(metrics_dir, ignore_errors=True)


def _controller_alone(s: Settings, lease_s: float) -> None:
    """Run one controller in this process until SIGTERM or Ctrl-C; it acts while it holds
    the store's lease and gives the lease up when it stops."""
    import signal

    from backout.control.controller import Controller, default_holder

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    err.print(
        f"backout controller {default_holder()} on store {_redacted(s.url())} "
        f"(lease {lease_s:g} s); {_who_leads(s)}"
    )
    Controller(s.store(), s.registry(), actor="controller").run(stop, lease_s=lease_s)
    s.close()


def _who_leads(s: Settings) -> str:
    """One line: which controller holds the store's lease now."""
    import time

    from backout.control.lease import current

    held = current(s.store())
    if held is None or not held.live(time.time()):
        return "no controller holds the lease yet: the first to ask takes it"
    return f"controller {held.holder} leads (lease generation {held.generation}); others wait"


def _api_command(s: Settings, host: str, port: int, oidc: Path | None) -> list[str]:
    """The ``backout api`` command line for this store and artifact store."""
    artifacts = (
        s.artifacts_location() if s.artifacts_remote() else str(s.artifacts_root().resolve())
    )
    cmd = [sys.executable, "-m", "backout", "--store", s.url(), "--artifacts", artifacts,
           "api", "--host", host, "--port", str(port)]  # fmt: skip
    if oidc is not None:
        cmd += ["--oidc", str(oidc.resolve())]
    return cmd


class ApiProcess:
    """``backout api`` in a process of its own, so the data path never waits on it, and
    started again whenever it exits on its own (a crash, a kill -9, the OOM killer) until
    ``serve`` stops: the control plane recovers without a restart of the gateway.

    Restarts back off from 1 s to 30 s while the API keeps dying within a minute of its start,
    so a broken configuration costs one line every 30 s rather than a busy loop.
    """

    def __init__(self, cmd: list[str], stopping: threading.Event) -> None:
        self.cmd, self.stopping = cmd, stopping
        self._lock = threading.Lock()
        self.proc = self._spawn()
        threading.Thread(target=self._watch, name="backout-api-watch", daemon=True).start()

    def _spawn(self) -> subprocess.Popen[bytes]:
        # The API exits if this process dies without stopping it (killed -9): no orphan.
        env = {**os.environ, "BACKOUT_API_PARENT": str(os.getpid())}
        return subprocess.Popen(self.cmd, env=env)

    def _watch(self) -> None:
        import time

        backoff = 1.0
        while not self.stopping.is_set():
            started = time.monotonic()
            code = self.proc.wait()
            if self.stopping.wait(backoff):
                return
            with self._lock:
                if self.stopping.is_set():
                    return
                old = self.proc.pid
                self.proc = self._spawn()
            err.print(
                f"backout api (pid {old}) exited with {code}; started again as pid {self.proc.pid}"
            )
            backoff = 1.0 if time.monotonic() - started > 60 else min(backoff * 2, 30.0)

    def stop(self) -> None:
        """Stop the API (SIGTERM, then SIGKILL after 10 s); it is not started again."""
        self.stopping.set()
        with self._lock:
            proc = self.proc
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


def _redacted(url: str) -> str:
    from backout.store import redact_url

    return redact_url(url)
