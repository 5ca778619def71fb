"""Command line for trusted signing keys: generate, add, list, remove.

Mounted on the ``backout`` app by :mod:`backout.cli.main` as ``backout keys``. An admin adds
the public keys whose signatures count (``backout release register --sign KEY`` signs with
the private half); a policy with ``signing: {required: true}`` then lets only releases
signed by one of them take traffic.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from backout.cli.output import JsonOpt, out, print_json, settings

keys_app = typer.Typer(
    help="Trusted Ed25519 keys that sign releases: generate, add, list, remove.",
    no_args_is_help=True,
)


@keys_app.command("generate")
def keys_generate(
    path: Annotated[Path, typer.Argument(help="Where to write the private key (PEM).")],
) -> None:
    """Write a new Ed25519 private key (owner-only) and its public half to PATH.pub."""
    from backout.registry.signing import generate_key, key_id, load_public_key

    pub = generate_key(path)
    out.print(
        f"private key {path} (keep it secret), public key {pub}  id {key_id(load_public_key(pub))}"
    )


@keys_app.command("add")
def keys_add(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="A name for the key, e.g. release-ci.")],
    public_key: Annotated[Path, typer.Argument(help="Its public key: PEM, ssh-ed25519 or hex.")],
    json: JsonOpt = False,
) -> None:
    """Trust a public key: releases it signs may take traffic where signatures are required."""
    from backout.registry.signing import Keyring, load_public_key

    s = settings(ctx)
    key = Keyring(s.store()).add(name, load_public_key(public_key), actor=s.actor)
    if json:
        print_json(key.to_dict())
    else:
        out.print(f"trusted key {key.name} (id {key.id})")


@keys_app.command("list")
def keys_list(
    ctx: typer.Context,
    removed: Annotated[bool, typer.Option("--removed", help="Include removed keys.")] = False,
    json: JsonOpt = False,
) -> None:
    """The trusted keys."""
    from backout.registry.signing import Keyring

    keys = Keyring(settings(ctx).store()).list(include_removed=removed)
    if json:
        print_json([k.to_dict() for k in keys])
        return
    if not keys:
        out.print("no trusted keys: add one with `backout keys add NAME FILE.pub`")
        return
    t = Table(box=None, header_style="bold")
    for col in ("name", "id", "added", "by", "status"):
        t.add_column(col)
    for k in keys:
        status = "trusted" if k.active else f"removed {k.removed_at:%Y-%m-%d %H:%M}"
        t.add_row(k.name, k.id, f"{k.added_at:%Y-%m-%d %H:%M}", k.added_by, status)
    out.print(t)


@keys_app.command("remove")
def keys_remove(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The key's name or id.")],
    reason: Annotated[str, typer.Option(help="Why, for the audit log.")] = "",
) -> None:
    """Stop trusting a key: signatures it made no longer count."""
    from backout.registry.signing import Keyring

    s = settings(ctx)
    key = Keyring(s.store()).remove(name, actor=s.actor, reason=reason)
    out.print(f"key {key.name} (id {key.id}) is no longer trusted")
