"""The compatibility diff: can a target release take the live release's traffic?

Used by ``backout compat MODEL@A MODEL@B`` and by the controller as a gate before a
rollout's first step and before a rollback moves traffic. The question is asked one way,
``diff_contracts(live, target)``, because a rollback target is usually *older*: requests
shaped for the newer live release must still be accepted by it, and what it returns must
still satisfy the consumers that read the newer release's answers.

The rules, field by field:

- input (callers → target): the target must accept every instance live accepts. A field
  the target requires that live's callers need not send, a field the target rejects that
  they may send, a narrowed type, a tighter bound, fewer enum values, a different
  positional length or tensor are **breaking**; widened types and new optional fields are
  **compatible**.
- output (target → consumers): a field a consumer reads that the target no longer returns
  or no longer promises, a widened type, or a dropped enum value a consumer relies on is
  **breaking**; new fields and narrower answers are **compatible**; new enum values and
  output nobody is known to read are **info**.

Registered consumers only ever add names to a finding, never hide one, with one
exception: a field the target newly requires is not breaking when every registered
consumer already sends it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from backout.proof.consumers import ConsumerContract
from backout.proof.contracts import TENSORS_KEY
from backout.proof.schemadiff import Change, classify, compare_schemas, schema_types, show
from backout.registry.manifest import Contract


class Severity(StrEnum):
    """How much a finding matters to the traffic that would move."""

    BREAKING = "breaking"  # some request or consumer that works on live fails on target
    COMPATIBLE = "compatible"  # a change that cannot hurt live's traffic
    INFO = "info"  # worth knowing, not a failure (an ignored field, a new enum value)


class Direction(StrEnum):
    """Which side of the model the finding is about."""

    INPUT = "input"
    OUTPUT = "output"


@dataclass(frozen=True)
class Finding:
    """One difference between live and target, with whom it breaks and why in one line."""

    severity: Severity
    direction: Direction
    path: str
    change: str
    old: Any
    new: Any
    message: str
    consumers: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "severity": str(self.severity),
            "direction": str(self.direction),
            "path": self.path,
            "change": self.change,
            "old": self.old,
            "new": self.new,
            "consumers": list(self.consumers),
            "message": self.message,
        }


_ORDER = {Severity.BREAKING: 0, Severity.COMPATIBLE: 1, Severity.INFO: 2}
COLUMNS = ("severity", "direction", "field", "old → new", "breaks", "why")


@dataclass(frozen=True)
class CompatReport:
    """The verdict of a compatibility check and every finding behind it."""

    findings: tuple[Finding, ...]
    consumers: tuple[str, ...] = ()
    live: str = "live"
    target: str = "target"

    @property
    def compatible(self) -> bool:
        """True when no finding is breaking: the target can take live's traffic."""
        return not self.breaking

    @property
    def breaking(self) -> tuple[Finding, ...]:
        return tuple(f for f in self.findings if f.severity is Severity.BREAKING)

    @property
    def broken_consumers(self) -> tuple[str, ...]:
        """Registered consumers that at least one breaking finding names."""
        return tuple(sorted({c for f in self.breaking for c in f.consumers}))

    def to_dict(self) -> dict[str, Any]:
        return {
            "live": self.live,
            "target": self.target,
            "compatible": self.compatible,
            "consumers": list(self.consumers),
            "broken_consumers": list(self.broken_consumers),
            "findings": [f.to_dict() for f in self.findings],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CompatReport:
        """The report :meth:`to_dict` wrote (as the control API answers it)."""
        findings = tuple(
            Finding(
                Severity(f["severity"]),
                Direction(f["direction"]),
                f["path"],
                f["change"],
                f["old"],
                f["new"],
                f["message"],
                tuple(f["consumers"]),
            )
            for f in d["findings"]
        )
        return cls(findings, tuple(d["consumers"]), d["live"], d["target"])

    def summary(self) -> str:
        """One line: the verdict, the count of breaking findings and who breaks."""
        if self.compatible:
            return f"{self.target} can take {self.live}'s traffic: no breaking changes"
        who = f"; breaks {', '.join(self.broken_consumers)}" if self.broken_consumers else ""
        n = len(self.breaking)
        changes = f"{n} breaking change{'s' * (n != 1)}"
        return f"{self.target} cannot take {self.live}'s traffic: {changes}{who}"

    def rows(self) -> list[tuple[str, ...]]:
        """One row per finding under :data:`COLUMNS`, for a Rich table in the CLI."""
        return [
            (
                str(f.severity),
                str(f.direction),
                f.path,
                f"{show(f.old)} → {show(f.new)}",
                ", ".join(f.consumers),
                f.message,
            )
            for f in self.findings
        ]

    def render(self) -> str:
        """A plain-text table with the summary line, for terminals without Rich."""
        rows = [COLUMNS, *self.rows()]
        widths = [max(len(r[i]) for r in rows) for i in range(len(COLUMNS) - 1)]
        lines = [
            "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=False)) + "  " + r[-1]
            for r in rows
        ]
        return "\n".join([self.summary(), "", *[line.rstrip() for line in lines]])


# --------------------------------------------------------------------------- the diff


def diff_contracts(
    live: Contract,
    target: Contract,
    consumers: Sequence[ConsumerContract] = (),
    *,
    live_name: str = "live",
    target_name: str = "target",
) -> CompatReport:
    """Check whether ``target`` can take ``live``'s traffic, for its callers and consumers.

    ``live_name`` and ``target_name`` (e.g. ``iris@2.0.0``) only label the report.
    """
    diff = _Diff(consumers)
    diff.input(live.input, target.input)
    diff.output(live.output, target.output)
    findings = sorted(
        diff.findings, key=lambda f: (_ORDER[f.severity], f.direction, f.path, f.change)
    )
    return CompatReport(tuple(findings), tuple(c.name for c in consumers), live_name, target_name)


class _Diff:
    """Collects findings; knows which consumers send and read which top-level field."""

    def __init__(self, consumers: Sequence[ConsumerContract]) -> None:
        self.consumers = list(consumers)
        self.findings: list[Finding] = []

    def add(
        self,
        severity: Severity,
        direction: Direction,
        c: Change,
        message: str,
        who: Sequence[str] = (),
    ) -> None:
        self.findings.append(
            Finding(
                severity,
                direction,
                c.path or "(instance)",
                c.change,
                c.old,
                c.new,
                message,
                tuple(who),
            )
        )

    def senders(self, name: str) -> list[ConsumerContract]:
        return [c for c in self.consumers if name in c.sends]

    # ----------------------------------------------------------------- input

    def input(self, live: dict[str, Any] | None, target: dict[str, Any] | None) -> None:
        i = Direction.INPUT
        if target is None:
            if live is not None:
                self.add(
                    Severity.INFO,
                    i,
                    Change("", "contract", "schema", None, ""),
                    "target checks no input",
                )
            return
        if live is None and self.consumers:
            # No live contract: what the registered consumers send is all we know of callers.
            live = {
                "type": "object",
                "properties": {k: v for c in self.consumers for k, v in c.sends.items()},
                "required": sorted({k for c in self.consumers for k in c.sends}),
            }
        if live is None:
            note = "live has no input contract: cannot tell what its callers send"
            self.add(Severity.INFO, i, Change("", "contract", None, "schema", ""), note)
            return
        self.tensors(i, live.get(TENSORS_KEY), target.get(TENSORS_KEY))
        if _is_object(live) and _is_object(target):
            self.input_object(live, target)
            return
        for c in compare_schemas(live, target, ""):
            self.input_change(c, [x.name for x in self.consumers])

    def input_change(self, c: Change, who: Sequence[str]) -> None:
        if c.way == "widened":
            self.add(Severity.COMPATIBLE, Direction.INPUT, c, f"target accepts more: {c.what}")
        else:
            self.add(Severity.BREAKING, Direction.INPUT, c, f"target accepts less: {c.what}", who)

    def input_object(self, live: dict[str, Any], target: dict[str, Any]) -> None:
        lp, tp = live.get("properties", {}), target.get("properties", {})
        lr, tr = set(live.get("required", [])), set(target.get("required", []))
        extra = target.get("additionalProperties", True)
        sent = {k for c in self.consumers for k in c.sends}
        for name in sorted(set(lp) | set(tp) | sent):
            senders = self.senders(name)
            names = [c.name for c in senders]
            if name in tr and name not in lr:
                self.newly_required(name, name in lp)
            if name in tp:
                if name not in lp and name not in tr:
                    c = Change("", "added", None, "optional", "", name)
                    self.add(Severity.COMPATIBLE, Direction.INPUT, c, "new optional field")
                self.field(name, lp.get(name), tp[name], senders)
            elif name in lp or senders:
                if extra is False:
                    who = (
                        "live's callers must send it"
                        if name in lr
                        else "live's callers may send it"
                    )
                    c = Change("", "rejected", "accepted", "rejected", "", name)
                    msg = f"target rejects this field (no extra fields allowed); {who}"
                    self.add(Severity.BREAKING, Direction.INPUT, c, msg, names)
                elif isinstance(extra, dict):
                    self.field(name, lp.get(name), extra, senders)
                else:
                    c = Change("", "ignored", "used", "ignored", "", name)
                    self.add(Severity.INFO, Direction.INPUT, c, "target ignores this field", names)

    def newly_required(self, name: str, known: bool) -> None:
        c = Change("", "required", "optional" if known else "absent", "required", "", name)
        if not self.consumers:
            why = "live's callers need not send it" if known else "live's callers do not send it"
            self.add(Severity.BREAKING, Direction.INPUT, c, f"target requires this field; {why}")
            return
        missing = [x.name for x in self.consumers if name not in x.sends]
        if missing:
            msg = f"target requires this field; {len(missing)} consumer(s) do not send it"
            self.add(Severity.BREAKING, Direction.INPUT, c, msg, missing)
        else:
            msg = "target requires this field; every registered consumer sends it"
            self.add(Severity.INFO, Direction.INPUT, c, msg)

    def field(
        self,
        name: str,
        old: dict[str, Any] | None,
        new: dict[str, Any],
        senders: Sequence[ConsumerContract],
    ) -> None:
        """Compare one input field; name the senders whose own values the target refuses."""
        refusals = {s.name: _refusals(s.sends[name], new, name) for s in senders}
        refused = [who for who, found in refusals.items() if found]
        changes = list(compare_schemas(old, new, name)) if old is not None else []
        for c in changes:
            self.input_change(c, refused)
        if not any(c.way != "widened" for c in changes):
            # Live's contract is unchanged here, but what these consumers declare they send is not.
            for who in refused:
                for c in refusals[who]:
                    msg = f"target refuses what {who} sends: {c.what}"
                    self.add(Severity.BREAKING, Direction.INPUT, c, msg, [who])

    # ----------------------------------------------------------------- output

    def readers(self, name: str) -> list[ConsumerContract]:
        return [c for c in self.consumers if name in c.reads]

    def output(self, live: dict[str, Any] | None, target: dict[str, Any] | None) -> None:
        o = Direction.OUTPUT
        if live is None or target is None:
            if self.consumers and any(c.reads for c in self.consumers) and target is None:
                c = Change("", "contract", "schema" if live else None, None, "")
                self.add(
                    Severity.INFO, o, c, "target promises no output shape: reads cannot be checked"
                )
            return
        self.tensors(o, live.get(TENSORS_KEY), target.get(TENSORS_KEY))
        if _is_object(live) and _is_object(target):
            self.output_object(live, target)
            return
        for c in compare_schemas(live, target, ""):
            self.output_change(c, self.consumers, read=True)

    def output_object(self, live: dict[str, Any], target: dict[str, Any]) -> None:
        lp, tp = live.get("properties", {}), target.get("properties", {})
        lr, tr = set(live.get("required", [])), set(target.get("required", []))
        read = {k for c in self.consumers for k in c.reads}
        for name in sorted(set(lp) | set(tp) | read):
            readers = self.readers(name)
            names = [r.name for r in readers]
            if name not in tr:
                gone = name not in tp
                c = Change(
                    "",
                    "removed" if gone else "optional",
                    _presence(name, lp, lr),
                    _presence(name, tp, tr),
                    "",
                    name,
                )
                what = (
                    "target no longer returns this field"
                    if gone
                    else "target no longer promises this field"
                )
                if readers and (name in lr or gone):
                    self.add(
                        Severity.BREAKING, Direction.OUTPUT, c, f"{what}; consumers read it", names
                    )
                elif readers:
                    msg = "consumers read this field, which neither release promises"
                    self.add(Severity.INFO, Direction.OUTPUT, c, msg, names)
                elif name in lr and not self.consumers:
                    self.add(
                        Severity.BREAKING,
                        Direction.OUTPUT,
                        c,
                        f"{what}; live's callers may read it",
                    )
                elif name in lr or (gone and name in lp):
                    self.add(
                        Severity.INFO,
                        Direction.OUTPUT,
                        c,
                        f"{what}; no registered consumer reads it",
                    )
            elif name not in lp:
                c = Change("", "added", None, "returned", "", name)
                self.add(Severity.COMPATIBLE, Direction.OUTPUT, c, "new output field")
            if name in lp and name in tp:
                for c in compare_schemas(lp[name], tp[name], name):
                    self.output_change(c, readers, read=bool(readers) or not self.consumers)

    def output_change(self, c: Change, readers: Sequence[ConsumerContract], *, read: bool) -> None:
        o = Direction.OUTPUT
        names = [r.name for r in readers]
        top = c.path.split(".")[0].split("[")[0]
        if c.change == "enum" and c.removed:
            relying = [
                r.name
                for r in readers
                if (spec := r.reads.get(top)) is not None
                and spec.enum is not None
                and set(map(_key, spec.enum)) & set(map(_key, c.removed))
            ]
            if relying:
                self.add(
                    Severity.BREAKING, o, c, f"consumers rely on dropped values: {c.what}", relying
                )
            else:
                self.add(Severity.INFO, o, c, f"target never returns some values: {c.what}")
        elif c.way == "narrowed":
            self.add(Severity.COMPATIBLE, o, c, f"target returns less: {c.what}")
        elif c.change in ("enum", "minimum", "maximum", "length"):
            self.add(Severity.INFO, o, c, f"target may return values live never did: {c.what}")
        elif read:
            self.add(
                Severity.BREAKING, o, c, f"target returns more than readers expect: {c.what}", names
            )
        else:
            self.add(Severity.INFO, o, c, f"{c.what}; no registered consumer reads it")

    # ----------------------------------------------------------------- tensors

    def tensors(self, direction: Direction, live: Any, target: Any) -> None:
        """Open Inference Protocol tensors: names, datatypes and shapes must still fit."""
        if not isinstance(live, list) or not isinstance(target, list):
            return
        old = {t.get("name"): t for t in live if isinstance(t, dict)}
        new = {t.get("name"): t for t in target if isinstance(t, dict)}
        for name in sorted(set(old) | set(new), key=str):
            path = f"tensor {name}"
            if name not in old or name not in new:
                c = Change(
                    "",
                    "tensor",
                    "present" if name in old else None,
                    "present" if name in new else None,
                    "",
                    path,
                )
                side = (
                    "target needs a tensor live's callers do not send"
                    if name in new
                    else "target has no such tensor"
                )
                self.add(Severity.BREAKING, direction, c, side)
                continue
            o, n = old[name], new[name]
            if o.get("datatype") != n.get("datatype"):
                c = Change("changed", "datatype", o.get("datatype"), n.get("datatype"), "", path)
                self.add(Severity.BREAKING, direction, c, "tensor datatype changed")
            way = _shape_way(list(o.get("shape", [])), list(n.get("shape", [])))
            if way:
                c = Change(way, "shape", o.get("shape"), n.get("shape"), "", path)
                # Input: a shape that accepts more is fine. Output: one that may return more is not.
                ok = (way == "widened") if direction is Direction.INPUT else (way == "narrowed")
                severity = Severity.COMPATIBLE if ok else Severity.BREAKING
                self.add(severity, direction, c, f"tensor shape {way}")


def _shape_way(old: list[Any], new: list[Any]) -> str | None:
    if len(old) != len(new):
        return "changed"
    # -1 is a dynamic dimension: fixing it narrows, freeing it widens, changing it does both.
    pairs = list(zip(old, new, strict=True))
    narrowed = any(n != -1 and o != n for o, n in pairs)
    widened = any(o != -1 and o != n for o, n in pairs)
    return classify(narrowed, widened)


def _refusals(sent: Mapping[str, Any], new: Mapping[str, Any], path: str) -> list[Change]:
    """What ``new`` refuses of a consumer's declared field: its type always, and a bound,
    enum, length or pattern only when the consumer declared one (``number`` alone says
    nothing about the range it sends)."""
    return [
        c
        for c in compare_schemas(sent, new, path)
        if c.way != "widened" and (c.change in ("type", "mlflow-type") or c.old is not None)
    ]


def _is_object(schema: Mapping[str, Any]) -> bool:
    return schema_types(schema) == frozenset({"object"})


def _presence(name: str, props: Mapping[str, Any], required: set[str]) -> str | None:
    return "required" if name in required else "optional" if name in props else None


def _key(value: Any) -> str:
    return json.dumps(value, sort_keys=True)
