"""Every network call of the controller has a connect and a total timeout: a webhook or a
Prometheus that never answers, or answers a byte at a time, fails within its bound."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import httpx
import pytest

from backout.control.notify import Notice, NoticeKind, WebhookNotifier
from backout.control.triggers import PrometheusSource
from tests.silent import silent_server, trickle_server

SECRET = "PLANTEDhook42token"


def _notice() -> Notice:
    return Notice(kind=NoticeKind.TRIGGER, model="fraud", title="t", at=datetime.now(UTC))


@pytest.mark.parametrize("server", [silent_server, trickle_server], ids=["silent", "trickle"])
@pytest.mark.timeout(30)
def test_a_webhook_that_never_finishes_answering_fails_within_its_timeout(server: object) -> None:
    with server() as port:  # type: ignore[operator]
        url = f"http://127.0.0.1:{port}/services/T0/B0/{SECRET}"
        notifier = WebhookNotifier([url], timeout=0.5, max_attempts=1)
        started = time.monotonic()
        notifier.send(_notice())
        assert notifier.close(timeout=10)
        took = time.monotonic() - started
    (failed,) = notifier.failures
    assert failed.error in ("no answer within 0.5s", "no whole answer within 1s")
    assert took < 3.0, took
    assert SECRET not in failed.summary and failed.target == f"http://127.0.0.1:{port}/…"


@pytest.mark.parametrize("server", [silent_server, trickle_server], ids=["silent", "trickle"])
@pytest.mark.timeout(30)
def test_a_prometheus_that_never_finishes_answering_fails_within_its_timeout(
    server: object,
) -> None:
    source = PrometheusSource(timeout_s=0.5, connect_timeout_s=0.2)
    with server() as port:  # type: ignore[operator]
        started = time.monotonic()
        with pytest.raises(httpx.TimeoutException):
            source.query(f"http://127.0.0.1:{port}", "up")
        took = time.monotonic() - started
    assert took < 3.0, took
