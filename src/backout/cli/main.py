"""The console script's entry point: every command mounted on the app, and :func:`main`.

For the ``backout`` console script and ``python -m backout``. The commands are mounted here,
once, in the order ``backout --help`` lists them (commands first, then the groups), so
that no command module is imported by :mod:`backout.cli.app`. :func:`main` runs the app and
reports each error once: one line and a non-zero exit code.
"""

from __future__ import annotations

import sys

import click

from backout.cli import (
    compat,
    consumers,
    demo,
    drill,
    keys,
    operations,
    policy,
    release,
    replay,
    report,
    retention,
    serve,
    status,
    traffic,
    workspace,
)
from backout.cli.app import app
from backout.cli.output import err
from backout.errors import BackoutError

__all__ = ["app", "main"]

app.command("init")(workspace.init)
app.command("traffic")(traffic.traffic)
app.command("deploy")(operations.deploy)
app.command("rollback")(operations.rollback)
app.command("abort")(operations.abort)
app.command("promote")(operations.promote)
app.command("pause")(operations.pause)
app.command("resume")(operations.resume)
app.command("unfreeze")(operations.unfreeze)
app.command("serve")(serve.serve)
app.command("status")(status.status)
app.command("history")(status.history)
app.command("compat")(compat.compat)
app.command("replay")(replay.replay)
app.command("drill")(drill.drill)
app.command("demo")(demo.demo)
app.command("report")(report.report_command)
app.add_typer(consumers.consumers_app, name="consumers")
app.add_typer(release.release_app, name="release")
app.add_typer(policy.policy_app, name="policy")
app.add_typer(keys.keys_app, name="keys")
app.add_typer(retention.retention_app, name="retention")


def main(argv: list[str] | None = None) -> None:
    """Console-script entry: run the app and turn errors into one line and an exit code."""
    args = sys.argv[1:] if argv is None else argv
    debug = "--debug" in args
    try:
        rc = app(args=args, prog_name="backout", standalone_mode=False)
    except BackoutError as exc:
        if debug:
            raise
        err.print(f"error: {exc.message}", markup=False)
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        err.print("aborted")
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    sys.exit(rc if isinstance(rc, int) else 0)
