"""The console script's entry point: every command mounted on the app, and :func:`main`.

For the ``backout`` console script and ``python -m backout``. The commands are mounted here,
once, in the order ``backout --help`` lists them (commands first, then the groups), so
that no command module is imported by :mod:`backout.cli.app`. :func:`main` runs the app and
reports each error once: one line and a non-zero exit code.
"""

from __future__ import annotations

import re
import sys

import typer

from backout.cli import (
    api,
    compat,
    consumers,
    demo,
    drill,
    incident,
    keys,
    operations,
    policy,
    release,
    replay,
    report,
    retention,
    serve,
    status,
    tokens,
    traffic,
    workspace,
)
from backout.cli.app import app
from backout.cli.output import err
from backout.errors import BackoutError

__all__ = ["app", "main", "one_line", "usage_line"]

app.command("init")(workspace.init)
app.command("traffic")(traffic.traffic)
app.command("deploy")(operations.deploy)
app.command("rollback")(operations.rollback)
app.command("abort")(operations.abort)
app.command("promote")(operations.promote)
app.command("pause")(operations.pause)
app.command("resume")(operations.resume)
app.command("freeze")(operations.freeze)
app.command("unfreeze")(operations.unfreeze)
app.command("serve")(serve.serve)
app.command("api")(api.api)
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
app.add_typer(tokens.token_app, name="token")
app.add_typer(incident.incident_app, name="incident")


def main(argv: list[str] | None = None) -> None:
    """Console-script entry: run the app and turn errors into one line and an exit code.

    Typer raises its own bundled click's exceptions, all under :class:`typer.TyperException`:
    usage errors (an unknown option or command, a missing argument, a value out of range)
    exit 2 like Typer's, with one line naming the command's ``--help``; bare ``backout`` and
    a group without its subcommand print the help (Typer has already done so) and exit 2.
    Anything else unexpected is one line too, naming ``--debug`` for the traceback.
    """
    args = sys.argv[1:] if argv is None else argv
    debug = "--debug" in args
    try:
        rc = app(args=args, prog_name="backout", standalone_mode=False)
    except BackoutError as exc:
        if debug:
            raise
        err.print(f"error: {exc.message}", markup=False)
        sys.exit(exc.exit_code)
    except typer.Abort:
        if debug:
            raise
        err.print("aborted", markup=False)
        sys.exit(1)
    except typer.TyperException as exc:
        if debug:
            raise
        if type(exc).__name__ == "NoArgsIsHelpError":  # the help is printed already
            sys.exit(exc.exit_code)
        err.print(f"error: {usage_line(exc)}", markup=False)
        sys.exit(exc.exit_code)
    except Exception as exc:
        if debug:
            raise
        err.print(
            f"error: unexpected {type(exc).__name__}: {one_line(str(exc))} — this is a bug in "
            "backout: rerun with --debug for the traceback and report it",
            markup=False,
        )
        sys.exit(1)
    sys.exit(rc if isinstance(rc, int) else 0)


def usage_line(exc: typer.TyperException) -> str:
    """One line for a usage error: what was wrong, and the command whose ``--help`` to read."""
    message = one_line(exc.format_message()).rstrip(".")
    ctx = getattr(exc, "ctx", None)
    if re.fullmatch(r"No such option: -\d.*", message) and ctx is not None:
        # "release register m -1": a value that starts with "-" reads as an option.
        value = message.split(": ", 1)[1]
        return (
            f"{message}: to pass a value that starts with '-', put '--' before it "
            f"(`{ctx.command_path} ... -- {value}`)"
        )
    if ctx is None:
        return message
    return f"{message} (see `{ctx.command_path} --help`)"


def one_line(text: str) -> str:
    """``text`` with its line breaks and runs of spaces folded into single spaces."""
    return " ".join(text.split())
