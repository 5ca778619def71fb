"""The live state: everything a gateway worker routes by, read from the store or pushed to it.

:func:`read_live_state` reads it in one transaction. On PostgreSQL a write that changes it
also sends it, as the payload of the ``backout_routes`` notification that announces the new
routes generation (:func:`encode` builds it on the writing connection, just before the
commit): a gateway replica then applies the state it was sent (:func:`decode`, validated
with pydantic) instead of reading the store itself, which costs it about eight round trips
from a thread that waits for the GIL on a busy worker. A state too large for a notification
(8000 bytes) goes as the bare generation, and the replicas read it. A controller about to
move traffic to a release the replicas may not hold sends a warm-up notice first
(:func:`announce_warm`), so they load it while the deploy's checks run.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson
import pydantic
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from backout.errors import StoreUnavailable
from backout.store import (
    NOTIFY_PAYLOAD_LIMIT,
    ROUTES_CHANNEL,
    Store,
    read_generation,
    read_identity,
    schema,
    set_routes_payload,
)
from backout.traffic.faults import FAULT_KINDS, Fault, active_faults
from backout.traffic.routes import BUCKETS, RouteTable, Shadow

D = schema.deployments
PAYLOAD_VERSION = 1  # the payload's format: a replica refuses (and reads) any other


@dataclass(frozen=True, slots=True)
class CaptureRule:
    """How one model's requests are sampled and scrubbed (from its policy's ``capture``)."""

    rate: float = 0.01
    redact: frozenset[str] = frozenset()
    hash: frozenset[str] = frozenset()
    max_rows: int = 100_000


@dataclass(frozen=True, slots=True)
class LiveState:
    """What every gateway worker needs to route: tables, quarantines, rollback points."""

    generation: int
    tables: dict[str, RouteTable]
    quarantined: dict[tuple[str, str], str]  # (model, version) -> reason
    known_good: dict[str, list[str]]  # model -> known-good versions, newest first
    capture: dict[str, CaptureRule] = field(default_factory=dict)  # model -> sampling rule
    faults: dict[tuple[str, str], Any] = field(default_factory=dict)  # drills' injected faults
    store_id: str | None = None  # the identity of the store it was read from

    def only(self, model: str, version: str) -> LiveState:
        """This state narrowed to one release taking all of ``model``'s traffic.

        What a per-release backend serves behind an external router (``backout serve
        --release``): the router splits, the backend answers for its release alone, with the
        release's quarantine, capture rule and faults as the store holds them.
        """
        table = RouteTable(model, self.generation, {version: ((0, BUCKETS),)})
        key = (model, version)
        return LiveState(
            self.generation,
            {model: table},
            {key: self.quarantined[key]} if key in self.quarantined else {},
            {},
            {model: self.capture[model]} if model in self.capture else {},
            {key: self.faults[key]} if key in self.faults else {},
        )


def read_live_state(conn: Connection) -> LiveState:
    """Everything a gateway worker routes by, read on ``conn`` (inside its transaction)."""
    R = schema.releases
    gen = read_generation(conn)
    tables = {r.model: RouteTable.from_dict(r.routes) for r in conn.execute(sa.select(D))}
    quarantined: dict[tuple[str, str], str] = {}
    known_good: dict[str, list[str]] = {}
    q = sa.select(R.c.model, R.c.version, R.c.quarantined, R.c.known_good).where(
        sa.or_(R.c.quarantined.is_not(None), R.c.known_good.is_(True))
    )
    for r in conn.execute(q.order_by(R.c.registered_at.desc(), R.c.id.desc())):
        if r.quarantined:
            quarantined[(r.model, r.version)] = r.quarantined
        elif r.known_good:
            known_good.setdefault(r.model, []).append(r.version)
    capture = {}
    P = schema.policies
    default = CaptureRule()
    for model, doc in conn.execute(sa.select(P.c.model, P.c.policy)):
        c = (doc or {}).get("capture") or {}
        capture[model] = CaptureRule(
            rate=float(c.get("rate", default.rate)),
            redact=frozenset(c.get("redact", ())),
            hash=frozenset(c.get("hash", ())),
            max_rows=int(c.get("max_rows", default.max_rows)),
        )
    faults = active_faults(conn, time.time())
    store_id = read_identity(conn)
    return LiveState(gen, tables, quarantined, known_good, capture, faults, store_id)


# -- the payload --------------------------------------------------------------------------


class _Strict(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid", strict=True, frozen=True)


class _Table(_Strict):
    model: str
    generation: int
    ranges: dict[str, list[tuple[int, int]]]
    shadow: tuple[str, int] | None = None  # (version, basis points)
    pins: dict[str, str] = {}

    @pydantic.field_validator("ranges")
    @classmethod
    def _in_buckets(cls, v: dict[str, list[tuple[int, int]]]) -> dict[str, list[tuple[int, int]]]:
        owned = 0
        for rs in v.values():
            for a, b in rs:
                if not 0 <= a < b <= BUCKETS:
                    raise ValueError(f"range [{a}, {b}) is not within 0..{BUCKETS}")
                owned += b - a
        if owned != BUCKETS:
            raise ValueError(f"the ranges cover {owned} buckets, not {BUCKETS}")
        return v


class _Capture(_Strict):
    rate: float
    redact: list[str]
    hash: list[str]
    max_rows: int


class _Fault(_Strict):
    model: str
    version: str
    kind: str
    value: float
    start_at: float
    end_at: float | None  # None: no end

    @pydantic.field_validator("kind")
    @classmethod
    def _known(cls, v: str) -> str:
        if v not in FAULT_KINDS:
            raise ValueError(f"fault kind {v!r} is not one of {', '.join(FAULT_KINDS)}")
        return v


class Payload(_Strict):
    """A live state as a ``backout_routes`` notification carries it."""

    v: int
    generation: int
    store_id: str | None
    tables: list[_Table]
    quarantined: list[tuple[str, str, str]]  # (model, version, reason)
    known_good: dict[str, list[str]]
    capture: dict[str, _Capture]
    faults: list[_Fault]


def encode(state: LiveState) -> str:
    """The notification payload carrying ``state`` (compact JSON)."""
    tables = [
        {"model": t.model, "generation": t.generation,
         "ranges": {v: [list(r) for r in rs] for v, rs in t.ranges.items() if rs},
         "shadow": [t.shadow.version, t.shadow.basis_points] if t.shadow else None,
         "pins": dict(t.pins)}
        for t in state.tables.values()
    ]  # fmt: skip
    doc = {
        "v": PAYLOAD_VERSION,
        "generation": state.generation,
        "store_id": state.store_id,
        "tables": tables,
        "quarantined": [[m, v, why] for (m, v), why in state.quarantined.items()],
        "known_good": state.known_good,
        "capture": {m: {"rate": c.rate, "redact": sorted(c.redact), "hash": sorted(c.hash),
                        "max_rows": c.max_rows} for m, c in state.capture.items()},
        "faults": [{"model": m, "version": v, "kind": f.kind, "value": f.value,
                    "start_at": f.start_at,
                    "end_at": f.end_at if math.isfinite(f.end_at) else None}
                   for (m, v), f in state.faults.items()],
    }  # fmt: skip
    return orjson.dumps(doc).decode()


def decode(payload: str) -> LiveState:
    """The live state a notification carries; raises ``ValueError`` naming what is wrong
    with a payload that is not one (a replica then reads the store instead)."""
    try:
        p = Payload.model_validate_json(payload)
    except pydantic.ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(x) for x in first["loc"]) or "payload"
        raise ValueError(f"{where}: {first['msg']}") from None
    if p.v != PAYLOAD_VERSION:
        raise ValueError(f"payload format {p.v}, this gateway reads {PAYLOAD_VERSION}")
    tables = {
        t.model: RouteTable(
            t.model, t.generation, {v: tuple(rs) for v, rs in t.ranges.items()},
            Shadow(*t.shadow) if t.shadow else None, dict(t.pins),
        )
        for t in p.tables
    }  # fmt: skip
    return LiveState(
        p.generation,
        tables,
        {(m, v): why for m, v, why in p.quarantined},
        {m: list(vs) for m, vs in p.known_good.items()},
        {m: CaptureRule(c.rate, frozenset(c.redact), frozenset(c.hash), c.max_rows)
         for m, c in p.capture.items()},
        {(f.model, f.version): Fault(f.kind, f.value, f.start_at,
                                     math.inf if f.end_at is None else f.end_at)
         for f in p.faults},
        p.store_id,
    )  # fmt: skip


class _Warm(_Strict):
    warm: list[tuple[str, str]]


def decode_warm(payload: str) -> list[tuple[str, str]] | None:
    """The releases a warm-up notice names, or None for a payload that is not one."""
    if not payload.startswith('{"warm":'):
        return None
    try:
        return _Warm.model_validate_json(payload).warm
    except pydantic.ValidationError:
        return None


def announce_warm(store: Store, releases: Iterable[tuple[str, str]]) -> None:
    """Tell the gateway replicas (PostgreSQL) to load ``releases`` now, ahead of the route
    change that will move traffic to them, so that change does not wait on their loads.

    A hint only: a replica that misses it loads the release when the route change comes.
    """
    wanted = sorted(set(releases))
    if store.is_sqlite or not wanted:
        return
    payload = orjson.dumps({"warm": wanted}).decode()
    if len(payload.encode()) > NOTIFY_PAYLOAD_LIMIT:
        return
    with contextlib.suppress(StoreUnavailable), store.read() as conn:  # delivered on commit
        conn.execute(sa.text("SELECT pg_notify(:c, :p)"), {"c": ROUTES_CHANNEL, "p": payload})


def _payload(conn: Connection, generation: int) -> str | None:
    state = read_live_state(conn)
    return encode(state) if state.generation == generation else None


set_routes_payload(_payload)
