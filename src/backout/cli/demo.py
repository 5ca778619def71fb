"""``backout demo``: the whole story, run on the embedded default.

For a newcomer who wants to see backout work. The story itself is told by
:mod:`backout.cli.demo_runner`, loaded only when the demo runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console


def demo(
    keep: Annotated[
        bool, typer.Option("--keep", help="Leave the gateway running afterwards.")
    ] = False,
    home: Annotated[Path, typer.Option(help="Workspace for the demo (wiped first).")] = Path(
        ".backout/demo"
    ),
) -> None:
    """Run the whole story on the embedded default: rollout, a caught regression, a refused
    breaking release, a drill, and an incident report."""
    from backout.cli.demo_runner import run_demo

    # The story styles its own words (and escapes those that come from the store).
    console = Console(highlight=False, soft_wrap=True)
    raise typer.Exit(run_demo(console, home, keep=keep))
