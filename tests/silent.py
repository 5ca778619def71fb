"""Servers on 127.0.0.1 that misbehave on purpose: one accepts and never answers, one answers
a byte at a time. Bounded: each lives for one ``with`` block and holds at most 16 sockets."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator


@contextlib.contextmanager
def silent_server() -> Iterator[int]:
    """A TCP port that accepts connections, reads what is sent and never writes a byte."""
    with _server(_hold) as port:
        yield port


@contextlib.contextmanager
def trickle_server(interval_s: float = 0.2) -> Iterator[int]:
    """An HTTP server that answers 200 with headers at once, then one body byte per interval."""

    def trickle(conn: socket.socket, stop: threading.Event) -> None:
        conn.recv(65536)
        conn.sendall(
            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 100000\r\n\r\n"
        )
        while not stop.wait(interval_s):
            conn.sendall(b" ")

    with _server(trickle) as port:
        yield port


def _hold(conn: socket.socket, stop: threading.Event) -> None:
    conn.settimeout(0.1)
    while not stop.is_set():
        try:
            if not conn.recv(65536):
                return
        except TimeoutError:
            continue
        except OSError:
            return


@contextlib.contextmanager
def _server(handle: object) -> Iterator[int]:
    listener = socket.create_server(("127.0.0.1", 0), backlog=16)
    listener.settimeout(0.1)
    port = listener.getsockname()[1]
    stop = threading.Event()
    conns: list[socket.socket] = []

    def serve() -> None:
        while not stop.is_set() and len(conns) < 16:
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conns.append(conn)
            threading.Thread(target=_guarded, args=(handle, conn, stop), daemon=True).start()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield port
    finally:
        stop.set()
        thread.join(5)
        listener.close()
        time.sleep(0.05)
        for c in conns:
            with contextlib.suppress(OSError):
                c.close()


def _guarded(handle: object, conn: socket.socket, stop: threading.Event) -> None:
    with contextlib.suppress(OSError):
        handle(conn, stop)  # type: ignore[operator]
