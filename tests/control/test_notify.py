"""Notifications: webhook delivery over real loopback HTTP, retries, never blocking the
caller, failure reports, and the escalator's order and timing."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from backout.control.notify import (
    Escalator,
    FailedDelivery,
    InMemoryNotifier,
    MultiNotifier,
    Notice,
    NoticeKind,
    Severity,
    WebhookNotifier,
    notifier_for,
    redact_url,
)
from backout.control.policy import Contact, Escalation, parse_policy
from tests.control.webhook_receiver import Receiver


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.stop()


def make_receiver(request: pytest.FixtureRequest, **kw: object) -> Receiver:
    r = Receiver(**kw)  # type: ignore[arg-type]
    request.addfinalizer(r.stop)
    return r


def dead_url() -> str:
    """A loopback URL where nothing listens (connection refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/hook"


def notice(kind: NoticeKind = NoticeKind.TRIGGER, **kw: object) -> Notice:
    base: dict[str, object] = {
        "model": "fraud",
        "title": "error-rate trigger fired",
        "text": "error rate 7.2% > 5%",
        "severity": Severity.WARNING,
        "fields": {"release": "fraud@1.4.0", "error_rate": 0.072},
        "at": datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC),
        "incident": "inc-1",
    }
    return Notice(kind=kind, **{**base, **kw})  # type: ignore[arg-type]


def fast(urls: list[str], **kw: object) -> WebhookNotifier:
    """A notifier with short timeouts and backoff, so failure tests take milliseconds."""
    options: dict[str, object] = {"timeout": 0.5, "backoff": 0.01, "max_backoff": 0.05, "seed": 1}
    return WebhookNotifier(urls, **{**options, **kw})  # type: ignore[arg-type]


def test_webhook_delivers_slack_compatible_json_with_the_structured_notice(
    receiver: Receiver,
) -> None:
    n = fast([receiver.url])
    n.send(notice())
    assert n.close(5)
    (body,) = receiver.bodies
    assert body["text"] == ":warning: [fraud] error-rate trigger fired: error rate 7.2% > 5%"
    blocks = body["blocks"]
    assert isinstance(blocks, list)
    assert blocks[0] == {
        "type": "header",
        "text": {"type": "plain_text", "text": "error-rate trigger fired"},
    }
    assert [b["type"] for b in blocks] == ["header", "section", "section", "context"]
    assert body["backout"] == {
        "kind": "trigger",
        "model": "fraud",
        "title": "error-rate trigger fired",
        "text": "error rate 7.2% > 5%",
        "severity": "warning",
        "fields": {"release": "fraud@1.4.0", "error_rate": 0.072},
        "at": "2025-01-02T03:04:05+00:00",
        "incident": "inc-1",
    }
    assert (n.delivered, n.failures) == (1, [])


def test_500_twice_then_200_is_delivered_on_the_third_attempt(
    request: pytest.FixtureRequest,
) -> None:
    r = make_receiver(request, statuses=[500, 503])
    n = fast([r.url])
    n.send(notice())
    assert n.close(5)
    assert len(r.bodies) == 3
    assert (n.delivered, n.failures) == (1, [])


def test_4xx_is_not_retried_and_is_reported(request: pytest.FixtureRequest) -> None:
    r = make_receiver(request, statuses=[404])
    reported: list[FailedDelivery] = []
    n = fast([r.url], on_failure=reported.append)
    n.send(notice())
    n.close(5)
    assert len(r.bodies) == 1
    assert [(f.attempts, f.error) for f in reported] == [(1, "HTTP 404")]


def test_429_is_retried(request: pytest.FixtureRequest) -> None:
    r = make_receiver(request, statuses=[429])
    n = fast([r.url])
    n.send(notice())
    assert n.close(5)
    assert len(r.bodies) == 2


def test_dead_port_fails_after_the_bounded_attempts_and_is_reported() -> None:
    reported: list[FailedDelivery] = []
    n = fast([dead_url()], max_attempts=3, on_failure=reported.append)
    n.send(notice())
    assert n.close(5)  # drained: the failure is final, nothing left to deliver
    (failed,) = reported
    assert failed.attempts == 3 and failed.error.startswith("connection failed")
    assert (failed.kind, failed.model, failed.incident) == (NoticeKind.TRIGGER, "fraud", "inc-1")
    assert n.failures == reported


def test_hanging_receiver_does_not_delay_send(request: pytest.FixtureRequest) -> None:
    r = make_receiver(request, hang=True)
    n = fast([r.url], timeout=5.0)
    started = time.perf_counter()
    for _ in range(20):
        n.send(notice())
    elapsed = time.perf_counter() - started
    assert elapsed < 0.05
    assert not n.close(0.2)  # still hanging when the close timeout ends


def test_close_reports_deliveries_cut_short(request: pytest.FixtureRequest) -> None:
    r = make_receiver(request, hang=True)
    n = fast([r.url], timeout=5.0)
    n.send(notice())
    n.close(0.2)
    assert [f.error.startswith("not delivered before close") for f in n.failures] == [True]


