"""Command line for trusted signing keys: generate, add, list, remove.

Mounted on the ``backout`` app by :mod:`backout.cli.main` as ``backout keys``. An admin adds
the public keys whose signatures count (``backout release register --sign KEY`` signs with
the private half); a policy with ``signing: {required: true}`` then lets only releases
signed by one of them take traffic.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated
from urllib.parse import quote

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
    from backout.registry.signing import Keyring, load_public_key, public_hex

    s = settings(ctx)
    pub = load_public_key(public_key)  # read and checked here, in either mode
    if (remote := s.remote()) is not None:
        doc = remote.post("/keys", {"name": name, "public_key": public_hex(pub)})
    else:
        doc = Keyring(s.store()).add(name, pub, actor=s.actor).to_dict()
    if json:
        print_json(doc)
    else:
        out.print(f"trusted key {doc['name']} (id {doc['id']})")


@keys_app.command("list")
def keys_list(
    ctx: typer.Context,
    removed: Annotated[bool, typer.Option("--removed", help="Include removed keys.")] = False,
    json: JsonOpt = False,
) -> None:
    """The trusted keys."""
    from backout.registry.signing import Keyring

    s = settings(ctx)
    if (remote := s.remote()) is not None:
        docs = remote.get("/keys", removed="true" if removed else None)
    else:
        docs = [k.to_dict() for k in Keyring(s.store()).list(include_removed=removed)]
    if json:
        print_json(docs)
        return
    if not docs:
        out.print("no trusted keys: add one with `backout keys add NAME FILE.pub`")
        return
    t = Table(box=None, header_style="bold")
    for col in ("name", "id", "added", "by", "status"):
        t.add_column(col)
    for k in docs:
        removed_at = k["removed_at"]
        status = "trusted" if removed_at is None else f"removed {_minute(removed_at)}"
        t.add_row(k["name"], k["id"], _minute(k["added_at"]), k["added_by"], status)
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
    if (remote := s.remote()) is not None:
        doc = remote.delete(f"/keys/{quote(name, safe='')}", reason=reason or None)
    else:
        doc = Keyring(s.store()).remove(name, actor=s.actor, reason=reason).to_dict()
    out.print(f"key {doc['name']} (id {doc['id']}) is no longer trusted")


def _minute(iso: str) -> str:
    """An ISO time as ``2026-12-01 12:55``."""
    from datetime import datetime

    return f"{datetime.fromisoformat(iso):%Y-%m-%d %H:%M}"
