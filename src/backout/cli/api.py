"""``backout api``: the control API on its own, in this process.

For a host that runs the gateway elsewhere (``backout serve`` starts the same API in a
process of its own on ``--admin-port``). It opens the existing store and serves
``/api/v1`` with uvicorn until stopped; tokens come from ``backout token create``, or
JWTs from the identity provider an ``--oidc`` file names.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Annotated

import typer

from backout.cli.output import err, settings


def api(
    ctx: typer.Context,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port to listen on.")] = 8001,
    oidc: Annotated[
        Path | None,
        typer.Option(help="OIDC config (YAML): issuer, audience, jwks, claim, roles."),
    ] = None,
) -> None:
    """Run the control API (/api/v1, with its OpenAPI at /api/v1/openapi.json)."""
    import uvicorn

    from backout.api.app import create_app
    from backout.api.oidc import load_oidc_config
    from backout.store import redact_url

    s = settings(ctx)
    config = load_oidc_config(oidc) if oidc is not None else None  # checked before anything
    app = create_app(s.url(), artifacts=s.artifacts_root(), reports_dir=s.home() / "reports",
                     oidc=config)  # fmt: skip
    err.print(
        f"backout control API on http://{host}:{port}/api/v1 (OpenAPI at /api/v1/openapi.json); "
        f"store {redact_url(s.url())}" + ("; OIDC on" if config else "")
    )
    _watch_parent()
    # One process, on uvloop and httptools when installed (the gateway's choice too): a read
    # costs a millisecond or two of CPU, and on a busy host that is what decides its latency.
    loop = "uvloop" if importlib.util.find_spec("uvloop") else "auto"
    http = "httptools" if importlib.util.find_spec("httptools") else "auto"
    uvicorn.run(app, host=host, port=port, access_log=False, log_level="warning", loop=loop,
                http=http, timeout_keep_alive=30)  # fmt: skip


def _watch_parent() -> None:
    """Started by ``backout serve``: exit when that process is gone (even killed -9)."""
    import os
    import threading
    import time

    parent = os.environ.get("BACKOUT_API_PARENT")
    if not parent or not parent.isdigit():
        return

    def watch() -> None:
        while os.getppid() == int(parent):
            time.sleep(1.0)
        os._exit(0)

    threading.Thread(target=watch, name="backout-api-parent", daemon=True).start()
