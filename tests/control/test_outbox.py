"""The transactional outbox: a notice commits with its event, is delivered at least once by
id, retried with backoff, and a delivery that fails for good becomes an event."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from backout.control.alerts import Alerts
from backout.control.controller import Controller
from backout.control.notify import Notice, Severity
from backout.control.outbox import Attempt, Outbox, OutboxItem, WebhookSender, enqueue
from backout.control.policy import NoticeKind, parse_policy
from backout.registry.releases import Registry
from backout.store import Store, audit
from tests.control.webhook_receiver import Receiver
from tests.models import register_iris
from tests.postgres_server import free_port
from tests.silent import trickle_server


class Clock:
    def __init__(self, t: float = 1_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


class ScriptedSender:
    """Answers with ``results`` in turn (then success), recording what it was asked."""

    def __init__(self, results: list[Attempt] | None = None) -> None:
        self.results = list(results or [])
        self.sent: list[OutboxItem] = []

    def send(self, item: OutboxItem, /) -> Attempt:
        self.sent.append(item)
        return self.results.pop(0) if self.results else Attempt()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.stop()


def notice(**kw: object) -> Notice:
    base: dict[str, object] = {"kind": NoticeKind.FREEZE, "model": "fraud",
                               "title": "fraud is frozen", "severity": Severity.CRITICAL}  # fmt: skip
    return Notice(**{**base, **kw})  # type: ignore[arg-type]


def queue(store: Store, clock: Clock, **kw: object) -> list[str]:
    with store.write() as conn:
        audit.append(conn, "freeze", model="fraud", actor="t", reason="test")
        return enqueue(conn, notice(), now=clock(), **kw)  # type: ignore[arg-type]


def kinds(store: Store) -> list[str]:
    with store.read() as conn:
        return [e.kind for e in audit.list_events(conn)]


def test_the_notice_and_its_event_commit_together_or_not_at_all(store: Store) -> None:
    class Boom(Exception):
        pass

    with pytest.raises(Boom), store.write() as conn:
        audit.append(conn, "freeze", model="fraud", actor="t")
        enqueue(conn, notice(), webhooks=["http://127.0.0.1:9/x"], now=1.0)
        raise Boom
    assert Outbox(store).items() == []
    assert kinds(store) == []
    queue(store, Clock(), webhooks=["http://127.0.0.1:9/x"])
    assert [i["status"] for i in Outbox(store).items()] == ["pending"]
    assert kinds(store) == ["freeze"]


def test_delivered_once_then_never_again(store: Store) -> None:
    clock, sender = Clock(), ScriptedSender()
    (item_id,) = queue(store, clock, webhooks=["http://127.0.0.1:9/x"])
    outbox = Outbox(store, senders={"webhook": sender}, clock=clock)
    assert outbox.deliver_due() == 1
    clock.t += 3600
    assert outbox.deliver_due() == 0
    assert [i.id for i in sender.sent] == [item_id]
    assert outbox.items()[0]["status"] == "delivered"


def test_retries_back_off_exponentially_then_deliver(store: Store) -> None:
    clock = Clock()
    sender = ScriptedSender([Attempt("HTTP 503", retry=True)] * 3)
    queue(store, clock, webhooks=["http://127.0.0.1:9/x"])
    outbox = Outbox(store, senders={"webhook": sender}, clock=clock, backoff=1.0, seed=1)
    waits = []
    while outbox.items("pending"):
        if outbox.deliver_due() == 0:
            nxt = outbox.items("pending")[0]["next_attempt_at"]
            waits.append(nxt - clock.t)
            clock.t = nxt
    assert len(sender.sent) == 4
    # attempt k waits between half and all of 2**(k-1) s
    assert [0.5 <= w / 2**k <= 1.0 for k, w in enumerate(waits)] == [True] * 3
    assert outbox.items()[0]["status"] == "delivered"
    assert outbox.items()[0]["attempts"] == 4


def test_a_permanent_failure_becomes_an_event_with_the_secret_hidden(store: Store) -> None:
    clock = Clock()
    sender = ScriptedSender([Attempt("HTTP 404")])
    queue(store, clock, webhooks=["https://hooks.example.com/services/T0/B0/SECRET"])
    Outbox(store, senders={"webhook": sender}, clock=clock).deliver_due()
    with store.read() as conn:
        (failed,) = audit.list_events(conn, kinds=["notify.failed"])
    assert failed.reason == (
        "notification freeze 'fraud is frozen' to https://hooks.example.com/… failed after "
        "1 attempt(s): HTTP 404"
    )
    assert "SECRET" not in str(failed.to_dict())
    assert Outbox(store).items()[0]["status"] == "failed"


def test_retries_are_bounded_and_the_last_failure_is_an_event(store: Store) -> None:
    clock = Clock()
    sender = ScriptedSender([Attempt("connection failed", retry=True)] * 10)
    queue(store, clock, webhooks=["http://127.0.0.1:9/x"])
    outbox = Outbox(store, senders={"webhook": sender}, clock=clock, max_attempts=3)
    for _ in range(10):
        clock.t += 3600
        outbox.deliver_due()
    assert len(sender.sent) == 3
    assert kinds(store)[-1] == "notify.failed"


def test_an_email_without_a_mail_server_fails_at_once_as_an_event(store: Store) -> None:
    queue(store, Clock(), emails=["oncall@example.com"])
    (item,) = Outbox(store).items()
    assert (item["status"], item["last_error"]) == (
        "failed", "no mail server: add notifications.smtp to the model's policy")  # fmt: skip
    assert kinds(store) == ["freeze", "notify.failed"]


def test_a_claimed_row_is_sent_again_only_after_its_claim_runs_out(store: Store) -> None:
    """A worker that died mid-send leaves its claim; the next worker resends after it."""
    clock, sender = Clock(), ScriptedSender()
    queue(store, clock, webhooks=["http://127.0.0.1:9/x"])
    dead = Outbox(store, senders={"webhook": sender}, clock=clock, claim_s=30)
    dead._claim(clock())  # claimed, then the process died before sending
    nxt = Outbox(store, senders={"webhook": sender}, clock=clock, claim_s=30)
    assert nxt.deliver_due() == 0
    clock.t += 31
    assert nxt.deliver_due() == 1
    assert nxt.items()[0]["status"] == "delivered"


def test_webhooks_carry_the_id_as_idempotency_key(store: Store, receiver: Receiver) -> None:
    (item_id,) = queue(store, Clock(), webhooks=[receiver.url])
    Outbox(store, senders={"webhook": WebhookSender(timeout=2.0)}).deliver_due()
    (d,) = receiver.deliveries
    assert d.key == item_id
    assert d.body["backout"]["id"] == item_id
    assert d.body["backout"]["title"] == "fraud is frozen"


def test_a_hanging_receiver_is_a_retriable_timeout(store: Store) -> None:
    r = Receiver(hang_first=True)
    try:
        queue(store, Clock(), webhooks=[r.url])
        result = WebhookSender(timeout=0.3).send(Outbox(store)._claim(Clock()())[0])
    finally:
        r.stop()
    assert result == Attempt("no answer within 0.3s", retry=True, answered=False)


def test_a_receiver_that_trickles_its_answer_is_cut_off_at_the_total_deadline(
    store: Store,
) -> None:
    """Each byte arrives well within the read timeout, so only a total deadline ends it."""
    with trickle_server(interval_s=0.05) as port:
        queue(store, Clock(), webhooks=[f"http://127.0.0.1:{port}/hooks/T0/SECRET"])
        started = time.monotonic()
        result = WebhookSender(timeout=0.3, total_timeout=0.8).send(
            Outbox(store)._claim(Clock()())[0]
        )
        took = time.monotonic() - started
    assert result == Attempt("no whole answer within 0.8s", retry=True, answered=False)
    assert took < 3.0, took


def test_a_controller_decision_queues_its_notices_in_its_transaction(
    store: Store, registry: Registry, tmp_path: Path, receiver: Receiver
) -> None:
    register_iris(registry, tmp_path / "m", "1.0.0")
    register_iris(registry, tmp_path / "m", "2.0.0", c=0.5)
    policy = parse_policy(f"notifications:\n  webhooks: [{receiver.url!r}]\n")
    ctl = Controller(store, registry)
    ctl.deploy("iris", "1.0.0", actor="t", policy=policy)
    ctl.set_policy("iris", policy, source="test", actor="t")
    ctl.deploy("iris", "2.0.0", actor="t")
    ctl.abort("iris", actor="t", reason="changed my mind")
    pending = ctl.alerts.outbox.items("pending")
    assert len(pending) >= 2
    while ctl.alerts.outbox.deliver_due():
        pass
    titles = [d.body["backout"]["title"] for d in receiver.deliveries]
    assert "rollout of iris@2.0.0 started" in titles
    assert "rollout of iris aborted" in titles
    assert len(receiver.unique()) == len(receiver.deliveries)


def test_an_injected_notifier_hears_only_after_the_commit(store: Store) -> None:
    from backout.control.notify import InMemoryNotifier

    heard = InMemoryNotifier()
    alerts = Alerts(store, actor="t", notifier=heard)
    policy = parse_policy("{}")
    with pytest.raises(RuntimeError), store.write() as conn:
        alerts.notify("freeze", "fraud", "rolled back", "", 1, policy=policy, conn=conn)
        raise RuntimeError
    assert heard.notices == []
    with store.write() as conn:
        alerts.notify("freeze", "fraud", "committed", "", 1, policy=policy, conn=conn)
        assert heard.notices == []
    assert [n.title for n in heard.notices] == ["committed"]


def test_the_running_controller_delivers_what_a_command_queued(
    store: Store, registry: Registry, tmp_path: Path, receiver: Receiver
) -> None:
    """``backout serve``'s controller loop runs the delivery worker while it leads."""
    import threading
    import time

    register_iris(registry, tmp_path / "m", "1.0.0")
    register_iris(registry, tmp_path / "m", "2.0.0", c=0.5)
    policy = parse_policy(f"notifications:\n  webhooks: [{receiver.url!r}]\n")
    person = Controller(store, registry)
    person.deploy("iris", "1.0.0", actor="t", policy=policy)
    person.set_policy("iris", policy, source="test", actor="t")
    person.deploy("iris", "2.0.0", actor="ana")  # a person's command: queued, not sent
    assert receiver.deliveries == []
    stop = threading.Event()
    leader = Controller(store, registry)
    thread = threading.Thread(target=leader.run, args=(stop,), kwargs={"interval": 0.1})
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not receiver.deliveries and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        stop.set()
        thread.join(30)
    assert not thread.is_alive()
    assert "rollout of iris@2.0.0 started" in [
        d.body["backout"]["title"] for d in receiver.deliveries
    ]


