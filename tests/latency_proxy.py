"""A TCP proxy on 127.0.0.1 that adds latency on demand: put it between backout and its
PostgreSQL server to make the store slow without stopping it.

Every chunk the server sends back is held ``delay`` seconds before it is passed on (so
every round trip takes at least that much longer); ``delay`` may change while connections
are open. Bounded: at most 64 connections, each with two pump threads; everything is closed
when the ``with`` block ends.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from types import TracebackType


class LatencyProxy:
    """``127.0.0.1:port`` → ``127.0.0.1:upstream``, answers delayed by ``delay`` s."""

    def __init__(self, upstream: int, *, delay: float = 0.0) -> None:
        self.upstream = upstream
        self.delay = delay
        self._listener = socket.create_server(("127.0.0.1", 0), backlog=64)
        self._listener.settimeout(0.1)
        self.port: int = self._listener.getsockname()[1]
        self._stop = threading.Event()
        self._socks: list[socket.socket] = []
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._accept, daemon=True)

    def __enter__(self) -> LatencyProxy:
        self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        self._thread.join(5)
        self._listener.close()
        with self._lock:
            for s in self._socks:
                with contextlib.suppress(OSError):
                    s.close()

    def url(self, url: str) -> str:
        """``url`` (a PostgreSQL URL on the upstream port) through this proxy."""
        return url.replace(f":{self.upstream}/", f":{self.port}/")

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                if len(self._socks) >= 128:  # 64 connections, two sockets each
                    client.close()
                    continue
                try:
                    server = socket.create_connection(("127.0.0.1", self.upstream), timeout=5)
                except OSError:
                    client.close()
                    continue
                self._socks += [client, server]
            for src, dst, slow in ((client, server, False), (server, client, True)):
                threading.Thread(target=self._pump, args=(src, dst, slow), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, slow: bool) -> None:
        src.settimeout(0.2)
        try:
            while not self._stop.is_set():
                try:
                    chunk = src.recv(65536)
                except TimeoutError:
                    continue
                if not chunk:
                    break
                if slow and self.delay > 0:
                    time.sleep(self.delay)
                dst.sendall(chunk)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                with contextlib.suppress(OSError):
                    s.close()
            with self._lock:
                for s in (src, dst):
                    if s in self._socks:
                        self._socks.remove(s)
