"""How two JSON Schemas differ: does the newer one allow fewer values, more, or both?

The pure set arithmetic under the compatibility diff (:mod:`backout.proof.compat`), which decides
what each difference means for callers and consumers. Covers what contracts use: types
(integer inside number), enum and const, numeric bounds, string and array lengths,
patterns, array items (``items``, ``prefixItems``), nested objects, and MLflow column types
by MLflow's own conversion rules.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from backout.proof.contracts import MLFLOW_TYPE_KEY, mlflow_accepts


def show(value: Any) -> str:
    if value is None:
        return "—"
    return value if isinstance(value, str) else json.dumps(value, default=str)


@dataclass
class Change:
    """A raw difference of two schemas: did the set of allowed values shrink, grow or both."""

    way: str  # "narrowed" | "widened" | "changed"
    change: str
    old: Any
    new: Any
    what: str
    path: str = ""
    removed: tuple[Any, ...] = field(default=())  # enum values dropped, for relied-on checks


def schema_types(schema: Mapping[str, Any]) -> frozenset[str] | None:
    """The JSON types a schema allows, or None for any."""
    t = schema.get("type")
    if isinstance(t, str):
        return frozenset({t})
    if isinstance(t, list):
        return frozenset(t)
    values = _enum(schema)
    if values is not None:
        return frozenset(_json_type(json.loads(v)) for v in values)
    return None


def _json_type(v: Any) -> str:
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, int):
        return "integer"
    return {float: "number", str: "string", type(None): "null", list: "array", dict: "object"}.get(
        type(v), "object"
    )


def _covers(wide: frozenset[str] | None, narrow: frozenset[str] | None) -> bool:
    """True when every value of the ``narrow`` types is one of the ``wide`` types."""
    if wide is None:
        return True
    if narrow is None:
        return False
    return all(t in wide or (t == "integer" and "number" in wide) for t in narrow)


def _enum(schema: Mapping[str, Any]) -> list[str] | None:
    # Compared as canonical JSON so 1, 1.0 and True stay distinct as JSON Schema says.
    if "const" in schema:
        return [json.dumps(schema["const"], sort_keys=True)]
    if "enum" in schema:
        return [json.dumps(v, sort_keys=True) for v in schema["enum"]]
    return None


def classify(narrowed: bool, widened: bool) -> str | None:
    return (
        "changed"
        if narrowed and widened
        else "narrowed"
        if narrowed
        else "widened"
        if widened
        else None
    )


def _bound(schema: Mapping[str, Any], side: str) -> tuple[float, bool] | None:
    """The effective lower (``min``) or upper (``max``) bound and whether it is exclusive."""
    inclusive, exclusive = (
        ("minimum", "exclusiveMinimum") if side == "min" else ("maximum", "exclusiveMaximum")
    )
    candidates = []
    if isinstance(schema.get(inclusive), int | float):
        candidates.append((float(schema[inclusive]), False))
    if isinstance(schema.get(exclusive), int | float):
        candidates.append((float(schema[exclusive]), True))
    if not candidates:
        return None
    # The tightest bound wins: the largest minimum, the smallest maximum; exclusive breaks ties.
    key = (lambda b: (b[0], b[1])) if side == "min" else (lambda b: (-b[0], b[1]))
    return max(candidates, key=key)


def _tighter(new: tuple[float, bool] | None, old: tuple[float, bool] | None, side: str) -> bool:
    if new is None:
        return False
    if old is None:
        return True
    if new[0] != old[0]:
        return new[0] > old[0] if side == "min" else new[0] < old[0]
    return new[1] and not old[1]


def compare_schemas(old: Mapping[str, Any], new: Mapping[str, Any], path: str) -> Iterator[Change]:
    """Every way ``new`` allows fewer ("narrowed") or more ("widened") values than ``old``."""
    old_ml, new_ml = old.get(MLFLOW_TYPE_KEY), new.get(MLFLOW_TYPE_KEY)
    if old_ml and new_ml and old_ml != new_ml:
        # MLflow's own conversion rules decide; the JSON types and ranges derive from them.
        way = (
            classify(not mlflow_accepts(new_ml, old_ml), not mlflow_accepts(old_ml, new_ml))
            or "changed"
        )
        yield Change(way, "mlflow-type", old_ml, new_ml, f"MLflow type {old_ml} → {new_ml}", path)
        return
    old_t, new_t = schema_types(old), schema_types(new)
    type_way = classify(not _covers(new_t, old_t), not _covers(old_t, new_t))
    if type_way:
        yield Change(
            type_way,
            "type",
            _list(old_t),
            _list(new_t),
            f"type {_list(old_t)} → {_list(new_t)}",
            path,
        )
    yield from _compare_enum(old, new, path)
    for side, label in (("min", "minimum"), ("max", "maximum")):
        ob, nb = _bound(old, side), _bound(new, side)
        bound_way = classify(_tighter(nb, ob, side), _tighter(ob, nb, side))
        if bound_way:
            yield Change(
                bound_way,
                label,
                _num(ob),
                _num(nb),
                f"{label} {show(_num(ob))} → {show(_num(nb))}",
                path,
            )
    for low, high in (("minLength", "maxLength"), ("minItems", "maxItems")):
        yield from _compare_lengths(old, new, low, high, path)
    if old.get("pattern") != new.get("pattern"):
        way = classify("pattern" in new, "pattern" in old) or "changed"
        yield Change(
            way, "pattern", old.get("pattern"), new.get("pattern"), "pattern changed", path
        )
    if isinstance(old.get("items"), dict) and isinstance(new.get("items"), dict):
        yield from compare_schemas(old["items"], new["items"], f"{path}[*]")
    old_prefix, new_prefix = old.get("prefixItems", []), new.get("prefixItems", [])
    for i, (o, n) in enumerate(zip(old_prefix, new_prefix, strict=False)):
        yield from compare_schemas(o, n, f"{path}[{i}]")
    if isinstance(old.get("properties"), dict) and isinstance(new.get("properties"), dict):
        yield from _compare_nested(old, new, path)


def _compare_enum(old: Mapping[str, Any], new: Mapping[str, Any], path: str) -> Iterator[Change]:
    old_e, new_e = _enum(old), _enum(new)
    if old_e == new_e or (old_e is None and new_e is None):
        return
    shown_old = None if old_e is None else [json.loads(v) for v in old_e]
    shown_new = None if new_e is None else [json.loads(v) for v in new_e]
    if old_e is None:
        yield Change("narrowed", "enum", shown_old, shown_new, "now limited to fixed values", path)
        return
    if new_e is None:
        yield Change(
            "widened", "enum", shown_old, shown_new, "no longer limited to fixed values", path
        )
        return
    removed = tuple(json.loads(v) for v in old_e if v not in new_e)
    added = [json.loads(v) for v in new_e if v not in old_e]
    if removed:
        yield Change(
            "narrowed",
            "enum",
            shown_old,
            shown_new,
            f"values dropped: {show(list(removed))}",
            path,
            removed,
        )
    if added:
        yield Change("widened", "enum", shown_old, shown_new, f"values added: {show(added)}", path)


def _compare_lengths(
    old: Mapping[str, Any], new: Mapping[str, Any], low: str, high: str, path: str
) -> Iterator[Change]:
    o = (old.get(low, 0), old.get(high))
    n = (new.get(low, 0), new.get(high))
    if o == n:
        return
    if o[0] == o[1] and n[0] == n[1]:  # two fixed lengths: one finding, not two half ones
        yield Change("changed", "length", o[0], n[0], f"length {o[0]} → {n[0]}", path)
        return
    narrowed = n[0] > o[0] or (n[1] is not None and (o[1] is None or n[1] < o[1]))
    widened = n[0] < o[0] or (o[1] is not None and (n[1] is None or n[1] > o[1]))
    way = classify(narrowed, widened)
    if way:
        yield Change(way, "length", list(o), list(n), f"{low}/{high} {list(o)} → {list(n)}", path)


def _compare_nested(old: Mapping[str, Any], new: Mapping[str, Any], path: str) -> Iterator[Change]:
    """Fields inside a nested object: presence and requiredness, then each field's schema."""
    old_p, new_p = old["properties"], new["properties"]
    old_r, new_r = set(old.get("required", [])), set(new.get("required", []))
    for name in sorted(set(old_p) | set(new_p)):
        sub = f"{path}.{name}" if path else name
        if name in new_r and name not in old_r:
            yield Change("narrowed", "required", "optional", "required", "now required", sub)
        elif name in old_r and name not in new_r:
            yield Change("widened", "required", "required", "optional", "no longer required", sub)
        if name in old_p and name in new_p:
            yield from compare_schemas(old_p[name], new_p[name], sub)
        elif name in old_p and new.get("additionalProperties") is False:
            yield Change("narrowed", "removed", "allowed", "rejected", "no longer allowed", sub)


def _list(types: frozenset[str] | None) -> Any:
    if types is None:
        return "any"
    return sorted(types)[0] if len(types) == 1 else sorted(types)


def _num(bound: tuple[float, bool] | None) -> Any:
    if bound is None:
        return None
    value: Any = int(bound[0]) if bound[0].is_integer() else bound[0]
    return f"{value} (exclusive)" if bound[1] else value
