"""Escalation e-mails over SMTP: sent to a local aiosmtpd server started by each test, with
timeouts, temporary and permanent refusals told apart, and the password kept out of the
policy."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from email import message_from_bytes
from email import policy as email_policy
from email.message import Message
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller as SmtpController
from aiosmtpd.smtp import AuthResult, LoginPassword

from backout.control.controller import Controller
from backout.control.mail import SmtpSettings, send_mail
from backout.control.notify import Notice, Severity
from backout.control.outbox import Outbox
from backout.control.policy import NoticeKind, PolicyError, parse_policy
from backout.registry.releases import Registry
from backout.store import Store, audit
from tests.models import register_iris


class Mailbox:
    """An aiosmtpd handler that keeps every message, or refuses recipients with ``rcpt``."""

    def __init__(self, rcpt: str | None = None) -> None:
        self.rcpt = rcpt
        self.messages: list[tuple[list[str], Message]] = []

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str,
                          rcpt_options: Any) -> str:  # fmt: skip
        if self.rcpt:
            return self.rcpt
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(
            (
                list(envelope.rcpt_tos),
                message_from_bytes(envelope.content, policy=email_policy.default),
            )
        )
        return "250 Message accepted for delivery"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def smtp_server(handler: Mailbox, **kw: Any) -> SmtpController:
    server = SmtpController(handler, hostname="127.0.0.1", port=free_port(), **kw)
    server.start()
    return server


@pytest.fixture
def mailbox() -> Iterator[tuple[Mailbox, int]]:
    box = Mailbox()
    server = smtp_server(box)
    yield box, server.port
    server.stop()


def notice() -> Notice:
    return Notice(kind=NoticeKind.ESCALATION, model="fraud", severity=Severity.CRITICAL,
                  title="Escalation to lead: fraud rollback frozen after 900s",
                  text="frozen after 900s; escalating to level 1.",
                  fields={"contact": "lead", "level": 1}, incident="12")  # fmt: skip


def test_a_mail_reaches_the_server_with_its_delivery_id(mailbox: tuple[Mailbox, int]) -> None:
    box, port = mailbox
    settings = SmtpSettings(host="127.0.0.1", port=port, sender="backout@example.com", timeout=5)
    assert send_mail(settings, notice(), "lead@example.com", "abc123").error == ""
    ((rcpt, msg),) = box.messages
    assert rcpt == ["lead@example.com"]
    assert (
        msg["Subject"]
        == "[backout] [critical] Escalation to lead: fraud rollback frozen after 900s"
    )
    assert msg["From"] == "backout@example.com"
    assert msg["Message-ID"] == "<abc123@example.com>"
    assert msg["X-Backout-Delivery"] == "abc123"
    body = msg.get_payload(decode=True)
    assert isinstance(body, bytes)
    assert b"frozen after 900s; escalating to level 1." in body
    assert b"incident: 12" in body


@pytest.mark.parametrize(("reply", "retry"), [("550 5.1.1 no such user", False),
                                              ("451 4.3.0 try again later", True)])  # fmt: skip
def test_refused_addresses_say_whether_to_retry(reply: str, retry: bool) -> None:
    server = smtp_server(Mailbox(rcpt=reply))
    try:
        r = send_mail(SmtpSettings(host="127.0.0.1", port=server.port, timeout=5), notice(),
                      "ghost@example.com", "id1")  # fmt: skip
    finally:
        server.stop()
    assert r.retry is retry
    assert r.error.startswith(
        f"SMTP server 127.0.0.1:{server.port} refused the address 'ghost@example.com'"
    )
    assert "\n" not in r.error


def test_a_closed_port_is_retriable_and_named() -> None:
    port = free_port()
    r = send_mail(
        SmtpSettings(host="127.0.0.1", port=port, timeout=2), notice(), "a@example.com", "i"
    )
    assert r.retry
    assert r.error.startswith(f"SMTP server 127.0.0.1:{port}: ConnectionRefusedError")


def test_a_server_that_never_greets_times_out() -> None:
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)  # accepts connections in the backlog, never says a word
        port = silent.getsockname()[1]
        t0 = time.monotonic()
        r = send_mail(
            SmtpSettings(host="127.0.0.1", port=port, timeout=0.5), notice(), "a@example.com", "i"
        )
        elapsed = time.monotonic() - t0
    assert r.error == f"SMTP server 127.0.0.1:{port}: no answer within 0.5s"
    assert r.retry
    assert elapsed < 5


def test_login_reads_the_password_from_the_named_environment_variable() -> None:
    seen: list[tuple[bytes, bytes]] = []

    def authenticator(
        server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any
    ) -> AuthResult:
        assert isinstance(auth_data, LoginPassword)
        seen.append((auth_data.login, auth_data.password))
        return AuthResult(success=auth_data.password == b"s3cret", handled=False)

    box = Mailbox()
    server = smtp_server(box, authenticator=authenticator, auth_require_tls=False)
    settings = SmtpSettings(host="127.0.0.1", port=server.port, username="backout",
                            password_env="SMTP_PASSWORD", timeout=5)  # fmt: skip
    try:
        missing = send_mail(settings, notice(), "a@example.com", "i", environ={})
        wrong = send_mail(settings, notice(), "a@example.com", "i", environ={"SMTP_PASSWORD": "no"})
        right = send_mail(
            settings, notice(), "a@example.com", "i", environ={"SMTP_PASSWORD": "s3cret"}
        )
    finally:
        server.stop()
    assert missing.error == (
        f"SMTP server 127.0.0.1:{server.port}: no password for user 'backout': set the "
        "environment variable SMTP_PASSWORD of the controller"
    )
    assert wrong.error.startswith(
        f"SMTP server 127.0.0.1:{server.port} refused the login of 'backout': 535"
    )
    assert not wrong.retry
    assert right.error == ""
    assert len(box.messages) == 1
    assert seen[-1] == (b"backout", b"s3cret")


def test_a_policy_cannot_hold_the_password() -> None:
    with pytest.raises(PolicyError, match="password"):
        parse_policy("notifications:\n  smtp: {host: mail.example.com, password: hunter2}\n")


def test_an_escalation_contact_gets_an_email_through_the_outbox(
    store: Store, registry: Registry, tmp_path: Path, mailbox: tuple[Mailbox, int]
) -> None:
    box, port = mailbox
    register_iris(registry, tmp_path / "m", "1.0.0")
    register_iris(registry, tmp_path / "m", "2.0.0", c=0.5)
    policy = parse_policy(
        "escalation:\n  contacts: [{name: lead, email: lead@example.com}]\n"
        f"notifications:\n  smtp: {{host: 127.0.0.1, port: {port}, sender: backout@example.com, timeout: 5s}}\n"
    )
    ctl = Controller(store, registry)
    ctl.deploy("iris", "1.0.0", actor="t", policy=policy)
    ctl.set_policy("iris", policy, source="test", actor="t")
    op = ctl.deploy("iris", "2.0.0", actor="t")
    ctl.freeze(op, "both releases unhealthy", {})
    outbox = Outbox(store)
    while outbox.deliver_due():
        pass
    ((rcpt, msg),) = box.messages
    assert rcpt == ["lead@example.com"]
    assert msg["Subject"].startswith("[backout] [critical] Escalation to lead: iris")
    (item,) = [i for i in outbox.items() if i["channel"] == "email"]
    assert item["status"] == "delivered"
    assert msg["X-Backout-Delivery"] == item["id"]
    with store.read() as conn:
        assert "escalation" in [e.kind for e in audit.list_events(conn, "iris")]


def test_a_title_with_line_breaks_is_one_subject_line(mailbox: tuple[Mailbox, int]) -> None:
    box, port = mailbox
    hostile = Notice(kind=NoticeKind.ESCALATION, model="fraud",
                     title="frozen\r\nBcc: everyone@example.com\nreally")  # fmt: skip
    r = send_mail(
        SmtpSettings(host="127.0.0.1", port=port, timeout=5), hostile, "a@example.com", "i"
    )
    assert r.error == ""
    ((_, msg),) = box.messages
    assert msg["Subject"] == "[backout] [info] frozen Bcc: everyone@example.com really"
    assert msg["Bcc"] is None