def test_send_after_close_is_reported_not_raised(receiver: Receiver) -> None:
    n = fast([receiver.url])
    n.close(1)
    n.send(notice())
    assert [(f.attempts, f.error) for f in n.failures] == [(0, "dropped: notifier closed")]


def test_a_full_queue_drops_and_reports_instead_of_blocking(request: pytest.FixtureRequest) -> None:
    r = make_receiver(request, hang=True)
    n = fast([r.url], timeout=5.0, max_pending=2)
    for _ in range(3):
        n.send(notice())
    n.close(0.1)
    assert n.failures[0].error == "dropped: more than 2 deliveries waiting"


def test_kinds_filter_the_policy_webhooks_but_not_the_notice_own_targets(
    request: pytest.FixtureRequest,
) -> None:
    team, contact = make_receiver(request), make_receiver(request)
    n = fast([team.url], kinds={NoticeKind.FREEZE})
    n.send(notice(NoticeKind.PHASE))
    n.send(notice(NoticeKind.ESCALATION, to=(contact.url,)))
    n.send(notice(NoticeKind.FREEZE))
    assert n.close(5)
    assert [b["backout"]["kind"] for b in team.bodies] == ["freeze"]  # type: ignore[index]
    assert [b["backout"]["kind"] for b in contact.bodies] == ["escalation"]  # type: ignore[index]


def test_failure_reports_hide_the_webhook_secret() -> None:
    assert redact_url("https://hooks.example.com/services/T0/B0/SECRET") == (
        "https://hooks.example.com/…"
    )
    assert redact_url("http://127.0.0.1:9000") == "http://127.0.0.1:9000"


def test_notifier_for_policy_uses_its_webhooks_and_kinds() -> None:
    policy = parse_policy("notifications:\n  webhooks: [http://127.0.0.1:9/x]\n  on: [freeze]\n")
    n = notifier_for(policy)
    try:
        assert n.urls == ("http://127.0.0.1:9/x",)
        assert n.kinds == frozenset({NoticeKind.FREEZE})
    finally:
        n.close(1)


def test_in_memory_notifier_keeps_notices_in_order() -> None:
    n = InMemoryNotifier()
    n.send(notice(NoticeKind.TRIGGER))
    n.send(notice(NoticeKind.PHASE))
    assert [x.kind for x in n.notices] == [NoticeKind.TRIGGER, NoticeKind.PHASE]
    assert n.of_kind(NoticeKind.PHASE) == [n.notices[1]]


def test_multi_notifier_keeps_sending_when_one_notifier_raises() -> None:
    class Broken:
        def send(self, notice: Notice, /) -> None:
            raise RuntimeError("boom")

        def close(self, timeout: float = 5.0) -> bool:
            return True

    kept = InMemoryNotifier()
    multi = MultiNotifier([Broken(), kept])
    multi.send(notice())
    assert len(kept.notices) == 1 and multi.close(1)


# --- escalation ------------------------------------------------------------------------

T0 = 1_000_000.0


def escalator(repeat: bool = False) -> Escalator:
    contacts = [
        Contact(name="primary", webhook="http://127.0.0.1:9/p"),
        Contact(name="secondary", email="second@example.com"),
        Contact(name="manager", email="boss@example.com"),
    ]
    return Escalator(Escalation(contacts=contacts, after=600, repeat=repeat))


def test_escalator_calls_nobody_before_the_first_deadline() -> None:
    assert escalator().due(T0, T0 + 599, 0) is None


def test_escalator_calls_contacts_in_order_one_after_each_period() -> None:
    e = escalator()
    due = [e.due(T0, T0 + t, level) for level, t in enumerate([600, 1200, 1800])]
    assert [c.name if c else None for c in due] == ["primary", "secondary", "manager"]


def test_escalator_waits_for_the_next_period_after_a_call() -> None:
    assert escalator().due(T0, T0 + 1199, 1) is None


def test_escalator_stops_after_the_last_contact_without_repeat() -> None:
    assert escalator().due(T0, T0 + 10_000, 3) is None


def test_escalator_starts_again_from_the_first_contact_with_repeat() -> None:
    c = escalator(repeat=True).due(T0, T0 + 2400, 3)
    assert c is not None and c.name == "primary"


def test_escalator_accepts_datetimes() -> None:
    start = datetime(2025, 1, 1, tzinfo=UTC)
    c = escalator().due(start, start + timedelta(minutes=10), 0)
    assert c is not None and c.name == "primary"


def test_escalator_without_contacts_never_calls() -> None:
    assert Escalator(Escalation()).due(T0, T0 + 1e9, 0) is None


def test_escalation_notice_is_addressed_to_the_contact_webhook() -> None:
    n = escalator().notice(0, model="fraud", started_at=T0, now=T0 + 600, incident="inc-1")
    assert (n.kind, n.severity, n.to) == (
        NoticeKind.ESCALATION,
        Severity.CRITICAL,
        ("http://127.0.0.1:9/p",),
    )
    assert n.title == "Escalation to primary: fraud recovery is not complete after 600s"
    assert "to" not in n.to_dict()


def test_public_names_all_exist() -> None:
    import backout.control.notify

    assert [
        n for n in backout.control.notify.__all__ if not hasattr(backout.control.notify, n)
    ] == []
