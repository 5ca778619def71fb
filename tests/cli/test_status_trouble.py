"""``backout status`` tells what is in trouble besides traffic: notices not delivered yet
(with their last error), a router that does not serve the committed table, a slow store;
and says nothing of them when all is well."""

from __future__ import annotations

from pathlib import Path

import pytest

from backout.control import status as status_view
from backout.control.notify import Notice
from backout.control.outbox import Outbox, WebhookSender, enqueue
from backout.control.policy import NoticeKind
from backout.registry.artifacts import LocalBlobStore
from backout.registry.releases import Registry
from backout.store import audit, open_store
from backout.traffic.deployments import Deployments
from tests.cli.runner import Cli
from tests.models import register_iris
from tests.postgres_server import free_port


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> Cli:
    url = f"sqlite:///{tmp_path / 'store.db'}"
    store = open_store(url, create=True)
    registry = Registry(store, LocalBlobStore(tmp_path / "artifacts"))
    register_iris(registry, tmp_path / "models", "1.0.0")
    Deployments(store, registry).set_traffic("iris", {"1.0.0": 100}, actor="t")
    store.dispose()
    return Cli(capsys, url, tmp_path)


def _store(cli: Cli) -> str:
    return cli.base[1]


def test_status_says_nothing_of_notices_router_or_store_when_all_is_well(cli: Cli) -> None:
    code, out, err = cli("status", "iris")
    assert (code, err) == (0, "")
    assert "notice" not in out and "router" not in out and "store" not in out
    doc = cli.json("status", "iris")
    assert isinstance(doc, dict)
    assert doc["notices"] == {"pending": 0, "oldest": []}
    assert doc["router_trouble"] == {"error": None, "since": None, "router": None}
    assert doc["store"]["slow"] is False and doc["store"]["round_trip_ms"] >= 0


def test_status_shows_undelivered_notices_with_their_last_error(cli: Cli) -> None:
    dead = f"http://127.0.0.1:{free_port()}/hooks/T0/SECRETtoken"  # nothing listens there
    store = open_store(_store(cli))
    with store.write() as conn:
        audit.append(conn, "freeze", model="iris", actor="t", reason="test")
        enqueue(conn, Notice(kind=NoticeKind.FREEZE, model="iris", title="iris is frozen"),
                webhooks=[dead], now=0.0)  # fmt: skip
    code, out, _ = cli("status", "iris")
    assert code == 0
    assert "1 notice not delivered yet; oldest: freeze to webhook http://127.0.0.1:" in out
    assert "(not tried yet)" in out
    Outbox(store, senders={"webhook": WebhookSender(timeout=0.5)}).deliver_due()
    store.dispose()
    code, out, _ = cli("status", "iris")
    assert code == 0
    assert "after 1 attempt: connection failed" in out, out
    assert "SECRETtoken" not in out  # the webhook's path is its secret
    doc = cli.json("status", "iris")
    assert isinstance(doc, dict)
    assert doc["notices"]["pending"] == 1
    (oldest,) = doc["notices"]["oldest"]
    assert oldest["attempts"] == 1 and oldest["last_error"].startswith("connection failed")
    assert oldest["kind"] == "freeze" and "SECRETtoken" not in str(doc)


def test_status_shows_a_router_in_trouble_until_it_recovers(cli: Cli) -> None:
    store = open_store(_store(cli))
    with store.write() as conn:
        audit.append(conn, "router.error", model="iris", actor="controller",
                     reason="router traefik: cannot reach http://127.0.0.1:9/api; traffic "
                     "holds still until it serves the committed table",
                     data={"router": "traefik", "generation": 1})  # fmt: skip
    code, out, _ = cli("status", "iris")
    assert code == 0
    assert "router trouble since " in out and "router traefik: cannot reach" in out, out
    doc = cli.json("status", "iris")
    assert isinstance(doc, dict) and doc["router_trouble"]["router"] == "traefik"
    assert doc["router_trouble"]["error"].startswith("router traefik: cannot reach")
    with store.write() as conn:
        audit.append(conn, "router.recovered", model="iris", actor="controller",
                     reason="router traefik serves the committed table again",
                     data={"router": "traefik", "generation": 1})  # fmt: skip
    store.dispose()
    code, out, _ = cli("status", "iris")
    assert code == 0 and "router" not in out


def test_status_says_when_the_store_is_slow(cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    # Any round trip counts as slow here; the chaos suite slows a real PostgreSQL instead.
    monkeypatch.setattr(status_view, "SLOW_STORE_MS", -1.0)
    code, out, _ = cli("status", "iris")
    assert code == 0
    assert out.startswith("store slow: one round trip took "), out
    assert cli.json("status")[0]["store"]["slow"] is True  # type: ignore[index]
