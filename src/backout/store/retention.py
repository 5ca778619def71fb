"""Retention: how long telemetry, captures, events and sent notifications are kept.

For the operator whose store must not grow without bound, and for the auditor who must
still be able to verify the event log afterwards. :class:`Retention` holds the settings
(stored in ``meta``; safe defaults: telemetry 14 days, captured requests 90 days — and at
most the policy's ``capture.max_rows`` per model, which the gateway enforces — events 400
days, delivered or failed notifications 30 days; 0 keeps a kind for ever). :func:`prune`
removes what is older, a bounded batch per kind and call, so the controller can run it at a
low rate between ticks (``backout serve``) and ``backout retention prune`` can finish the job.

What an incident still needs is never pruned: telemetry, captures and events newer than the
start of the oldest operation in progress stay, whatever their age.

Events are removed only as a prefix of the hash chain, and every pruning writes a signed
:class:`~backout.store.audit.Checkpoint` — the sequence number and hash of the last removed
event — so ``backout history --verify`` verifies the rest from there. The signature is made
with the store's own Ed25519 checkpoint key (created on first use, kept in ``meta``), or with
an admin's private key whose public half is a trusted key (``backout keys add``): the first
catches accidents and casual edits; only the second also resists someone who can write to
the store, since its private half never is in it.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy.engine import Connection

from backout.configfile import format_duration, parse_duration
from backout.errors import ConfigError, UnknownKey
from backout.store import audit, schema
from backout.store.audit import CHECKPOINT_KEY, Checkpoint, checkpoint_message
from backout.store.engine import Store, as_utc

__all__ = ["DAY", "KINDS", "PruneReport", "Retention", "parse_keep", "prune", "read", "write"]

DAY = 86400.0
KINDS = ("telemetry", "captures", "events", "outbox")
_SETTING = "retention."
_PRIVATE = "checkpoint.private"  # meta: the store's own checkpoint key (private, hex)


@dataclass(frozen=True, slots=True)
class Retention:
    """How long each kind of row is kept, in seconds (0: for ever)."""

    telemetry: float = 14 * DAY
    captures: float = 90 * DAY
    events: float = 400 * DAY
    outbox: float = 30 * DAY

    def to_dict(self) -> dict[str, str]:
        return {k: format_duration(v) if v else "forever" for k, v in asdict(self).items()}


def parse_keep(kind: str, value: str) -> float:
    """A retention period from the command line: a duration (``14d``), or 0/off/forever."""
    if value.strip().lower() in ("0", "off", "forever", "never"):
        return 0.0
    try:
        seconds = parse_duration(value)
    except ValueError as exc:
        raise ConfigError(
            f"--{kind} {value!r} is not a duration: use e.g. 14d, 36h or 90m, or 'forever'"
        ) from exc
    if seconds < 3600:
        raise ConfigError(
            f"--{kind} {value!r} is under an hour: keep {kind} at least 1h (or 'forever'), "
            "or judges and reports lose the data they need"
        )
    return seconds


def read(conn: Connection) -> Retention:
    """The store's retention settings (the defaults where none was set)."""
    M = schema.meta
    rows = conn.execute(sa.select(M.c.key, M.c.number).where(M.c.key.like(_SETTING + "%")))
    values = {
        k.removeprefix(_SETTING): float(n) for k, n in rows if k.removeprefix(_SETTING) in KINDS
    }
    return replace(Retention(), **values)


def write(store: Store, *, actor: str, **changes: float) -> Retention:
    """Change some settings (seconds; 0 for ever); recorded as a ``retention.set`` event."""
    unknown = sorted(set(changes) - set(KINDS))
    if unknown:
        raise ConfigError(f"unknown retention kind(s) {', '.join(unknown)}: use {', '.join(KINDS)}")
    M = schema.meta
    with store.write() as conn:
        for kind, seconds in changes.items():
            key = _SETTING + kind
            exists = conn.execute(sa.select(M.c.key).where(M.c.key == key)).first()
            stmt = M.update().where(M.c.key == key) if exists else M.insert().values(key=key)
            conn.execute(stmt.values(value=format_duration(seconds) if seconds else "forever",
                                     number=int(seconds)))  # fmt: skip
        settings = read(conn)
        audit.append(conn, "retention.set", model=None, actor=actor,
                     reason=", ".join(f"{k} {v}" for k, v in settings.to_dict().items()),
                     data=settings.to_dict())  # fmt: skip
    return settings


