"""The live state as a route-change notification carries it: a faithful round trip, and a
clear refusal of anything that is not one (a gateway then reads the store instead)."""

from __future__ import annotations

import math

import orjson
import pytest

from backout.traffic.faults import Fault
from backout.traffic.livestate import CaptureRule, LiveState, decode, encode
from backout.traffic.routes import RouteTable, Shadow


def _state() -> LiveState:
    table = RouteTable(
        "iris", 7, {"1.0.0": ((0, 9000),), "1.1.0": ((9000, 10_000),)},
        Shadow("1.2.0", 500), {"customer-1": "1.0.0"},
    )  # fmt: skip
    return LiveState(
        42,
        {"iris": table},
        {("iris", "0.9.0"): "bad outputs"},
        {"iris": ["1.0.0", "0.8.0"]},
        {"iris": CaptureRule(0.5, frozenset({"email"}), frozenset({"user"}), 10)},
        {
            ("iris", "1.1.0"): Fault("latency", 0.2, 1.0, 2.0),
            ("iris", "1.0.0"): Fault("crash", 1.0),
        },
        "store-id",
    )


def test_a_live_state_survives_the_payload_unchanged() -> None:
    state = _state()
    back = decode(encode(state))
    assert back == state
    assert math.isinf(back.faults[("iris", "1.0.0")].end_at)
    assert back.tables["iris"].owner(9500) == "1.1.0"


def _bad(**change: object) -> str:
    doc = orjson.loads(encode(_state()))
    doc.update(change)
    return orjson.dumps(doc).decode()


@pytest.mark.parametrize(
    ("payload", "named"),
    [
        ("{not json", "payload"),
        ('{"v": 1, "generation": 9}', "store_id"),
        (_bad(v=2), "format 2"),
        (_bad(generation="42"), "generation"),
        (_bad(extra=1), "extra"),
        (_bad(tables=[{"model": "iris", "generation": 1, "ranges": {"1.0.0": [[0, 5000]]}}]),
         "cover 5000 buckets"),
        (_bad(tables=[{"model": "iris", "generation": 1, "ranges": {"1.0.0": [[-1, 10_000]]}}]),
         "not within"),
        (_bad(faults=[{"model": "iris", "version": "1", "kind": "melt", "value": 1.0,
                       "start_at": 0.0, "end_at": None}]), "melt"),
    ],
)  # fmt: skip
def test_a_payload_that_is_not_a_live_state_is_refused_naming_what_is_wrong(
    payload: str, named: str
) -> None:
    with pytest.raises(ValueError, match=named):
        decode(payload)
