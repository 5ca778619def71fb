"""Capture: sampling live requests and their answers into the store's capture log.

For the gateway: each worker keeps the requests its model's capture rule samples (with the
rule's fields redacted or hashed) in a :class:`CaptureBuffer`, writes them with
:func:`write_captures` at each telemetry flush, bounded per model, and attaches ground truth
sent to ``/backout/feedback`` with :func:`add_labels`. Replay reads the log back
(:mod:`backout.proof.replay`).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson
import sqlalchemy as sa

from backout.runtimes.tensors import encode_tensors
from backout.store import Store, schema
from backout.traffic.deployments import CaptureRule

C = schema.captures
REDACTED = "[redacted]"
DEFAULT_CAPTURE = CaptureRule()  # for a model whose policy says nothing about capture


def scrub(instances: Any, rule: CaptureRule) -> Any:
    """Instances with the rule's fields redacted or replaced by a short SHA-256."""
    if not (rule.redact or rule.hash) or not isinstance(instances, list):
        return instances
    out = []
    for row in instances:
        if isinstance(row, dict):
            row = dict(row)
            for k in rule.redact & row.keys():
                row[k] = REDACTED
            for k in rule.hash & row.keys():
                row[k] = "sha256:" + hashlib.sha256(orjson.dumps(row[k])).hexdigest()[:16]
        out.append(row)
    return out


def captured_request(
    body: dict[str, Any], inputs: Mapping[str, np.ndarray], *, oip: bool, rule: CaptureRule
) -> dict[str, Any]:
    """What the capture log keeps of one request: its tensors, or its JSON body scrubbed."""
    if oip:
        return {"inputs": encode_tensors(inputs)}
    # The rule's fields are scrubbed wherever a caller put them: top level or per instance.
    request: dict[str, Any] = scrub([{k: v for k, v in body.items() if k != "instances"}], rule)[0]
    if "instances" in body:
        request["instances"] = scrub(body["instances"], rule)
    return request


@dataclass(slots=True)
class CaptureBuffer:
    """Captured rows a gateway worker holds until its next telemetry flush."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    limit: int = 10_000  # a worker never holds more than this between flushes

    def add(self, model: str, version: str, request_id: str, protocol: str, latency_s: float,
            request: Any, response: Any, labels: Any = None) -> None:  # fmt: skip
        if len(self.rows) >= self.limit:
            return
        self.rows.append({
            "model": model, "version": version, "at": time.time(), "request_id": request_id,
            "protocol": protocol, "latency_ms": latency_s * 1000,
            "request": orjson.dumps(request, option=orjson.OPT_SERIALIZE_NUMPY).decode(),
            "response": orjson.dumps(response, option=orjson.OPT_SERIALIZE_NUMPY).decode(),
            "labels": None if labels is None else orjson.dumps(labels).decode(),
        })  # fmt: skip

    def drain(self) -> list[dict[str, Any]]:
        rows, self.rows = self.rows, []
        return rows


def write_captures(
    store: Store, rows: Sequence[dict[str, Any]], max_rows: Mapping[str, int]
) -> int:
    """Append captured rows and trim each model's log to its bound."""
    if not rows:
        return 0
    with store.write() as conn:
        conn.execute(C.insert(), list(rows))
        for model in {r["model"] for r in rows}:
            bound = max_rows.get(model, CaptureRule().max_rows)
            cutoff = conn.execute(
                sa.select(C.c.id)
                .where(C.c.model == model)
                .order_by(C.c.id.desc())
                .offset(bound)
                .limit(1)
            ).scalar()
            if cutoff is not None:
                conn.execute(C.delete().where(C.c.model == model, C.c.id <= cutoff))
    return len(rows)


def add_labels(store: Store, request_id: str, labels: Any) -> bool:
    """Attach ground truth to a captured request; False when it was not captured."""
    with store.write() as conn:
        res = conn.execute(
            C.update()
            .where(C.c.request_id == request_id)
            .values(labels=orjson.dumps(labels).decode())
        )
        return bool(res.rowcount)