@dataclass(slots=True)
class PruneReport:
    """What one :func:`prune` removed (or would remove, in a dry run)."""

    telemetry: int = 0
    captures: int = 0
    events: int = 0
    outbox: int = 0
    checkpoint: Checkpoint | None = None
    more: bool = False  # a batch limit was reached: call again for the rest
    dry_run: bool = False
    settings: Retention = field(default_factory=Retention)

    @property
    def total(self) -> int:
        return self.telemetry + self.captures + self.events + self.outbox

    def to_dict(self) -> dict[str, Any]:
        return {"telemetry": self.telemetry, "captures": self.captures, "events": self.events,
                "outbox": self.outbox, "more": self.more, "dry_run": self.dry_run,
                "checkpoint": self.checkpoint.to_dict() if self.checkpoint else None,
                "settings": self.settings.to_dict()}  # fmt: skip


def prune(
    store: Store,
    *,
    now: float | None = None,
    batch: int = 5000,
    signer: Ed25519PrivateKey | None = None,
    actor: str = "retention",
    dry_run: bool = False,
) -> PruneReport:
    """Remove what is past its retention, at most ``batch`` rows of each kind, in one
    transaction; sign a checkpoint if events were removed. ``signer``: an admin's private
    key (its public half must be trusted); None uses the store's own checkpoint key."""
    now = time.time() if now is None else now
    with store.write() as conn:
        if signer is not None:
            _require_trusted(conn, signer)
        settings = read(conn)
        report = PruneReport(settings=settings, dry_run=dry_run)
        # What an incident in progress still reads is kept, however old.
        OP = schema.operations
        active = dict(
            conn.execute(
                sa.select(OP.c.model, OP.c.started_at).where(OP.c.ended_at.is_(None))
            ).all()
        )
        oldest_active = min(active.values(), default=None)
        T, C, OB = schema.telemetry, schema.captures, schema.outbox
        if settings.telemetry:
            keep = [sa.and_(T.c.model == m, T.c.end >= at) for m, at in active.items()]
            cond = sa.and_(T.c.end < now - settings.telemetry, sa.not_(sa.or_(sa.false(), *keep)))
            report.telemetry, more = _delete(conn, T, T.c.id, cond, batch, dry_run)
            report.more |= more
        if settings.captures:
            keep = [sa.and_(C.c.model == m, C.c.at >= at) for m, at in active.items()]
            cond = sa.and_(C.c.at < now - settings.captures, sa.not_(sa.or_(sa.false(), *keep)))
            report.captures, more = _delete(conn, C, C.c.id, cond, batch, dry_run)
            report.more |= more
        if settings.outbox:
            cond = sa.and_(OB.c.status != "pending", OB.c.done_at < now - settings.outbox)
            report.outbox, more = _delete(conn, OB, OB.c.id, cond, batch, dry_run)
            report.more |= more
        if settings.events:
            cutoff = now - settings.events
            if oldest_active is not None:
                cutoff = min(cutoff, oldest_active)
            report.events, report.checkpoint, more = _prune_events(
                conn, cutoff, batch, signer, dry_run
            )
            report.more |= more
        if report.total and not dry_run:
            audit.append(conn, "retention.pruned", model=None, actor=actor,
                         reason=", ".join(f"{n} {k}" for k in KINDS if (n := getattr(report, k))),
                         data=report.to_dict())  # fmt: skip
    return report


def prune_all(store: Store, *, signer: Ed25519PrivateKey | None = None, actor: str = "retention",
              dry_run: bool = False) -> PruneReport:  # fmt: skip
    """:func:`prune` batch after batch until nothing past its retention is left (a dry run
    counts one batch of each kind): the totals, and the last checkpoint signed."""
    total = PruneReport(dry_run=dry_run)
    while True:
        report = prune(store, signer=signer, actor=actor, dry_run=dry_run)
        for kind in KINDS:
            setattr(total, kind, getattr(total, kind) + getattr(report, kind))
        total.checkpoint = report.checkpoint or total.checkpoint
        total.settings = report.settings
        if not report.more or dry_run:
            total.more = report.more
            return total


