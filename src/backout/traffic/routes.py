"""Route tables and the pure choice of a release for a request.

A route table splits a model's traffic over 10,000 buckets (basis points). A request with a
routing key (``x-backout-key``) is hashed into a bucket, so the same key keeps landing on the
same release. Each release owns a set of bucket ranges, and a new table is derived from the
old one by :func:`reassign`, which moves as few buckets as possible: a release whose weight
grows keeps every bucket it had and takes buckets only from releases whose weight shrinks.
So raising a release's weight only moves *new* keys onto it and never moves a key away from
it (the property Flagger and Argo lose when they recompute ranges from scratch).
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from backout.errors import InvalidTraffic

BUCKETS = 10_000  # one bucket per basis point

Range = tuple[int, int]  # [start, end) over 0..BUCKETS


@dataclass(frozen=True, slots=True)
class Shadow:
    """A release that gets a sampled copy of live requests, off the request path."""

    version: str
    basis_points: int  # share of requests mirrored, out of 10,000


@dataclass(frozen=True)
class RouteTable:
    """How one model's traffic is split. Immutable: a change is a new table."""

    model: str
    generation: int
    ranges: Mapping[str, tuple[Range, ...]]  # version -> bucket ranges it owns
    shadow: Shadow | None = None
    pins: Mapping[str, str] = field(default_factory=dict)  # routing key -> version
    _lookup: tuple[str, ...] = field(default=(), repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self._lookup:
            owner = [""] * BUCKETS
            for version, rs in self.ranges.items():
                for a, b in rs:
                    owner[a:b] = [version] * (b - a)
            object.__setattr__(self, "_lookup", tuple(owner))

    @property
    def weights(self) -> dict[str, int]:
        """Basis points per version, for versions with any traffic."""
        return {v: sum(b - a for a, b in rs) for v, rs in self.ranges.items() if rs}

    @property
    def versions(self) -> set[str]:
        """Every version this table can send a request to (weights, pins, shadow)."""
        vs = set(self.weights) | set(self.pins.values())
        if self.shadow:
            vs.add(self.shadow.version)
        return vs

    def owner(self, bucket: int) -> str:
        return self._lookup[bucket]

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "generation": self.generation,
            "ranges": {v: [list(r) for r in rs] for v, rs in self.ranges.items() if rs},
            "shadow": {"version": self.shadow.version, "basis_points": self.shadow.basis_points}
            if self.shadow
            else None,
            "pins": dict(self.pins),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> RouteTable:
        sh = d.get("shadow")
        return cls(
            model=d["model"],
            generation=int(d["generation"]),
            ranges={v: tuple((int(a), int(b)) for a, b in rs) for v, rs in d["ranges"].items()},
            shadow=Shadow(sh["version"], int(sh["basis_points"])) if sh else None,
            pins=dict(d.get("pins") or {}),
        )


def key_bucket(key: str) -> int:
    """The bucket a routing key hashes into: stable across processes and releases."""
    digest = hashlib.blake2b(key.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % BUCKETS


def choose(
    table: RouteTable,
    *,
    key: str | None = None,
    pinned: str | None = None,
    rng: random.Random | None = None,
) -> str:
    """The version that answers one request.

    An explicit pin (a version in the path or a header) wins; then a per-key pin from the
    table; then the key's bucket (sticky); with no key, a weighted random bucket.
    """
    if pinned is not None:
        return pinned
    if key is not None:
        pin = table.pins.get(key)
        if pin is not None:
            return pin
        return table._lookup[key_bucket(key)]
    r = rng.random() if rng is not None else random.random()
    return table._lookup[int(r * BUCKETS)]


def should_mirror(table: RouteTable, rng: random.Random | None = None) -> str | None:
    """The shadow version if this request is sampled for mirroring, else None."""
    sh = table.shadow
    if sh is None or sh.basis_points <= 0:
        return None
    r = rng.random() if rng is not None else random.random()
    return sh.version if r * BUCKETS < sh.basis_points else None


def percent_to_bp(percent: float) -> int:
    """Convert a percentage (up to two decimals) to basis points, exactly."""
    bp = round(percent * 100)
    if abs(bp - percent * 100) > 1e-6:
        raise InvalidTraffic(
            f"weight {percent}% has more than two decimals: basis points are the finest step"
        )
    return bp


def check_weights(weights: Mapping[str, int]) -> None:
    """Raise unless the weights are non-negative basis points summing to 10,000."""
    for v, w in weights.items():
        if w < 0 or w > BUCKETS:
            raise InvalidTraffic(f"weight of {v} is {w / 100:g}%: each weight must be 0 to 100%")
    total = sum(weights.values())
    if total != BUCKETS:
        shown = ", ".join(f"{v}={w / 100:g}%" for v, w in weights.items())
        raise InvalidTraffic(f"weights must sum to 100% but {shown} sum to {total / 100:g}%")


def reassign(
    old: Mapping[str, Sequence[Range]], weights: Mapping[str, int]
) -> dict[str, tuple[Range, ...]]:
    """New bucket ranges for ``weights`` that move as few buckets as possible from ``old``.

    A release that shrinks gives up buckets from the end of its ranges; a release that grows
    keeps all of its buckets and takes freed ones (lowest first). Releases that are not in
    ``weights`` give up everything. With no old table, releases are laid out in the order
    given, so a two-release split puts the first on the low buckets.
    """
    check_weights(weights)
    owned: dict[str, list[int]] = {}
    free: list[int] = []
    claimed = set()
    for version, rs in old.items():
        buckets = [b for a, z in rs for b in range(a, z)]
        claimed.update(buckets)
        keep = weights.get(version, 0)
        owned[version] = buckets[:keep]
        free.extend(buckets[keep:])
    free.extend(b for b in range(BUCKETS) if b not in claimed)
    free.sort()
    fi = 0
    for version, w in weights.items():
        have = owned.setdefault(version, [])
        need = w - len(have)
        if need > 0:
            have.extend(free[fi : fi + need])
            fi += need
    return {v: _to_ranges(sorted(bs)) for v, bs in owned.items() if bs}


def _to_ranges(buckets: Sequence[int]) -> tuple[Range, ...]:
    out: list[Range] = []
    for b in buckets:
        if out and out[-1][1] == b:
            out[-1] = (out[-1][0], b + 1)
        else:
            out.append((b, b + 1))
    return tuple(out)
