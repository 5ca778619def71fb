"""``backout consumers add|list|remove``: the registered callers of a model.

For the owners of the services that call a model: each consumer's contract says which
fields it sends and reads, so that the compatibility gate can check a release against it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from backout.cli.output import JsonOpt, out, print_json, settings

consumers_app = typer.Typer(
    help="Register the consumers of a model: what they send and read.", no_args_is_help=True
)


@consumers_app.command("add")
def consumers_add(
    ctx: typer.Context,
    file: Annotated[
        Path, typer.Argument(help="Consumer contract (YAML): name, model, sends, reads.")
    ],
    json: JsonOpt = False,
) -> None:
    """Register (or update) a consumer from its contract file."""
    from backout.proof.consumers import load_consumer_file, register_consumer

    s = settings(ctx)
    consumer = load_consumer_file(file)  # checked here, with its lines, in either mode
    if (remote := s.remote()) is not None:
        text = file.read_text(encoding="utf-8")
        doc = remote.post(f"/models/{consumer.model}/consumers", {"contract": text})
    else:
        created = register_consumer(s.store(), consumer, actor=s.actor)
        doc = {"created": created, **consumer.to_dict()}
    if json:
        print_json(doc)
    else:
        out.print(
            f"consumer {doc['name']} of {doc['model']} {'registered' if doc['created'] else 'updated'}"
        )


@consumers_app.command("list")
def consumers_list(
    ctx: typer.Context,
    model: Annotated[str, typer.Argument(help="Model name.")],
    json: JsonOpt = False,
) -> None:
    """List a model's consumers with the fields they send and read."""
    from backout.proof.consumers import list_consumers

    s = settings(ctx)
    if (remote := s.remote()) is not None:
        docs = remote.get(f"/models/{model}/consumers")
    else:
        docs = [c.to_dict() for c in list_consumers(s.store(), model)]
    if json:
        print_json(docs)
        return
    if not docs:
        out.print(f"{model} has no registered consumers: add one with `backout consumers add FILE`")
        return
    t = Table(box=None, header_style="bold")
    for col in ("consumer", "owner", "sends", "reads"):
        t.add_column(col)
    for c in docs:
        t.add_row(
            c["name"], c["owner"] or "-", ", ".join(c["sends"]) or "-", ", ".join(c["reads"]) or "-"
        )
    out.print(t)


@consumers_app.command("remove")
def consumers_remove(
    ctx: typer.Context,
    model: Annotated[str, typer.Argument(help="Model name.")],
    name: Annotated[str, typer.Argument(help="Consumer name.")],
) -> None:
    """Remove a registered consumer."""
    from backout.proof.consumers import remove_consumer

    s = settings(ctx)
    if (remote := s.remote()) is not None:
        remote.delete(f"/models/{model}/consumers/{name}")
    else:
        remove_consumer(s.store(), model, name, actor=s.actor)
    out.print(f"consumer {name} of {model} removed")
