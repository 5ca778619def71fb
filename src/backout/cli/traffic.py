"""``backout traffic MODEL VERSION=PERCENT ...``: a model's traffic, set by hand.

For the person who moves traffic themselves: weights, a shadow and pins are parsed from
the command line, checked, and written as a new route table (pausing a running rollout or
rollback only with ``--force``).
"""

from __future__ import annotations

from typing import Annotated

import typer

from backout.cli.output import JsonOpt, out, print_json, settings
from backout.errors import ConfigError


def _split(item: str, sep: str, what: str, example: str) -> tuple[str, str]:
    left, found, right = item.partition(sep)
    if not found or not left or not right:
        raise ConfigError(f"{what} {item!r} must look like {example}")
    return left, right


def _percent(value: str, item: str) -> float:
    try:
        return float(value.rstrip("%"))
    except ValueError as exc:
        raise ConfigError(f"{item!r}: {value!r} is not a percentage") from exc


def traffic(
    ctx: typer.Context,
    model: Annotated[str, typer.Argument(help="Model name.")],
    weights: Annotated[
        list[str], typer.Argument(help="VERSION=PERCENT for each release; they sum to 100.")
    ],
    shadow: Annotated[
        str | None, typer.Option(help="VERSION:PERCENT mirrored to a shadow release (0 to stop).")
    ] = None,
    pin: Annotated[
        list[str] | None,
        typer.Option(
            help="KEY=VERSION: requests with this routing key always go to VERSION (repeatable)."
        ),
    ] = None,
    reason: Annotated[str, typer.Option(help="Why, for the audit log.")] = "",
    force: Annotated[
        bool, typer.Option("--force", help="Override a running rollout or rollback (pauses it).")
    ] = False,
    json: JsonOpt = False,
) -> None:
    """Set a model's traffic by hand: a new route table, validated and recorded."""
    from backout.traffic.deployments import describe

    s = settings(ctx)
    parsed = {}
    for item in weights:
        version, pct = _split(item, "=", "weight", "1.4.0=90")
        parsed[version] = _percent(pct, item)
    shadow_spec = None
    if shadow is not None:
        version, pct = _split(shadow, ":", "--shadow", "1.5.0:10")
        shadow_spec = (version, _percent(pct, shadow))
    pins = dict(_split(p, "=", "--pin", "acme=1.4.0") for p in pin) if pin else None
    if (remote := s.remote()) is not None:
        body = {"weights": parsed, "pins": pins, "reason": reason, "force": force,
                "shadow": {"version": shadow_spec[0], "percent": shadow_spec[1]} if shadow_spec else None}  # fmt: skip
        doc = remote.put(f"/models/{model}/traffic", body)
        routes = doc.pop("routes")
    else:
        table = s.controller().set_traffic(
            model, parsed, shadow=shadow_spec, pins=pins, actor=s.actor, reason=reason, force=force
        )
        doc = table.to_dict() | {"weights": {v: w / 100 for v, w in table.weights.items()}}
        routes = describe(table)
    if json:
        print_json(doc)
    else:
        out.print(f"{routes} (generation {doc['generation']})")
