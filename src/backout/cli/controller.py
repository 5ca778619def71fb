"""``backout controller``: the controller alone, with no gateway beside it.

For a model whose traffic goes through an external router (its policy's ``router`` section:
Traefik, the Kubernetes Gateway API) there is no backout gateway to run, only the controller
that steers the router and judges from the policy's ``telemetry``. Run as many as you like
on one store: one holds the lease and acts, the others wait. It stops on SIGTERM or Ctrl-C.
"""

from __future__ import annotations

import signal
import threading
from typing import Annotated

import typer

from backout.cli.output import err, settings


def controller(
    ctx: typer.Context,
    interval: Annotated[
        float, typer.Option(min=0.05, max=60, help="Seconds between two ticks.")
    ] = 0.5,
    lease: Annotated[
        float, typer.Option(min=1, max=600, help="Seconds the lease lasts without renewal.")
    ] = 5.0,
) -> None:
    """Run the controller alone: steer each model's router and judge its telemetry."""
    from backout.control.controller import Controller
    from backout.store import redact_url

    s = settings(ctx)
    ctl = Controller(s.store(), s.registry(), actor="controller")
    stop = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        del frame
        err.print(f"backout controller: {signal.Signals(signum).name}, stopping")
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    err.print(f"backout controller on store {redact_url(s.url())}, ticking every {interval:g} s")
    try:
        ctl.run(stop, interval=interval, lease_s=lease)
    finally:
        ctl.close()
