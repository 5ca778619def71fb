"""Triggers over a window of one release's telemetry (pure), and Prometheus through a source."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from backout.control import triggers
from backout.control.policy import parse_policy
from backout.telemetry.batches import Batch, ErrorKind
from tests.loopback import serve


def window(
    requests: int, errors: int = 0, *, nan: int = 0, latency_s: float = 0.005, labels: str = "a"
) -> list[Batch]:
    b = Batch("m", "1", start=0.0, end=1.0)
    for i in range(requests):
        if i < errors:
            b.observe(latency_s, error=ErrorKind.MODEL)
        elif i < errors + nan:
            b.observe(latency_s, error=ErrorKind.NONFINITE)
        else:
            b.observe(latency_s, outputs=[labels])
    return [b]


def trigger(yaml: str) -> object:
    return parse_policy(f"triggers:\n  - {yaml}\n").triggers[0]


def test_a_fixed_error_limit_fires_above_it() -> None:
    t = trigger("{kind: error_rate, max_rate: 0.05, min_requests: 20}")
    assert triggers.evaluate(t, window(100, 10)).fired
    assert not triggers.evaluate(t, window(100, 3)).fired
    assert not triggers.evaluate(t, window(10, 5)).fired  # too few requests to say


def test_the_judged_error_trigger_compares_with_the_release_itself() -> None:
    t = trigger("{kind: error_rate, use_judge: true, min_requests: 20}")
    before = window(2000, 20)  # 1% errors before the window
    assert triggers.evaluate(t, window(400, 40), reference=before).fired  # 10% now
    assert not triggers.evaluate(t, window(400, 5), reference=before).fired  # ~1% now
    result = triggers.evaluate(t, window(400, 40), reference=before)
    assert "vs 1.00% before" in result.summary and result.evidence["e_value"] > 100


def test_a_latency_budget_fires_on_its_quantile() -> None:
    t = trigger("{kind: latency, quantile: 0.99, max_ms: 100, min_requests: 20}")
    assert triggers.evaluate(t, window(50, latency_s=0.3)).fired
    assert not triggers.evaluate(t, window(50, latency_s=0.01)).fired


def test_integrity_fires_on_one_nan() -> None:
    t = trigger("{kind: integrity, min_requests: 1}")
    result = triggers.evaluate(t, window(50, nan=1))
    assert result.fired and "1 nonfinite" in result.summary
    assert not triggers.evaluate(t, window(50)).fired


def test_drift_fires_when_the_answers_change() -> None:
    t = trigger("{kind: drift, max_psi: 0.2, min_requests: 20}")
    assert triggers.evaluate(t, window(100, labels="b"), reference=window(100, labels="a")).fired
    assert not triggers.evaluate(
        t, window(100, labels="a"), reference=window(100, labels="a")
    ).fired


@pytest.fixture
def prometheus() -> Iterator[str]:
    """A loopback server answering Prometheus's instant-query API."""

    async def query(request: Request) -> JSONResponse:
        value = "0.12" if "chargeback" in request.query_params["query"] else "0.01"
        return JSONResponse({"status": "success", "data": {"resultType": "vector",
                                                             "result": [{"metric": {}, "value": [0, value]}]}})  # fmt: skip

    with serve(Starlette(routes=[Route("/api/v1/query", query)])) as url:
        yield url


def test_a_prometheus_query_fires_past_its_threshold(prometheus: str) -> None:
    hot = trigger(
        f"{{kind: prometheus, url: '{prometheus}', query: 'chargeback_rate', op: '>', threshold: 0.1}}"
    )
    cold = trigger(
        f"{{kind: prometheus, url: '{prometheus}', query: 'other_rate', op: '>', threshold: 0.1}}"
    )
    assert triggers.evaluate(hot, []).fired
    assert not triggers.evaluate(cold, []).fired


def test_an_unreachable_prometheus_does_not_fire_and_says_why() -> None:
    from tests.loopback import free_port

    t = trigger(
        f"{{kind: prometheus, url: 'http://127.0.0.1:{free_port()}', query: 'x', threshold: 1}}"
    )
    result = triggers.evaluate(t, [])
    assert not result.fired and "prometheus query failed" in result.summary
