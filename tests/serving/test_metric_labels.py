"""Prometheus labels come only from releases the gateway serves, never from what callers send."""

from __future__ import annotations

import random
import socket
import string
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import quote

import httpx
import orjson

from backout.serving.telemetry import UNKNOWN, HistogramAdder, Metrics
from tests.serving.world import ROW, World

HOSTILE = ["../../etc", "passwd\nbackout_fake 1", '"}evil{', "a" * 300, "é€😀"]


def _word(rng: random.Random) -> str:
    return "".join(rng.choices(string.ascii_letters + string.digits + "./-_", k=12))


def _flood(url: str, n: int, seed: int = 7) -> dict[int, int]:
    """``n`` requests naming random models and versions, by path and header.

    Sent pipelined over four keep-alive connections, so the client costs the test little
    next to the gateway it floods.
    """
    rng = random.Random(seed)
    body = orjson.dumps({"instances": [ROW]})
    requests: list[bytes] = []
    for i in range(n):
        word = HOSTILE[i % len(HOSTILE)] if i % 10 == 0 else _word(rng)
        safe = quote(word, safe="")
        headers = {}
        shape = i % 4
        if shape == 0:
            path = f"/models/{safe}/predict"
        elif shape == 1:
            path = f"/models/iris/versions/{safe}/predict"
        elif shape == 2:
            path = "/models/iris/predict"
            headers["x-backout-version"] = (
                word.encode("ascii", "replace").decode().replace("\n", " ")
            )
        else:
            path = f"/v2/models/{safe}/infer"
        requests.append(_request(path, body, headers))
    host, port = httpx.URL(url).host, httpx.URL(url).port
    codes: dict[int, int] = {}
    chunks = [requests[i::4] for i in range(4)]
    with ThreadPoolExecutor(4) as pool:
        for part in pool.map(lambda c: _pipeline(host, port or 80, c), chunks):
            for code, count in part.items():
                codes[code] = codes.get(code, 0) + count
    return codes


def _request(path: str, body: bytes, headers: dict[str, str]) -> bytes:
    head = [f"POST {path} HTTP/1.1", "host: 127.0.0.1", "content-type: application/json",
            f"content-length: {len(body)}", *(f"{k}: {v}" for k, v in headers.items())]  # fmt: skip
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


def _pipeline(host: str, port: int, requests: list[bytes], window: int = 50) -> dict[int, int]:
    """Send ``requests`` on one connection, ``window`` ahead of the answers; count status codes."""
    codes: dict[int, int] = {}
    buf = b""
    with socket.create_connection((host, port), timeout=30) as sock:
        sent = answered = 0
        while answered < len(requests):
            if sent < len(requests) and sent - answered < window:
                sock.sendall(b"".join(requests[sent : sent + window]))
                sent = min(sent + window, len(requests))
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                chunk = sock.recv(1 << 16)
                assert chunk, "the gateway closed the connection"
                buf += chunk
                continue
            head = buf[:end].decode("latin-1").split("\r\n")
            fields = dict(line.lower().split(": ", 1) for line in head[1:])
            size = int(fields["content-length"])
            while len(buf) < end + 4 + size:
                buf += sock.recv(1 << 16)
            buf = buf[end + 4 + size :]
            code = int(head[0].split()[1])
            codes[code] = codes.get(code, 0) + 1
            answered += 1
    return codes


def test_6000_requests_naming_random_releases_leave_metrics_bounded(world: World) -> None:
    assert world.predict().status_code == 200
    before = world.http.get("/metrics").text
    codes = _flood(world.url, 6000)
    assert sum(codes.values()) == 6000 and set(codes) <= {404}, codes
    after = world.http.get("/metrics").text
    # The flood adds a fixed handful of "unknown" series, whatever it names and however often.
    assert len(after) < 30_000, len(after)
    assert len(after) - len(before) < 12_000, (len(before), len(after))
    for hostile in ("../../etc", "passwd", "evil", "a" * 50, "😀"):
        assert hostile not in after
    assert f'backout_requests_total{{code="404",model="{UNKNOWN}",release="{UNKNOWN}"}}' in after
    assert f'backout_requests_total{{code="404",model="iris",release="{UNKNOWN}"}}' in after
    assert 'backout_requests_total{code="200",model="iris",release="1.0.0"} 1.0' in after
    # Another flood of new names adds no series at all.
    _flood(world.url, 600, seed=8)
    again = world.http.get("/metrics").text
    series = {line.rsplit(" ", 1)[0] for line in after.splitlines() if not line.startswith("#")}
    assert {
        line.rsplit(" ", 1)[0] for line in again.splitlines() if not line.startswith("#")
    } == series


def test_only_known_releases_become_label_values() -> None:
    metrics = Metrics()
    metrics.know({("iris", "1.0.0")})
    assert metrics.labels("iris", "1.0.0") == ("iris", "1.0.0")
    assert metrics.labels("iris", "../../etc") == ("iris", UNKNOWN)
    assert metrics.labels("../../etc", "1.0.0") == (UNKNOWN, UNKNOWN)
    metrics.know({("iris", "1.1.0")})  # a new route state: what is no longer served is unknown
    assert metrics.labels("iris", "1.0.0") == ("iris", UNKNOWN)


def test_histogram_adder_matches_observe_with_this_prometheus_client() -> None:
    """The one use of prometheus-client's private values: fails when a new version moves them."""
    from prometheus_client import CollectorRegistry, Histogram, generate_latest

    buckets = (0.001, 0.01, 0.1)
    samples = [0.0005, 0.002, 0.002, 0.05, 3.0]
    observed = Histogram("h", "h", registry=(a := CollectorRegistry()), buckets=buckets)
    for x in samples:
        observed.observe(x)
    added = Histogram("h", "h", registry=(b := CollectorRegistry()), buckets=buckets)
    adder = HistogramAdder(buckets)
    assert HistogramAdder.supports(added, len(buckets) + 1), "prometheus-client changed"
    adder.add(added, [1, 2, 1, 1], sum(samples))

    def values(registry: CollectorRegistry) -> list[str]:
        return [
            ln for ln in generate_latest(registry).decode().splitlines() if "_created" not in ln
        ]

    assert values(b) == values(a)


def test_histogram_adder_keeps_counts_without_the_private_values() -> None:
    """Should prometheus-client drop them, counts stay exact (the sum becomes approximate)."""

    class Plain:
        def __init__(self) -> None:
            self.seen: list[float] = []

        def observe(self, amount: float) -> None:
            self.seen.append(amount)

    child = Plain()
    HistogramAdder((0.001, 0.01)).add(child, [2, 0, 1], 0.5)
    assert child.seen == [0.001, 0.001, 0.02]
