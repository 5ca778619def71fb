"""Carry TCP between this host's loopback and a network namespace's own loopback.

    python examples/scale/netns_relay.py NAMESPACE --expose 41001:8000 --reach 5432 --reach 9000

A replica in its own network namespace has a loopback of its own: it cannot reach the
store on the host's 127.0.0.1, and nothing on the host can reach it. This relay (run as
root, like ``ip netns``) holds sockets in both namespaces — a socket belongs to the namespace
its thread was in when it was made — and copies bytes between them:

- ``--expose HOST:NS``: the host's 127.0.0.1:HOST is the namespace's 127.0.0.1:NS (Traefik
  and Prometheus reach the replica this way);
- ``--reach PORT``: the namespace's 127.0.0.1:PORT is the host's 127.0.0.1:PORT (the replica
  reaches PostgreSQL and the S3 endpoint this way).

Every connection stays on a loopback; no link or address is added to either namespace. It
prints ``ready`` once it listens, and runs until SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import os
import signal
import socket
from collections.abc import Iterator

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)  # os.setns is Python 3.12's; libc's is the same call


def setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


class Namespaces:
    def __init__(self, name: str) -> None:
        self.host = os.open("/proc/self/ns/net", os.O_RDONLY)
        self.inner = os.open(f"/run/netns/{name}", os.O_RDONLY)

    @contextlib.contextmanager
    def inside(self) -> Iterator[None]:
        setns(self.inner)
        try:
            yield
        finally:
            setns(self.host)


def listener(port: int) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", port))
    s.listen(128)
    s.setblocking(False)
    return s


async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        with contextlib.suppress(OSError, RuntimeError):
            writer.close()


async def join(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, ns: Namespaces | None, port: int
) -> None:
    """Connect to 127.0.0.1:port (inside ``ns`` when given) and copy both ways."""
    if ns is not None:
        with ns.inside():  # this loop's only thread: nothing else runs meanwhile
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    else:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setblocking(False)
    try:
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    except OSError:
        sock.close()
        writer.close()
        return
    r2, w2 = await asyncio.open_connection(sock=sock)
    await asyncio.gather(pipe(reader, w2), pipe(r2, writer))


async def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("namespace")
    p.add_argument("--expose", action="append", default=[], metavar="HOST:NS")
    p.add_argument("--reach", action="append", default=[], type=int, metavar="PORT")
    args = p.parse_args()
    ns = Namespaces(args.namespace)
    servers = []
    for port in args.reach:
        with ns.inside():
            sock = listener(port)

        async def reach(r: asyncio.StreamReader, w: asyncio.StreamWriter, port: int = port) -> None:
            await join(r, w, None, port)

        servers.append(await asyncio.start_server(reach, sock=sock))
    for pair in args.expose:
        host, inner = (int(x) for x in pair.split(":"))

        async def expose(
            r: asyncio.StreamReader, w: asyncio.StreamWriter, port: int = inner
        ) -> None:
            await join(r, w, ns, port)

        servers.append(await asyncio.start_server(expose, sock=listener(host)))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print("ready", flush=True)
    await stop.wait()
    for s in servers:
        s.close()


if __name__ == "__main__":
    asyncio.run(main())