def _delete(conn: Connection, table: sa.Table, pk: sa.Column[Any], cond: Any, batch: int,
            dry_run: bool) -> tuple[int, bool]:  # fmt: skip
    """Delete up to ``batch`` rows matching ``cond``, oldest ids first; (count, more left)."""
    ids = list(conn.execute(sa.select(pk).where(cond).order_by(pk).limit(batch + 1)).scalars())
    more = len(ids) > batch
    ids = ids[:batch]
    if ids and not dry_run:
        for i in range(0, len(ids), 500):  # bound the size of one IN list
            conn.execute(table.delete().where(pk.in_(ids[i : i + 500])))
    return len(ids), more


def _prune_events(conn: Connection, cutoff: float, batch: int, signer: Ed25519PrivateKey | None,
                  dry_run: bool) -> tuple[int, Checkpoint | None, bool]:  # fmt: skip
    E = schema.events
    at_cutoff = datetime.fromtimestamp(cutoff, UTC)
    start = conn.execute(sa.select(sa.func.min(E.c.seq))).scalar()
    if start is None:
        return 0, None, False
    # Only a prefix of the chain may go: stop at the first event young enough to keep.
    young = conn.execute(sa.select(sa.func.min(E.c.seq)).where(E.c.at >= at_cutoff)).scalar()
    last = int(conn.execute(sa.select(sa.func.max(E.c.seq))).scalar() or 0)
    end = (int(young) - 1) if young is not None else last
    if end < start:
        return 0, None, False
    more = end - start + 1 > batch
    end = min(end, start + batch - 1)
    row = conn.execute(sa.select(E.c.hash, E.c.at).where(E.c.seq == end)).first()
    if row is None:  # a gap in the chain right there: verify says so; prune nothing
        return 0, None, False
    count = int(
        conn.execute(sa.select(sa.func.count()).select_from(E).where(E.c.seq <= end)).scalar() or 0
    )
    if dry_run:
        return count, None, more
    key = signer or _store_key(conn)
    public = (
        key.public_key()
        .public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        .hex()
    )
    event_at = as_utc(row.at)
    cp = Checkpoint(
        seq=end, hash=row.hash, event_at=event_at, pruned=count, created_at=datetime.now(UTC),
        key_id=hashlib.sha256(bytes.fromhex(public)).hexdigest()[:16], public_key=public,
        signature=key.sign(checkpoint_message(end, row.hash, event_at)).hex(),
        signer="the store's key" if signer is None else "trusted key",
    )  # fmt: skip
    conn.execute(E.delete().where(E.c.seq <= end))
    conn.execute(schema.checkpoints.insert().values(
        seq=cp.seq, hash=cp.hash, event_at=cp.event_at, pruned=cp.pruned,
        created_at=cp.created_at, key_id=cp.key_id, public_key=cp.public_key,
        signature=cp.signature))  # fmt: skip
    return count, cp, more


def _store_key(conn: Connection) -> Ed25519PrivateKey:
    """The store's own checkpoint key, made on first use."""
    M = schema.meta
    private = conn.execute(sa.select(M.c.value).where(M.c.key == _PRIVATE)).scalar()
    if private is not None:
        return Ed25519PrivateKey.from_private_bytes(bytes.fromhex(private))
    key = Ed25519PrivateKey.generate()
    raw = key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    conn.execute(M.insert().values(key=_PRIVATE, value=raw.hex(), number=0))
    conn.execute(M.insert().values(key=CHECKPOINT_KEY, value=public.hex(), number=0))
    return key


def _require_trusted(conn: Connection, key: Ed25519PrivateKey) -> None:
    public = (
        key.public_key()
        .public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        .hex()
    )
    K = schema.signing_keys
    row = conn.execute(
        sa.select(K.c.name).where(K.c.public_key == public, K.c.removed_at.is_(None))
    ).first()
    if row is None:
        raise UnknownKey(
            "the checkpoint key's public half is not a trusted key: an admin adds it with "
            "`backout keys add NAME FILE.pub`, or prune without --key to use the store's key"
        )
