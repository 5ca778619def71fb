"""The root ``backout`` Typer app and its callback, which reads the global options.

For :mod:`backout.cli.main`, which mounts every command on :data:`app`, and for tests that
build a smaller app around one command with :func:`global_options` as its callback. No
command lives here.
"""

from __future__ import annotations

import getpass
from pathlib import Path
from typing import Annotated

import typer

from backout.cli.output import Settings

__all__ = ["app", "global_options"]

app = typer.Typer(
    name="backout",
    help="The safe way back for machine-learning models: releases, traffic, rollouts, rollbacks.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def global_options(
    ctx: typer.Context,
    store: Annotated[
        str | None,
        typer.Option(
            "--store", envvar="BACKOUT_STORE", help="Store URL (default: SQLite under .backout/)."
        ),
    ] = None,
    artifacts: Annotated[
        str | None,
        typer.Option(
            "--artifacts",
            envvar="BACKOUT_ARTIFACTS",
            help="Artifact store: a folder, or s3://bucket/prefix (default: .backout/artifacts).",
        ),
    ] = None,
    s3_endpoint: Annotated[
        str | None,
        typer.Option(
            "--s3-endpoint",
            envvar="BACKOUT_S3_ENDPOINT",
            help="S3 API URL for s3:// artifacts (MinIO, Ceph; default: AWS_ENDPOINT_URL or AWS).",
        ),
    ] = None,
    artifact_cache: Annotated[
        Path | None,
        typer.Option(
            "--artifact-cache",
            envvar="BACKOUT_ARTIFACT_CACHE",
            help="This host's cache of s3:// artifacts (default: .backout/cache).",
        ),
    ] = None,
    actor: Annotated[
        str | None,
        typer.Option("--actor", envvar="BACKOUT_ACTOR", help="Who is acting, for the audit log."),
    ] = None,
    server: Annotated[
        str | None,
        typer.Option(
            "--server",
            envvar="BACKOUT_SERVER",
            help="Ask this control API (with the token in BACKOUT_TOKEN) instead of the store.",
        ),
    ] = None,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks on errors.")] = False,
) -> None:
    """backout keeps every model release, serves traffic between them, and rolls back safely."""
    ctx.obj = Settings(
        store_url=store, artifacts=artifacts, actor=actor or _whoami(), debug=debug,
        s3_endpoint=s3_endpoint, artifact_cache=artifact_cache, server=server or None,
    )  # fmt: skip
    ctx.call_on_close(ctx.obj.close)


def _whoami() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no user name in containers without a passwd entry
        return "unknown"
