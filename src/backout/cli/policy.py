"""``backout policy``: check a runbook and show it with every default filled in.

Mounted by :mod:`backout.cli.main` as ``app.add_typer(policy_app, name="policy")``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import orjson
import typer
from rich.console import Console
from rich.syntax import Syntax

from backout.control import capabilities
from backout.control.policy import load_policy, render_policy
from backout.errors import ConfigError, PolicyError, UnsupportedByRouter
from backout.traffic.router import ROUTER_CAPABILITIES

policy_app = typer.Typer(
    help="Check runbook policies and show their effective settings.", no_args_is_help=True
)


@policy_app.command("check")
def check(
    file: Annotated[Path, typer.Argument(help="The policy YAML file.", show_default=False)],
    json: Annotated[bool, typer.Option("--json", help="Print JSON instead of YAML.")] = False,
    router: Annotated[
        str | None,
        typer.Option(
            help="The router that will carry the model's traffic: "
            f"{', '.join(ROUTER_CAPABILITIES)} (default: the policy's router.kind).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Validate FILE and print the effective policy; exit 2 with one line per error."""
    if router is not None and router not in ROUTER_CAPABILITIES:
        raise ConfigError(
            f"--router {router!r} is not a router backout knows: use one of {', '.join(ROUTER_CAPABILITIES)}"
        )
    try:
        policy = load_policy(file)
        kind = router or policy.router.kind
        capabilities.check(policy, kind, ROUTER_CAPABILITIES[kind])
    except (PolicyError, UnsupportedByRouter) as exc:
        # Every error on its own line, each greppable and each with its file and line.
        err = Console(stderr=True, highlight=False, soft_wrap=True)
        for line in exc.message.splitlines():
            err.print(f"error: {line}", markup=False)
        raise typer.Exit(exc.exit_code) from None
    for note in capabilities.notes(kind):
        Console(stderr=True, highlight=False, soft_wrap=True).print(f"note: {note}", markup=False)
    if json:
        sys.stdout.write(orjson.dumps(policy.effective(), option=orjson.OPT_INDENT_2).decode())
        sys.stdout.write("\n")
        return
    out = Console(highlight=False, soft_wrap=True)
    out.print(
        Syntax(
            render_policy(policy).rstrip("\n"),
            "yaml",
            theme="ansi_dark",
            background_color="default",
        )
    )
