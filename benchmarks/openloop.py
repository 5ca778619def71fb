"""An open-loop HTTP load generator: requests go out on a fixed schedule, whatever the server does.

    .venv/bin/python benchmarks/openloop.py --port 8000 --path /models/iris/predict \\
        --body '{"instances": [[5.1, 3.5, 1.4, 0.2]]}' --rate 500 --duration 10
    .venv/bin/python benchmarks/openloop.py --port 8001 --method GET \\
        --path /api/v1/models/iris/status --header "Authorization: Bearer TOKEN" --rate 50

Why hand-written: wrk keeps each connection busy (closed loop), so it cannot hold a fixed
rate, and wrk2 (which can) is not packaged by Debian. Latency here is measured from each
request's *scheduled* send time, not its actual one, so a stalled server is charged for the
requests it delayed (no coordinated omission). It runs in its own process, on one thread,
with non-blocking keep-alive sockets and ``select`` (microsecond timeouts, unlike epoll's
milliseconds), so a send is late by tens of microseconds at most.

With ``--rate 0`` it runs closed loop instead: each connection sends its next request as
soon as the previous one is answered, for ``--duration`` seconds (latency from the actual
send). The cutover benchmark probes that way, so its probe never builds a backlog of its own.

It prints one JSON document on stdout: counts, errors and latency percentiles in
microseconds. With ``--log FILE`` it also writes one line per response, ``monotonic_ns
status worker release``, with ``worker`` and ``release`` taken from the ``x-backout-worker``
and ``x-backout-release`` response headers (the cutover benchmark reads them); with
``--log-sent`` each line also ends with the request's actual send time (``monotonic_ns``), so
a reader can tell which requests were *sent* after a switch, whatever their latency; with
``--log-due`` it then ends with the time the request was *due* (``monotonic_ns``), so a
reader can charge each request from its due time, bucket by bucket (the soak does).

SIGTERM stops it early and gracefully: nothing new is sent, answers in flight are awaited
(up to ``--drain``), and the summary is printed as usual. ``--duration`` still bounds a run
nobody stops.
"""

from __future__ import annotations

import argparse
import collections
import ctypes
import json
import select
import signal
import socket
import sys
import time
from dataclasses import dataclass, field
from typing import Any, TextIO

NS = 1_000_000_000


@dataclass
class Conn:
    """One keep-alive connection with at most one request in flight."""

    sock: socket.socket
    scheduled_ns: int = 0  # when the request in flight was due; 0 when idle
    sent_ns: int = 0  # when the request in flight actually went out
    buf: bytearray = field(default_factory=bytearray)


@dataclass
class Tally:
    latencies_us: list[float] = field(default_factory=list)
    sent: int = 0
    ok: int = 0
    non_2xx: int = 0
    socket_errors: int = 0
    statuses: collections.Counter[int] = field(default_factory=collections.Counter)


