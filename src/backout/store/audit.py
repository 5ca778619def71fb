"""The audit log: append-only, hash-chained events.

Each event's hash covers its sequence number, time, model, kind, actor, reason, data and
the previous event's hash. The head (last sequence number and hash) is also kept in the
``meta`` table, so removing the newest events is detected as well as editing, removing or
reordering any other. Events are appended inside the caller's write transaction, so an
operation and its event commit together or not at all. Secrets never enter the log: every
event is redacted (:mod:`backout.redaction`) before it is hashed.

Retention (:mod:`backout.store.retention`) removes the oldest events, always a prefix of
the chain, and leaves a signed :class:`Checkpoint`: the sequence number and hash of the last
event it removed, signed with Ed25519. :func:`verify_chain` then verifies the rest of the log
from the newest checkpoint, after checking its signature and its key: the store's own
checkpoint key, or a key an admin trusted (``backout keys add``) when the checkpoint was made.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
import sqlalchemy as sa
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy.engine import Connection

from backout.canonical import canonical_json
from backout.redaction import redact, redact_text
from backout.store import as_utc, schema

GENESIS = "0" * 64
_HEAD = "events.head"
CHECKPOINT_KEY = "checkpoint.public"  # meta: the store's own checkpoint key (public, hex)
CHECKPOINT_CONTEXT = b"backout event-log checkpoint:"


@dataclass(frozen=True, slots=True)
class Event:
    """One entry of the audit log."""

    seq: int
    at: datetime
    model: str | None
    kind: str
    actor: str
    reason: str
    data: dict[str, Any]
    prev_hash: str
    hash: str

    def to_dict(self) -> dict[str, Any]:
        """The event to show: redacted again, for events written before redaction was."""
        return {
            "seq": self.seq,
            "at": self.at.isoformat(),
            "model": self.model,
            "kind": self.kind,
            "actor": redact_text(self.actor),
            "reason": redact_text(self.reason),
            "data": redact(self.data),
            "hash": self.hash,
        }


@dataclass(frozen=True, slots=True)
class ChainProblem:
    """Where the chain breaks, and how."""

    seq: int
    problem: str


def event_hash(
    seq: int, at: datetime, model: str | None, kind: str, actor: str, reason: str,
    data: dict[str, Any], prev_hash: str,
) -> str:  # fmt: skip
    """The SHA-256 that chains an event to the one before it."""
    body = {
        "seq": seq,
        "at": as_utc(at).isoformat(),
        "model": model,
        "kind": kind,
        "actor": actor,
        "reason": reason,
        "data": data,
        "prev": prev_hash,
    }
    return hashlib.sha256(canonical_json(body)).hexdigest()


def append(
    conn: Connection,
    kind: str,
    *,
    model: str | None,
    actor: str,
    reason: str = "",
    data: dict[str, Any] | None = None,
    at: datetime | None = None,
) -> Event:
    """Append one event. Call inside ``Store.write()``, which serialises appenders.

    Secrets in the reason and data (webhook URLs, passwords, tokens) are redacted before
    the event is hashed and stored: the audit log is read by every viewer.
    """
    reason, actor = redact_text(reason), redact_text(actor)
    # Round-trip through JSON once so the hash is computed over exactly what is stored.
    data = orjson.loads(canonical_json(redact(data or {})))
    at = as_utc(at or datetime.now(UTC))
    head = conn.execute(
        sa.select(schema.meta.c.value, schema.meta.c.number).where(schema.meta.c.key == _HEAD)
    ).first()
    seq, prev = (int(head.number) + 1, head.value) if head else (1, GENESIS)
    h = event_hash(seq, at, model, kind, actor, reason, data, prev)
    conn.execute(
        schema.events.insert().values(
            seq=seq, at=at, model=model, kind=kind, actor=actor, reason=reason, data=data,
            prev_hash=prev, hash=h,
        )
    )  # fmt: skip
    if head:
        conn.execute(
            schema.meta.update().where(schema.meta.c.key == _HEAD).values(value=h, number=seq)
        )
    else:
        conn.execute(schema.meta.insert().values(key=_HEAD, value=h, number=seq))
    return Event(seq, at, model, kind, actor, reason, data, prev, h)


def list_events(
    conn: Connection,
    model: str | None = None,
    *,
    kinds: Sequence[str] = (),
    since_seq: int = 0,
    limit: int | None = None,
    newest_first: bool = False,
) -> list[Event]:
    """Events in order (or newest first), optionally for one model and of some kinds, as
    shown to people.

    They are redacted (again: events written before redaction existed may hold a secret),
    so their ``hash`` is that of the stored event; :func:`verify_chain` reads the stored form.
    """
    seq = schema.events.c.seq
    q = (
        sa.select(schema.events)
        .where(seq > since_seq)
        .order_by(seq.desc() if newest_first else seq)
    )
    if model is not None:
        q = q.where(schema.events.c.model == model)
    if kinds:
        q = q.where(schema.events.c.kind.in_(list(kinds)))
    if limit is not None:
        q = q.limit(limit)
    return [_shown(_row(r)) for r in conn.execute(q)]


def latest(conn: Connection, model: str, kinds: Sequence[str]) -> Event | None:
    """The model's newest event of one of ``kinds``, or None."""
    row = conn.execute(
        sa.select(schema.events)
        .where(schema.events.c.model == model, schema.events.c.kind.in_(list(kinds)))
        .order_by(schema.events.c.seq.desc())
        .limit(1)
    ).first()
    return _row(row) if row is not None else None


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """Where the chain starts after pruning: the last removed event, signed."""

    seq: int
    hash: str
    event_at: datetime
    pruned: int
    created_at: datetime
    key_id: str
    public_key: str  # hex
    signature: str  # hex
    signer: str = ""  # who holds the key: "the store's key" or a trusted key's name

    def to_dict(self) -> dict[str, Any]:
        return {"seq": self.seq, "hash": self.hash, "event_at": self.event_at.isoformat(),
                "pruned": self.pruned, "created_at": self.created_at.isoformat(),
                "key_id": self.key_id, "signer": self.signer}  # fmt: skip


