"""Retention: safe defaults, pruning of what is old (never what an incident in progress
reads), bounded batches, and an event log that still verifies from a signed checkpoint."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest
import sqlalchemy as sa

from backout.control.controller import Controller
from backout.errors import UnknownKey
from backout.registry import signing
from backout.registry.releases import Registry
from backout.store import Store, audit, open_store, retention, schema
from backout.store.retention import DAY, Retention
from tests.cli.runner import Cli
from tests.models import register_iris

NOW = 1_900_000_000.0  # a fixed "now", about 2030


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str], store_url: str, tmp_path: Path) -> Cli:
    open_store(store_url, create=True).dispose()  # as `backout init` does
    return Cli(capsys, store_url, tmp_path)


def events_at(store: Store, *ages_days: float, model: str = "fraud") -> None:
    """Append one event per age (days before NOW), oldest first."""
    with store.write() as conn:
        for age in ages_days:
            audit.append(conn, "note", model=model, actor="t", reason=f"{age} days old",
                         at=datetime.fromtimestamp(NOW - age * DAY, UTC))  # fmt: skip


def telemetry_at(store: Store, model: str, *ages_days: float) -> None:
    with store.write() as conn:
        for age in ages_days:
            t = NOW - age * DAY
            conn.execute(schema.telemetry.insert().values(
                model=model, version="1.0.0", start=t - 1, end=t, worker="w", data={}))  # fmt: skip


def count(store: Store, table: sa.Table) -> int:
    with store.read() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one())


def problems(store: Store) -> list[str]:
    with store.read() as conn:
        return [p.problem for p in audit.verify_chain(conn)]


def test_defaults_are_safe(store: Store) -> None:
    with store.read() as conn:
        assert retention.read(conn) == Retention(telemetry=14 * DAY, captures=90 * DAY,
                                                 events=400 * DAY, outbox=30 * DAY)  # fmt: skip


def test_set_and_show_from_the_command_line(cli: Cli) -> None:
    code, out, err = cli("retention", "set", "--telemetry", "7d", "--events", "forever")
    assert code == 0, err
    assert out == "retention: telemetry 7d, captures 90d, events forever, outbox 30d\n"
    code, out, _ = cli("retention", "show", "--json")
    assert orjson.loads(out) == {"telemetry": "7d", "captures": "90d", "events": "forever",
                                 "outbox": "30d"}  # fmt: skip


@pytest.mark.parametrize(("args", "message"), [
    (["--telemetry", "abc"], "error: --telemetry 'abc' is not a duration: use e.g. 14d, 36h or 90m, or 'forever'"),
    (["--events", "5m"], "error: --events '5m' is under an hour: keep events at least 1h (or 'forever'), or judges and reports lose the data they need"),
    ([], "error: nothing to set: give at least one of --telemetry, --captures, --events, --outbox"),
])  # fmt: skip
def test_bad_settings_are_one_line_and_change_nothing(
    cli: Cli, args: list[str], message: str
) -> None:
    code, _, err = cli("retention", "set", *args)
    assert (code, err.strip()) == (2, message)  # a usage error
    assert orjson.loads(cli("retention", "show", "--json")[1])["telemetry"] == "14d"


def test_old_telemetry_goes_recent_stays(store: Store) -> None:
    telemetry_at(store, "fraud", 30, 20, 15, 13, 1)
    report = retention.prune(store, now=NOW)
    assert report.telemetry == 3
    assert count(store, schema.telemetry) == 2


def test_an_operation_in_progress_keeps_its_telemetry_and_events(
    store: Store, registry: Registry, tmp_path: Path
) -> None:
    register_iris(registry, tmp_path / "m", "1.0.0")
    register_iris(registry, tmp_path / "m", "2.0.0", c=0.5)
    started = NOW - 500 * DAY
    ctl = Controller(store, registry, clock=lambda: started)
    ctl.deploy("iris", "1.0.0", actor="t")
    ctl.clock = lambda: started + 1
    ctl.deploy("iris", "2.0.0", actor="t")  # a rollout started 500 days ago, still running
    telemetry_at(store, "iris", 499, 450)
    telemetry_at(store, "other", 499, 450)
    before = count(store, schema.events)
    report = retention.prune(store, now=NOW)
    assert report.telemetry == 2  # only the other model's
    with store.read() as conn:
        assert {r.model for r in conn.execute(sa.select(schema.telemetry))} == {"iris"}
    # The rollout's events are younger than its start: none goes.
    with store.read() as conn:
        kept = audit.list_events(conn, "iris")
    assert [e for e in kept if e.kind == "rollout.started"]
    assert report.events < before


def test_pruned_events_leave_a_signed_checkpoint_and_the_chain_verifies(
    store: Store, cli: Cli
) -> None:
    events_at(store, 800, 600, 500, 401, 10, 1)
    report = retention.prune(store, now=NOW)
    assert report.events == 4
    assert report.checkpoint is not None and report.checkpoint.seq == 4
    assert problems(store) == []
    with store.read() as conn:
        kinds = [e.kind for e in audit.list_events(conn)]
    assert kinds == ["note", "note", "retention.pruned"]
    code, out, _ = cli("history", "--verify")
    assert code == 0
    assert out.splitlines()[-1] == (
        "chain verified from the checkpoint at event 4 (signed by the store's key; events up "
        "to 4 pruned): 3 event(s), hashes intact"
    )
    chain = orjson.loads(cli("history", "--verify", "--json")[1])["chain"]
    assert (chain["ok"], chain["checkpoint"]["seq"], chain["checkpoint"]["signer"]) == (
        True, 4, "the store's key")  # fmt: skip


def test_pruning_in_batches_keeps_the_chain_whole(store: Store) -> None:
    events_at(store, *[900 - i for i in range(25)], 5)
    first = retention.prune(store, now=NOW, batch=10)
    assert (first.events, first.more) == (10, True)
    while retention.prune(store, now=NOW, batch=10).more:
        pass
    assert problems(store) == []
    with store.read() as conn:
        assert audit.latest_checkpoint(conn).seq == 25  # type: ignore[union-attr]
        assert [e.reason for e in audit.list_events(conn, "fraud")] == ["5 days old"]


def test_pruning_everything_old_still_verifies(store: Store) -> None:
    events_at(store, 800, 700)
    retention.prune(store, now=NOW, batch=1)
    retention.prune(store, now=NOW)
    assert problems(store) == []


def test_a_dry_run_removes_nothing(store: Store) -> None:
    events_at(store, 800, 1)
    telemetry_at(store, "fraud", 30)
    report = retention.prune(store, now=NOW, dry_run=True)
    assert (report.events, report.telemetry, report.checkpoint) == (1, 1, None)
    assert count(store, schema.events) == 2
    assert count(store, schema.checkpoints) == 0


def test_a_tampered_checkpoint_is_caught(store: Store) -> None:
    events_at(store, 800, 700, 1)
    retention.prune(store, now=NOW)
    with store.write() as conn:
        conn.execute(schema.checkpoints.update().values(seq=1))
    assert problems(store)[0] == (
        "the checkpoint at event 1 has a signature that does not verify (the checkpoint was altered)"
    )


def test_a_removed_checkpoint_shows_the_pruned_events_missing(store: Store) -> None:
    events_at(store, 800, 700, 1)
    retention.prune(store, now=NOW)
    with store.write() as conn:
        conn.execute(schema.checkpoints.delete())
    assert problems(store)[0] == "events 1..2 are missing"


def test_an_edited_event_after_the_checkpoint_is_caught(store: Store) -> None:
    events_at(store, 800, 700, 1)
    retention.prune(store, now=NOW)
    with store.write() as conn:
        conn.execute(schema.events.update().where(schema.events.c.seq == 3).values(reason="edited"))
    assert problems(store) == ["its content was changed after it was written"]


def test_a_checkpoint_forged_with_an_unknown_key_is_caught(store: Store, tmp_path: Path) -> None:
    events_at(store, 800, 700, 1)
    retention.prune(store, now=NOW)
    # Someone prunes one more event and signs with a key of their own.
    forger = tmp_path / "forger.key"
    signing.generate_key(forger)
    key = signing.load_private_key(forger)
    with store.write() as conn:
        e3 = conn.execute(sa.select(schema.events).where(schema.events.c.seq == 3)).one()
        conn.execute(schema.events.delete().where(schema.events.c.seq == 3))
        msg = audit.checkpoint_message(3, e3.hash, e3.at)
        conn.execute(schema.checkpoints.insert().values(
            seq=3, hash=e3.hash, event_at=e3.at, pruned=1, created_at=datetime.now(UTC),
            key_id=signing.key_id(key.public_key()), public_key=signing.public_hex(key.public_key()),
            signature=key.sign(msg).hex()))  # fmt: skip
    found = problems(store)
    assert found[0].startswith("the checkpoint at event 3 is signed by key ")
    assert found[0].endswith("which is neither the store's key nor a key trusted when it was made")


def test_an_admin_key_signs_the_checkpoint(store: Store, cli: Cli, tmp_path: Path) -> None:
    path = tmp_path / "audit.key"
    signing.generate_key(path)
    with store.write() as conn:  # two events from over a year ago, then today's
        for age in (800, 700, 0):
            audit.append(conn, "note", model="fraud", actor="t",
                         at=datetime.fromtimestamp(time.time() - age * DAY, UTC))  # fmt: skip
    signing.Keyring(store).add(
        "auditor", signing.load_public_key(Path(f"{path}.pub")), actor="admin"
    )
    code, out, err = cli("retention", "prune", "--key", str(path))
    assert code == 0, err
    assert out == (
        "removed 0 telemetry, 0 captures, 2 events, 0 outbox; events now verify from the "
        "signed checkpoint at event 2\n"
    )
    code, out, _ = cli("history", "--verify")
    assert code == 0
    assert "(signed by trusted key auditor; events up to 2 pruned)" in out.splitlines()[-1]


def test_an_untrusted_admin_key_prunes_nothing(store: Store, tmp_path: Path) -> None:
    path = tmp_path / "stranger.key"
    signing.generate_key(path)
    events_at(store, 800, 1)
    with pytest.raises(UnknownKey, match="is not a trusted key"):
        retention.prune(store, now=NOW, signer=signing.load_private_key(path))
    assert count(store, schema.events) == 2


def test_sent_notifications_age_out_pending_ones_stay(store: Store) -> None:
    with store.write() as conn:
        for i, (status, done) in enumerate([("delivered", NOW - 40 * DAY), ("failed", NOW - 31 * DAY),
                                            ("delivered", NOW - DAY), ("pending", None)]):  # fmt: skip
            conn.execute(schema.outbox.insert().values(
                id=f"id{i}", created_at=NOW - 50 * DAY, model="fraud", kind="freeze",
                channel="webhook", target="http://x", notice={}, status=status, attempts=1,
                next_attempt_at=NOW, last_error="", done_at=done))  # fmt: skip
    assert retention.prune(store, now=NOW).outbox == 2
    with store.read() as conn:
        assert sorted(conn.execute(sa.select(schema.outbox.c.id)).scalars()) == ["id2", "id3"]


def test_old_captures_go(store: Store) -> None:
    with store.write() as conn:
        for age in (120, 91, 5):
            conn.execute(schema.captures.insert().values(
                model="fraud", version="1", at=NOW - age * DAY, request_id=f"r{age}",
                protocol="json", latency_ms=1.0, request="{}", response="{}"))  # fmt: skip
    assert retention.prune(store, now=NOW).captures == 2
    assert count(store, schema.captures) == 1


def test_the_controller_prunes_at_a_low_rate(store: Store, registry: Registry) -> None:
    clock = [NOW]
    ctl = Controller(store, registry, clock=lambda: clock[0])
    telemetry_at(store, "fraud", 30)
    ctl.housekeeping()
    assert count(store, schema.telemetry) == 0
    telemetry_at(store, "fraud", 30)
    clock[0] += 600
    ctl.housekeeping()  # ten minutes later: not yet
    assert count(store, schema.telemetry) == 1
    clock[0] += 3600
    ctl.housekeeping()
    assert count(store, schema.telemetry) == 0
