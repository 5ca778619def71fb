"""A webhook receiver on 127.0.0.1 for the notification, outbox and chaos tests: records every
delivery with its idempotency key, answers with given statuses in turn (then 200), or hangs
(on the first delivery, or on every one)."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson


@dataclass
class Delivery:
    key: str
    body: dict[str, Any]


class Receiver:
    def __init__(
        self, statuses: list[int] | None = None, *, hang_first: bool = False, hang: bool = False
    ) -> None:
        self.statuses = list(statuses or [])
        self.hang_first = hang_first
        self.hang = hang  # every delivery hangs (up to 10 s, or until stop())
        self.deliveries: list[Delivery] = []
        self.got = threading.Event()
        self.release = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = orjson.loads(self.rfile.read(int(self.headers["content-length"])))
                first = not receiver.deliveries
                receiver.deliveries.append(Delivery(self.headers.get("idempotency-key", ""), body))
                receiver.got.set()
                if first and receiver.hang_first:
                    receiver.release.wait(30)
                    return
                if receiver.hang:
                    receiver.release.wait(10)
                    return
                status = receiver.statuses.pop(0) if receiver.statuses else 200
                self.send_response(status)
                self.send_header("content-length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/T000/SECRET"
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self.thread.start()

    @property
    def bodies(self) -> list[dict[str, Any]]:
        """What was delivered, in order."""
        return [d.body for d in self.deliveries]

    def unique(self) -> dict[str, Delivery]:
        """Deliveries deduplicated by idempotency key, as a careful receiver keeps them."""
        return {d.key: d for d in self.deliveries}

    def stop(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()
