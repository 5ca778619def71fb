"""Telemetry from a real Prometheus scraping a real Traefik every second: exact counts,
errors and approximate latencies per release; nothing scraped is no batches, never zeros;
a Prometheus that is down or is not Prometheus is a one-line TelemetryUnavailable."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from backout.errors import TelemetryUnavailable
from backout.telemetry.batches import (
    Batch,
    bucket_upper,
    latency_bucket,
    latency_quantile,
    sum_batches,
)
from backout.telemetry.prometheus import (
    METRIC,
    PrometheusTelemetry,
    Sample,
    increases,
    place,
    to_batches,
)
from backout.traffic.routes import BUCKETS, RouteTable
from backout.traffic.traefik import TraefikRouter
from tests.loopback import serve
from tests.postgres_server import free_port
from tests.proxy_servers import PrometheusServer, TraefikServer
from tests.traffic.backends import Releases, iris_backends, predict


def series(
    service: str, code: str, le: str, values: list[tuple[float, float]], instance: str = "t:1"
) -> dict[str, object]:
    labels = {"__name__": METRIC, "service": service, "code": code, "le": le,
              "method": "POST", "protocol": "http", "instance": instance, "job": "traefik"}  # fmt: skip
    return {"metric": labels, "values": [[t, str(v)] for t, v in values]}


def pairs(ts: list[float], vs: list[float]) -> list[tuple[float, float]]:
    return list(zip(ts, vs, strict=True))


def test_increases_count_resets_and_new_series_from_zero() -> None:
    s = [Sample(1.0, 5), Sample(2.0, 8), Sample(3.0, 2)]
    assert increases(s) == [(1.0, 2.0, 3), (2.0, 3.0, 2)]
    assert increases(s, new_after=0.0)[0] == (0.0, 1.0, 5)


def test_traefik_buckets_are_placed_at_their_geometric_middle() -> None:
    assert place(0.01, 0.04) == latency_bucket(0.02)
    assert place(0.0, 0.01) == latency_bucket(0.005)
    assert bucket_upper(place(2.0, math.inf)) > 2.0  # the overflow is just above the last edge


def test_scraped_buckets_become_per_second_batches_per_release() -> None:
    ok, bad = "backout.iris.1.0.0@file", "backout.iris.1.1.0@file"
    t = [100.5, 101.5, 102.5]
    result = [
        series(ok, "200", "0.01", pairs(t, [0, 4, 4])),
        series(ok, "200", "0.1", pairs(t, [0, 9, 10])),
        series(ok, "200", "+Inf", pairs(t, [0, 10, 12])),
        # 1.1.0's 500s appear only at the second scrape: counted from zero.
        series(bad, "500", "0.01", pairs(t[1:], [3, 3])),
        series(bad, "500", "+Inf", pairs(t[1:], [3, 5])),
        series("backout-shadow.iris.1.1.0@file", "200", "+Inf", pairs(t, [0, 7, 7])),
        series("backout.fraud.1.0.0@file", "200", "+Inf", pairs(t, [0, 50, 99])),
    ]
    got = to_batches("iris", "backout", result, since=100.0, until=103.0)
    assert sorted(got) == ["1.0.0", "1.1.0"]
    first, second = got["1.0.0"]
    assert (first.start, first.end, first.requests, first.predictions) == (100.5, 101.5, 10, 10)
    assert first.latency == {place(0, 0.01): 4, place(0.01, 0.1): 5, place(0.1, math.inf): 1}
    assert second.requests == 2 and second.latency == {place(0.01, 0.1): 1, place(0.1, math.inf): 1}
    b1, b2 = got["1.1.0"]
    assert (b1.requests, b1.errors, b1.predictions, b1.shadow_requests) == (
        3,
        {"upstream": 3},
        0,
        7,
    )
    assert (b2.requests, b2.errors) == (2, {"upstream": 2})
    total = sum_batches(got["1.0.0"])
    assert total is not None and total.log_latency_sum == pytest.approx(
        4 * math.log(0.005) + 6 * math.log(math.sqrt(0.001)) + 2 * math.log(0.1 * 1.05), rel=0.1
    )


def test_a_window_with_no_samples_has_no_batches() -> None:
    assert to_batches("iris", "backout", [], since=0, until=10) == {}


# -- against a real Traefik scraped by a real Prometheus -----------------------------------


@pytest.fixture(scope="module")
def world(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Releases, TraefikServer, PrometheusServer]]:
    with (
        iris_backends(tmp_path_factory.mktemp("backends")) as releases,
        TraefikServer() as traefik,
        PrometheusServer([f"127.0.0.1:{traefik.api_port}"]) as prom,
    ):
        router = TraefikRouter(traefik.api_url, traefik.config_dir, releases.urls)
        router.apply(RouteTable("iris", 1, {"1.0.0": ((0, 5000),), "1.1.0": ((5000, BUCKETS),)}))
        router.close()
        yield releases, traefik, prom


def wait_for(
    source: PrometheusTelemetry, since: float, until: float, want: dict[str, int]
) -> dict[str, list[Batch]]:
    deadline = time.monotonic() + 30  # two or three scrapes at 1 s
    while True:
        got = source.batches("iris", since, until)
        counts = {v: sum(b.requests for b in bs) for v, bs in got.items()}
        if counts == want or time.monotonic() > deadline:
            return got
        time.sleep(0.5)


def test_real_scraped_metrics_become_batches_with_exact_counts_and_errors(
    world: tuple[Releases, TraefikServer, PrometheusServer],
) -> None:
    releases, traefik, prom = world
    source = PrometheusTelemetry(prom.url, lookback_s=3)
    time.sleep(2.5)  # a baseline scrape before the window
    since = time.time()
    releases.regress("1.1.0", errors=0.5)
    with httpx.Client(timeout=10) as c:
        answers = {"1.0.0": [0, 0], "1.1.0": [0, 0]}  # [requests, errors]
        for _ in range(120):
            r = predict(c, traefik.web_url)
            v = r.headers["x-backout-release"].split("@")[1]
            answers[v][0] += 1
            answers[v][1] += r.status_code >= 500
            time.sleep(0.01)
    sent_until = time.time() + 3
    # A batch starts at the scrape before its requests: look one scrape interval earlier.
    got = wait_for(source, since - 1.2, sent_until, {v: n for v, (n, _) in answers.items()})
    source.close()
    for v, (n, errors) in answers.items():
        total = sum_batches(got[v])
        assert total is not None
        assert (total.requests, total.error_count, total.predictions) == (n, errors, n - errors)
        assert total.requests > 0 and len(got[v]) >= 2  # spread over per-second batches
        assert all(b.end - b.start < 2.5 for b in got[v])
        assert 0.0005 < latency_quantile(total.latency, 0.5) < 1.0  # a LogisticRegression via HTTP
    assert answers["1.1.0"][1] > 0
    releases.heal("1.1.0")


def test_a_model_prometheus_has_never_seen_has_no_batches(
    world: tuple[Releases, TraefikServer, PrometheusServer],
) -> None:
    source = PrometheusTelemetry(world[2].url)
    assert source.batches("fraud", time.time() - 60) == {}
    source.close()


def test_a_prometheus_that_is_down_is_a_one_line_error() -> None:
    source = PrometheusTelemetry(f"http://127.0.0.1:{free_port()}")
    with pytest.raises(TelemetryUnavailable, match="cannot be reached") as caught:
        source.batches("iris", time.time() - 10)
    source.close()
    assert "\n" not in caught.value.message


def test_an_address_that_is_not_prometheus_is_a_one_line_error(tmp_path: Path) -> None:
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    async def hello(request: object) -> PlainTextResponse:
        return PlainTextResponse("hello", status_code=404)

    with serve(Starlette(routes=[Route("/{path:path}", hello)])) as url:
        source = PrometheusTelemetry(url)
        with pytest.raises(TelemetryUnavailable, match="not JSON") as caught:
            source.batches("iris", time.time() - 10)
        source.close()
    assert "\n" not in caught.value.message
