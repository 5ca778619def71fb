"""``backout init``: the workspace, that is the store and the artifact folder.

For the first command a person types: it creates (or migrates) the store and creates the
artifact folder the global options point at, both owner-only (or, for ``s3://`` artifacts,
checks the bucket answers and creates it when there is none, before the store). It is the one command that
creates a store; every other command opens an existing one.
"""

from __future__ import annotations

import typer

from backout.cli.output import JsonOpt, out, print_json, settings


def init(ctx: typer.Context, json: JsonOpt = False) -> None:
    """Create (or migrate) the store and the artifact folder."""
    from backout.store import redact_url

    s = settings(ctx)
    store = s.store(create=True)
    info: dict[str, object] = {"store": redact_url(store.url), "artifacts": s.artifacts_location()}
    note = ""
    if s.artifacts_remote():
        info["endpoint"] = s.endpoint()
        info["cache"] = str(s.cache_root())
        info["bucket_created"] = s.bucket_created
        note = " (bucket created)" if info["bucket_created"] else ""
    if json:
        print_json(info)
    else:
        out.print(f"store      {info['store']}\nartifacts  {info['artifacts']}{note}\nready.")
