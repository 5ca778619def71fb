"""``backout token create|list|revoke``: the control API's tokens.

For admins. Run against the store itself (whoever holds the store URL is its admin), it
also creates the first admin token; with ``--server`` it asks the API, which allows it only
to a token holding the ``tokens`` right. A new token is printed once and never again.
"""

from __future__ import annotations

import time
from typing import Annotated, Any

import typer
from rich.table import Table

from backout.cli.output import JsonOpt, out, print_json, settings
from backout.errors import ConfigError

token_app = typer.Typer(help="Create, list and revoke control-API tokens.", no_args_is_help=True)


def _expires(value: str | None) -> float | None:
    if value is None or value in ("never", "0"):
        return None
    from backout.control.policy import parse_duration

    try:
        seconds = parse_duration(value)
    except ValueError as exc:
        raise ConfigError(
            f"--expires {value!r} is not a duration such as 30d, 12h or never"
        ) from exc
    if seconds <= 0:
        raise ConfigError(f"--expires {value!r} must be positive (or 'never')")
    return seconds


def _when(t: float | None) -> str:
    return "never" if t is None else time.strftime("%Y-%m-%d %H:%M", time.gmtime(t))


@token_app.command("create")
def token_create(
    ctx: typer.Context,
    role: Annotated[
        list[str] | None,
        typer.Option(
            "--role", help="viewer | responder | releaser | approver | admin (repeatable)."
        ),
    ] = None,
    models: Annotated[
        str, typer.Option(help="Glob patterns of the models the roles reach, comma-separated.")
    ] = "*",
    expires: Annotated[
        str | None, typer.Option(help="Lifetime, e.g. 30d or 12h (default: never).")
    ] = None,
    name: Annotated[
        str, typer.Option(help="Who or what holds it (the actor in the audit log).")
    ] = "",
    json: JsonOpt = False,
) -> None:
    """Create a token and print it once (default role: admin, for the first token)."""
    from backout.api.roles import make_grant

    patterns = [p for p in models.split(",") if p.strip()]
    grants = [make_grant(r, patterns) for r in (role or ["admin"])]
    lifetime = _expires(expires)
    s = settings(ctx)
    if s.remote() is not None:
        doc: dict[str, Any] = s.remote().post("/tokens", {
            "name": name, "grants": [g.to_dict() for g in grants], "expires_in_s": lifetime})  # fmt: skip
        token = doc["token"]
    else:
        from backout.api import tokens

        issued = tokens.create(s.store(), grants, actor=s.actor, name=name, expires_in=lifetime)
        doc, token = issued.info.to_dict() | {"token": issued.token}, issued.token
    if json:
        print_json(doc, redacted=False)  # the one output whose point is the secret
        return
    out.print(token)
    out.print(
        f"token {doc['id']} ({doc['name']}): "
        + ", ".join(f"{g['role']}:{','.join(g['models'])}" for g in doc["grants"])
        + f"; expires {_when(doc['expires_at'])}. It is shown only now: keep it in a secret store."
    )


@token_app.command("list")
def token_list(ctx: typer.Context, json: JsonOpt = False) -> None:
    """List every token: id, name, roles, status (never a secret)."""
    s = settings(ctx)
    if s.remote() is not None:
        docs: list[dict[str, Any]] = s.remote().get("/tokens")
    else:
        from backout.api import tokens

        docs = [t.to_dict() for t in tokens.list_tokens(s.store())]
    if json:
        print_json(docs)
        return
    if not docs:
        out.print("no tokens: create the first with `backout token create --name NAME`")
        return
    t = Table(box=None, header_style="bold")
    for col in ("id", "name", "roles", "status", "expires", "created by"):
        t.add_column(col)
    for d in docs:
        roles = " ".join(f"{g['role']}:{','.join(g['models'])}" for g in d["grants"])
        t.add_row(d["id"], d["name"], roles, d["status"], _when(d["expires_at"]), d["created_by"])
    out.print(t)


@token_app.command("revoke")
def token_revoke(
    ctx: typer.Context,
    token_id: Annotated[
        str, typer.Argument(metavar="ID", help="The token's id (see `token list`).")
    ],
    json: JsonOpt = False,
) -> None:
    """Revoke a token at once."""
    s = settings(ctx)
    if s.remote() is not None:
        doc: dict[str, Any] = s.remote().delete(f"/tokens/{token_id}")
    else:
        from backout.api import tokens

        doc = tokens.revoke(s.store(), token_id, actor=s.actor).to_dict()
    if json:
        print_json(doc)
    else:
        out.print(f"token {doc['id']} ({doc['name']}) is revoked")