def _tight_timer_slack() -> None:
    """Ask Linux for 1 µs timer slack (default 50 µs) so select wakes on time."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(29, 1000, 0, 0, 0)  # PR_SET_TIMERSLACK, in nanoseconds
    except (OSError, AttributeError):
        pass


def _connect(host: str, port: int) -> Conn:
    sock = socket.create_connection((host, port), timeout=5)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.setblocking(False)
    return Conn(sock)


def _parse(buf: bytearray) -> tuple[int, dict[bytes, bytes], int] | None:
    """(status, headers, total length) of the first complete response in ``buf``, or None."""
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        return None
    lines = bytes(buf[:end]).split(b"\r\n")
    status = int(lines[0].split(b" ", 2)[1])
    headers: dict[bytes, bytes] = {}
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        headers[name.strip().lower()] = value.strip()
    if b"content-length" not in headers:
        raise ValueError("the server answered without content-length (chunked is not supported)")
    total = end + 4 + int(headers[b"content-length"])
    return (status, headers, total) if len(buf) >= total else None


def run(args: argparse.Namespace, log: TextIO | None) -> dict[str, Any]:
    _tight_timer_slack()
    conns = [_connect(args.host, args.port) for _ in range(args.connections)]
    body = args.body.encode()
    extra = "".join(f"{h}\r\n" for h in args.header)
    head = (
        f"{args.method} {args.path} HTTP/1.1\r\nHost: {args.host}:{args.port}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n{extra}"
    ).encode()
    closed = args.rate == 0
    interval_ns = NS // args.rate if not closed else NS
    total = int(args.rate * args.duration) if not closed else 0
    warmup_ns = int(args.warmup * NS)
    idle = collections.deque(conns)
    by_fd = {c.sock.fileno(): c for c in conns}
    backlog: collections.deque[int] = collections.deque()  # scheduled times not yet sent
    tally = Tally()
    start = time.monotonic_ns() + NS // 10
    deadline = start + int((args.duration + args.drain) * NS)
    k = 0
    in_flight = 0
    stopping = False

    def stop(_signum: int, _frame: Any) -> None:
        # Stop scheduling; the loop below then drains what is in flight and returns.
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)

    def send(conn: Conn, scheduled: int, n: int) -> None:
        nonlocal in_flight
        key = f"x-backout-key: load-{n}\r\n\r\n".encode() if args.keys else b"\r\n"
        try:
            conn.sock.sendall(head + key + body)
        except OSError:
            tally.socket_errors += 1
            return
        conn.scheduled_ns = scheduled
        conn.sent_ns = time.monotonic_ns()
        tally.sent += 1
        in_flight += 1

    while True:
        now = time.monotonic_ns()
        if closed:
            sending = now < start + int(args.duration * NS) and not stopping
            while sending and idle:
                send(idle.popleft(), now, tally.sent)
            if not sending and in_flight == 0:
                break
        if stopping and k < total:
            total = k
            backlog.clear()
            deadline = min(deadline, now + int(args.drain * NS))
        while k < total and start + k * interval_ns <= now:
            backlog.append(start + k * interval_ns)
            k += 1
        while backlog and idle:
            send(idle.popleft(), backlog.popleft(), tally.sent)
        if not closed and k >= total and not backlog and in_flight == 0:
            break
        if now > deadline:
            tally.socket_errors += in_flight + len(backlog) + (total - k)
            break
        next_due = start + k * interval_ns if k < total else now + NS // 100
        if closed:
            next_due = max(now, start) + NS // 100 if now >= start else start
        timeout = max(0.0, (next_due - now) / NS) if not backlog or idle else 0.01
        busy = [c.sock for c in conns if c.scheduled_ns]
        readable, _, _ = select.select(busy, [], [], timeout) if busy else ([], [], [])
        if not busy and timeout > 0:
            time.sleep(timeout)
        for sock in readable:
            conn = by_fd[sock.fileno()]
            try:
                chunk = sock.recv(65536)
            except BlockingIOError:
                continue
            except OSError:
                chunk = b""
            now = time.monotonic_ns()
            if not chunk:  # the server closed the connection: count it, reconnect
                tally.socket_errors += 1
                in_flight -= 1
                conn.sock.close()
                del by_fd[sock.fileno()]
                fresh = _connect(args.host, args.port)
                conns[conns.index(conn)] = fresh
                by_fd[fresh.sock.fileno()] = fresh
                idle.append(fresh)
                continue
            conn.buf += chunk
            parsed = _parse(conn.buf)
            if parsed is None:
                continue
            status, headers, length = parsed
            del conn.buf[:length]
            if conn.scheduled_ns - start >= warmup_ns:
                tally.latencies_us.append((now - conn.scheduled_ns) / 1000)
                tally.statuses[status] += 1
            if 200 <= status < 300:
                tally.ok += 1
            else:
                tally.non_2xx += 1
            if log is not None:
                worker = headers.get(b"x-backout-worker", b"-").decode()
                release = headers.get(b"x-backout-release", b"-").decode()
                sent = f" {conn.sent_ns}" if args.log_sent else ""
                due = f" {conn.scheduled_ns}" if args.log_due else ""
                log.write(f"{now} {status} {worker} {release}{sent}{due}\n")
            conn.scheduled_ns = 0
            in_flight -= 1
            idle.append(conn)
    for c in conns:
        c.sock.close()
    lat = sorted(tally.latencies_us)

    def pct(q: float) -> float:
        return lat[min(len(lat) - 1, int(q * len(lat)))] if lat else float("nan")

    elapsed = (time.monotonic_ns() - start) / NS
    return {
        "rate": args.rate or "closed loop",
        "sent": tally.sent,
        "ok": tally.ok,
        "non_2xx": tally.non_2xx,
        "socket_errors": tally.socket_errors,
        "measured": len(lat),
        "achieved_rps": tally.sent / elapsed if elapsed > 0 else 0.0,
        "p50_us": pct(0.50),
        "p90_us": pct(0.90),
        "p99_us": pct(0.99),
        "p999_us": pct(0.999),
        "max_us": lat[-1] if lat else float("nan"),
        "statuses": dict(tally.statuses),
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--path", required=True)
    p.add_argument("--body", default="", help="the request's JSON body (none: empty)")
    p.add_argument("--method", default="POST", help="POST, or GET for reads")
    p.add_argument(
        "--header",
        action="append",
        default=[],
        metavar="'NAME: VALUE'",
        help="one more request header (repeatable)",
    )
    p.add_argument("--rate", type=int, default=500, help="requests per second; 0: closed loop")
    p.add_argument("--duration", type=float, default=10.0, help="seconds of sending")
    p.add_argument("--warmup", type=float, default=1.0, help="seconds not counted in latency")
    p.add_argument("--drain", type=float, default=5.0, help="seconds to wait for late answers")
    p.add_argument("--connections", type=int, default=8)
    p.add_argument("--keys", type=int, default=1, help="1: send x-backout-key per request")
    p.add_argument("--log", help="write one line per response here")
    p.add_argument("--log-sent", action="store_true", help="end each log line with its send time")
    p.add_argument("--log-due", action="store_true", help="then with its due time")
    args = p.parse_args(argv)
    if args.log:
        with open(args.log, "w") as log:
            result = run(args, log)
    else:
        result = run(args, None)
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
