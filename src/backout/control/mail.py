"""E-mail: escalation notices sent over SMTP, with the standard library.

For contacts a policy reaches by e-mail (``escalation.contacts[].email``) through the mail
server in ``notifications.smtp``. The outbox (:mod:`backout.control.outbox`) calls
:func:`send_mail` from its delivery worker, never from a tick: every step has a timeout
(connect, each command), and the answer says whether trying again later may help (a
timeout, a refused connection, a 4xx reply) or not (a 5xx reply, a rejected address, bad
credentials).

The message's ``Message-ID`` is derived from the outbox id, and the id is in the
``X-Backout-Delivery`` header, so a mail re-sent after a crash is recognisable as the same.
The password is read from the environment variable the policy names, never from the policy.
"""

from __future__ import annotations

import email.policy
import os
import smtplib
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import format_datetime
from typing import Any

from backout.control.notify import Notice

__all__ = ["MailResult", "SmtpSettings", "build_message", "send_mail"]


@dataclass(frozen=True, slots=True)
class SmtpSettings:
    """Where and how to send mail (the policy's ``notifications.smtp``)."""

    host: str
    port: int = 25
    sender: str = "backout@localhost"
    starttls: bool = False
    username: str | None = None
    password_env: str | None = None
    timeout: float = 10.0

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> SmtpSettings:
        return cls(
            host=str(d["host"]),
            port=int(d.get("port", 25)),
            sender=str(d.get("sender", "backout@localhost")),
            starttls=bool(d.get("starttls", False)),
            username=d.get("username"),
            password_env=d.get("password_env"),
            timeout=float(d.get("timeout", 10.0)),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "host": self.host,
            "port": self.port,
            "sender": self.sender,
            "starttls": self.starttls,
            "username": self.username,
            "password_env": self.password_env,
            "timeout": self.timeout,
        }


@dataclass(frozen=True, slots=True)
class MailResult:
    """The outcome of one attempt: ``error`` is empty on success."""

    error: str = ""
    retry: bool = False


def build_message(notice: Notice, to: str, delivery_id: str, sender: str) -> EmailMessage:
    """The e-mail for ``notice``: plain text, a subject people can triage from."""
    # Lines up to RFC 5322's hard limit: the default folding at 78 characters breaks a long
    # subject right after "Subject:", which some clients show with a leading space.
    msg = EmailMessage(policy=email.policy.SMTP.clone(max_line_length=998))
    # One line whatever the title holds: a line break in a header is refused (or, worse,
    # read as another header).
    title = " ".join(notice.title.split())
    msg["Subject"] = f"[backout] [{notice.severity.value}] {title}"[:200]
    msg["From"] = sender
    msg["To"] = to
    msg["Date"] = format_datetime(notice.at)
    domain = sender.rpartition("@")[2] or "backout"
    msg["Message-ID"] = f"<{delivery_id}@{domain}>"
    msg["X-Backout-Delivery"] = delivery_id
    msg["X-Backout-Model"] = " ".join(notice.model.split())
    lines = [notice.title, ""]
    if notice.text:
        lines += [notice.text, ""]
    lines += [f"{k}: {'—' if v is None else v}" for k, v in notice.fields.items()]
    lines += [
        "",
        f"model: {notice.model}",
        f"kind: {notice.kind.value}",
        f"severity: {notice.severity.value}",
        f"at: {notice.at.isoformat()}",
    ]
    if notice.incident:
        lines.append(f"incident: {notice.incident}")
    msg.set_content("\n".join(lines) + "\n")
    return msg


def send_mail(
    settings: SmtpSettings,
    notice: Notice,
    to: str,
    delivery_id: str,
    *,
    environ: Mapping[str, str] = os.environ,
) -> MailResult:
    """Send ``notice`` to ``to`` once. Never raises: the result says what happened."""
    where = f"SMTP server {settings.host}:{settings.port}"
    password = None
    if settings.username:
        if not settings.password_env or settings.password_env not in environ:
            return MailResult(
                f"{where}: no password for user {settings.username!r}: set the environment "
                f"variable {settings.password_env or '(notifications.smtp.password_env)'} of "
                "the controller"
            )
        password = environ[settings.password_env]
    msg = build_message(notice, to, delivery_id, settings.sender)
    try:
        with smtplib.SMTP(settings.host, settings.port, timeout=settings.timeout) as smtp:
            if settings.starttls:
                smtp.starttls(context=ssl.create_default_context())
            if settings.username and password is not None:
                smtp.login(settings.username, password)
            smtp.send_message(msg)
    except smtplib.SMTPAuthenticationError as exc:
        return MailResult(f"{where} refused the login of {settings.username!r}: {_reply(exc)}")
    except smtplib.SMTPRecipientsRefused as exc:
        codes = [code for code, _ in exc.recipients.values()]
        return MailResult(f"{where} refused the address {to!r}: {exc.recipients[to][1]!r}"
                          if to in exc.recipients else f"{where} refused the recipients",
                          retry=all(400 <= c < 500 for c in codes))  # fmt: skip
    except smtplib.SMTPResponseException as exc:
        # 4xx replies are temporary by definition (RFC 5321); 5xx ones will repeat.
        return MailResult(f"{where} answered {_reply(exc)}", retry=400 <= exc.smtp_code < 500)
    except smtplib.SMTPNotSupportedError as exc:
        return MailResult(f"{where} does not support {exc}: check notifications.smtp.starttls")
    except TimeoutError:
        return MailResult(f"{where}: no answer within {settings.timeout:g}s", retry=True)
    except smtplib.SMTPServerDisconnected as exc:
        # smtplib reports a reply that timed out as a disconnection.
        if "timed out" in str(exc):
            return MailResult(f"{where}: no answer within {settings.timeout:g}s", retry=True)
        return MailResult(f"{where}: the connection closed: {exc}", retry=True)
    except (smtplib.SMTPException, ssl.SSLError, OSError) as exc:
        return MailResult(f"{where}: {type(exc).__name__}: {exc}", retry=True)
    return MailResult()


def _reply(exc: smtplib.SMTPResponseException) -> str:
    text = (
        exc.smtp_error.decode("utf-8", "replace")
        if isinstance(exc.smtp_error, bytes)
        else str(exc.smtp_error)
    )
    return f"{exc.smtp_code} {' '.join(text.split())}"