def test_a_hanging_receiver_does_not_hold_up_the_others(store: Store, receiver: Receiver) -> None:
    import threading
    import time

    hanging = Receiver(hang_first=True)
    try:
        queue(store, Clock(), webhooks=[hanging.url, receiver.url])
        outbox = Outbox(store, senders={"webhook": WebhookSender(timeout=5.0)})
        worker = threading.Thread(target=outbox.deliver_due)
        t0 = time.monotonic()
        worker.start()
        assert receiver.got.wait(3), "the healthy receiver waited for the hanging one"
        took = time.monotonic() - t0
        hanging.release.set()
        worker.join(10)
    finally:
        hanging.stop()
    assert took < 3
    assert len(receiver.deliveries) == 1


def test_an_unreachable_store_is_one_log_line_per_outage(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    import threading

    calls = {"n": 0}
    stop = threading.Event()

    def down() -> bool:
        calls["n"] += 1
        if calls["n"] >= 6:
            stop.set()
        if calls["n"] <= 4:
            raise ConnectionError("store unreachable")
        return False

    with caplog.at_level("WARNING", logger="backout.outbox"):
        Outbox(store).run(stop, interval=0.01, active=down)
    said = [r.getMessage() for r in caplog.records]
    assert len(said) == 2, said
    assert said[0] == (
        "outbox delivery failed: store unreachable (retrying every 0.01 s); "
        "retrying quietly until it recovers"
    )
    assert said[1].startswith("outbox delivery recovered after "), said
    assert said[1].endswith(" s and 4 failed attempt(s)"), said


def test_deliver_now_retries_an_answering_receiver_and_leaves_a_dead_one_pending(
    store: Store,
) -> None:
    """What a command does with the notices it queued before it exits."""
    busy = Receiver(statuses=[500, 500])  # then 200
    try:
        (ok_id,) = queue(store, Clock(time.time()), webhooks=[busy.url])
        (dead_id,) = queue(store, Clock(time.time()),
                           webhooks=[f"http://127.0.0.1:{free_port()}/hooks/T0/SECRET"])  # fmt: skip
        outbox = Outbox(store, senders={"webhook": WebhookSender(timeout=1.0)})
        started = time.monotonic()
        assert outbox.deliver_now([ok_id, dead_id], within=8.0) == [dead_id]
        took = time.monotonic() - started
    finally:
        busy.stop()
    assert len(busy.deliveries) == 3 and {d.key for d in busy.deliveries} == {ok_id}
    rows = {r["id"]: r for r in outbox.items()}
    assert rows[ok_id]["status"] == "delivered"
    assert rows[dead_id]["status"] == "pending" and rows[dead_id]["attempts"] == 1
    assert rows[dead_id]["last_error"].startswith("connection failed")
    assert took < 6.0, took  # the backoff of the busy one (at most 3 s), not the budget
