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
    consumer = load_consumer_file(file)
    created = register_consumer(s.store(), consumer, actor=s.actor)
    if json:
        print_json({"created": created, **consumer.to_dict()})
    else:
        out.print(
            f"consumer {consumer.name} of {consumer.model} {'registered' if created else 'updated'}"
        )


@consumers_app.command("list")
def consumers_list(
    ctx: typer.Context,
    model: Annotated[str, typer.Argument(help="Model name.")],
    json: JsonOpt = False,
) -> None:
    """List a model's consumers with the fields they send and read."""
    from backout.proof.consumers import list_consumers

    consumers = list_consumers(settings(ctx).store(), model)
    if json:
        print_json([c.to_dict() for c in consumers])
        return
    if not consumers:
        out.print(f"{model} has no registered consumers: add one with `backout consumers add FILE`")
        return
    t = Table(box=None, header_style="bold")
    for col in ("consumer", "owner", "sends", "reads"):
        t.add_column(col)
    for c in consumers:
        t.add_row(c.name, c.owner or "-", ", ".join(c.sends) or "-", ", ".join(c.reads) or "-")
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
    remove_consumer(s.store(), model, name, actor=s.actor)
    out.print(f"consumer {name} of {model} removed")