def checkpoint_message(seq: int, hash: str, event_at: datetime) -> bytes:
    """What a checkpoint's signature covers."""
    body = {"seq": seq, "hash": hash, "at": as_utc(event_at).isoformat()}
    return CHECKPOINT_CONTEXT + canonical_json(body)


def latest_checkpoint(conn: Connection) -> Checkpoint | None:
    """The newest checkpoint, or None when nothing was ever pruned."""
    C = schema.checkpoints
    r = conn.execute(sa.select(C).order_by(C.c.seq.desc()).limit(1)).first()
    if r is None:
        return None
    return Checkpoint(int(r.seq), r.hash, as_utc(r.event_at), int(r.pruned),
                      as_utc(r.created_at), r.key_id, r.public_key, r.signature)  # fmt: skip


def checkpoint_signer(conn: Connection, cp: Checkpoint) -> tuple[str | None, str]:
    """(who signed it, or None; the problem) — the signature must verify with a key that
    was trusted for checkpoints when it was made."""
    try:
        key = Ed25519PublicKey.from_public_bytes(bytes.fromhex(cp.public_key))
        key.verify(bytes.fromhex(cp.signature), checkpoint_message(cp.seq, cp.hash, cp.event_at))
    except (InvalidSignature, ValueError):
        return None, (
            f"the checkpoint at event {cp.seq} has a signature that does not verify "
            "(the checkpoint was altered)"
        )
    own = conn.execute(
        sa.select(schema.meta.c.value).where(schema.meta.c.key == CHECKPOINT_KEY)
    ).scalar()
    if own == cp.public_key:
        return "the store's key", ""
    K = schema.signing_keys
    k = conn.execute(sa.select(K).where(K.c.public_key == cp.public_key)).first()
    if (
        k is not None
        and as_utc(k.added_at) <= cp.created_at
        and (k.removed_at is None or as_utc(k.removed_at) > cp.created_at)
    ):
        return f"trusted key {k.name}", ""
    return None, (
        f"the checkpoint at event {cp.seq} is signed by key {cp.key_id}, which is neither the "
        "store's key nor a key trusted when it was made"
    )


def verify_chain(conn: Connection) -> list[ChainProblem]:
    """Every place the chain does not verify; empty when the log is intact.

    After pruning, the chain is verified from the newest checkpoint, whose signature is
    checked first.
    """
    problems: list[ChainProblem] = []
    prev = GENESIS
    expected_seq = 1
    last_seq = 0
    cp = latest_checkpoint(conn)
    if cp is not None:
        signer, problem = checkpoint_signer(conn, cp)
        if signer is None:
            problems.append(ChainProblem(cp.seq, problem))
        prev, expected_seq, last_seq = cp.hash, cp.seq + 1, cp.seq
    q = sa.select(schema.events).where(schema.events.c.seq > last_seq)
    for row in conn.execute(q.order_by(schema.events.c.seq)):
        e = _row(row)
        if e.seq != expected_seq:
            problems.append(ChainProblem(e.seq, f"events {expected_seq}..{e.seq - 1} are missing"))
        if e.prev_hash != prev:
            problems.append(
                ChainProblem(e.seq, "does not follow the event before it (removed or reordered)")
            )
        recomputed = event_hash(
            e.seq, e.at, e.model, e.kind, e.actor, e.reason, e.data, e.prev_hash
        )
        if recomputed != e.hash:
            problems.append(ChainProblem(e.seq, "its content was changed after it was written"))
        prev = e.hash
        expected_seq = e.seq + 1
        last_seq = e.seq
    head = conn.execute(
        sa.select(schema.meta.c.value, schema.meta.c.number).where(schema.meta.c.key == _HEAD)
    ).first()
    if head is not None and (int(head.number) != last_seq or head.value != prev):
        problems.append(
            ChainProblem(
                last_seq,
                f"the log ends at event {last_seq} but its head says {int(head.number)}: "
                "the newest events were removed or the head was altered",
            )
        )
    return problems


def _shown(e: Event) -> Event:
    reason, actor, data = redact_text(e.reason), redact_text(e.actor), redact(e.data)
    if (reason, actor, data) == (e.reason, e.actor, e.data):
        return e
    return dataclasses.replace(e, reason=reason, actor=actor, data=data)


def _row(r: Any) -> Event:
    return Event(
        seq=int(r.seq),
        at=as_utc(r.at),
        model=r.model,
        kind=r.kind,
        actor=r.actor,
        reason=r.reason,
        data=dict(r.data),
        prev_hash=r.prev_hash,
        hash=r.hash,
    )
