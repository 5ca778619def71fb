"""Run an ASGI app with uvicorn on a free loopback port, in a thread, for tests."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn

from tests.postgres_server import free_port
from tests.waits import wait_for

__all__ = ["free_port", "serve"]


@contextmanager
def serve(app: Any, *, timeout: float = 30.0, **config: Any) -> Iterator[str]:
    """Serve ``app`` on 127.0.0.1 until the block ends; yields the base URL.

    ``config`` overrides uvicorn's settings (``lifespan="off"``, ``http="h11"`` ...). The
    socket is bound before the server starts, so no other process can take the port.
    """
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    settings: dict[str, Any] = {"log_level": "warning", "lifespan": "on", **config}
    server = uvicorn.Server(uvicorn.Config(app, **settings))
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name=f"uvicorn-{port}", daemon=True
    )
    thread.start()

    def started() -> bool:
        if not thread.is_alive():
            raise RuntimeError(f"the test server on port {port} stopped before it started")
        return server.started

    try:
        wait_for(started, timeout, f"the test server on port {port} to start")
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout)
        sock.close()
