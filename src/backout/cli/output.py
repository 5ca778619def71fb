"""What every command of the command line shares: consoles, JSON, the global options.

For the command modules of :mod:`backout.cli`: :data:`out` and :data:`err` print to stdout
and stderr, :func:`print_json` prints the ``--json`` form of a command, :class:`Settings`
holds the global options (``--store``, ``--artifacts``, ``--s3-endpoint``, ``--artifact-cache``,
``--actor``, ``--debug``) and opens the store, artifact store, registry, deployments and
controller once per command, and :func:`settings`
finds it in the Typer context. :data:`JsonOpt` is the ``--json`` option every command that
prints data takes.
"""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import orjson
import typer
from rich.console import Console

__all__ = ["JsonOpt", "Settings", "err", "out", "print_json", "settings", "short"]

# No Rich markup by default: names, reasons and summaries come from people and the store,
# and "[/x]" in a reason must print as written, not fail. A command that styles its own words
# passes markup=True and escapes what it interpolates with rich.markup.escape.
out = Console(highlight=False, soft_wrap=True, markup=False)
err = Console(stderr=True, highlight=False, soft_wrap=True, markup=False)


# How long a command that queued notices (deploy, rollback, abort...) tries to deliver them
# before it exits; a receiver that answers 5xx is retried within it, one that is down or
# silent is left to `backout serve`'s outbox.
NOTICE_DELIVERY_S = 5.0


@dataclass
class Settings:
    """Global options, shared by every command through the Typer context."""

    store_url: str | None = None
    artifacts: str | Path | None = None
    actor: str = "unknown"
    debug: bool = False
    s3_endpoint: str | None = None
    artifact_cache: Path | None = None
    bucket_created: bool = False  # set by ``init`` when it created the s3:// bucket
    server: str | None = None  # --server / BACKOUT_SERVER: commands go to this control API
    _cache: dict[str, Any] = field(default_factory=dict)

    def home(self) -> Path:
        return Path(os.environ.get("BACKOUT_HOME", ".backout"))

    def artifacts_location(self) -> str:
        """The artifact store: a folder, or ``s3://bucket/prefix`` for object storage."""
        if self.artifacts is not None:
            return str(self.artifacts)
        return os.environ.get("BACKOUT_ARTIFACTS") or str(self.home() / "artifacts")

    def artifacts_remote(self) -> bool:
        from backout.registry.objectstore import is_remote

        return is_remote(self.artifacts_location())

    def artifacts_root(self) -> Path:
        """The artifact folder (for a local artifact store)."""
        return Path(self.artifacts_location())

    def endpoint(self) -> str | None:
        """The S3 API's URL for object storage (None: AWS itself)."""
        env = os.environ.get("BACKOUT_S3_ENDPOINT") or os.environ.get("AWS_ENDPOINT_URL")
        return self.s3_endpoint or env or None

    def cache_root(self) -> Path:
        """This host's cache of artifacts downloaded from object storage."""
        if self.artifact_cache is not None:
            return self.artifact_cache
        env = os.environ.get("BACKOUT_ARTIFACT_CACHE")
        return Path(env) if env else self.home() / "cache"

    def blobs(self) -> Any:
        """The artifact store the options point at (a folder or object storage)."""
        if "blobs" not in self._cache:
            from backout.registry.objectstore import cache_bytes_from_env, open_blobs

            location = self.artifacts_location()
            remote = self.artifacts_remote()
            self._cache["blobs"] = open_blobs(
                location,
                endpoint=self.endpoint() if remote else None,
                cache_dir=self.cache_root(),
                cache_bytes=cache_bytes_from_env() if remote else 0,
            )
        return self._cache["blobs"]

    def url(self) -> str:
        from backout.store import default_url

        return self.store_url or os.environ.get("BACKOUT_STORE") or default_url(self.home())

    def __post_init__(self) -> None:
        from backout.redaction import install_log_redaction

        install_log_redaction()  # every log line of a command passes the one redaction

    def store(self, *, create: bool = False) -> Any:
        """The store the options point at; only ``create=True`` (``init``) makes a new one.

        Every other command opens an existing store and fails with one line naming the
        path and ``backout init`` when there is none.
        """
        if "store" not in self._cache:
            from backout.store import open_store

            if self.server:
                # A command that has no remote mode yet must not quietly act on a local store
                # while the user believes it went to the server.
                from backout.errors import ConfigError

                raise ConfigError(
                    f"this command does not work through --server ({self.server}) yet: run it "
                    "where the store is (without --server / BACKOUT_SERVER)"
                )

            if create and self.artifacts_remote():
                # Before the store: an object store that cannot be used creates nothing.
                self.bucket_created = self.blobs().ensure()
            self._cache["store"] = open_store(self.url(), create=create)
            if create and not self.artifacts_remote():
                self.make_artifacts_root()
        return self._cache["store"]

    def make_artifacts_root(self) -> Path:
        """Create the artifact folder owner-only (0700), as a store's blobs may be private."""
        root = self.artifacts_root()
        missing = [p for p in (root, *root.parents) if not p.exists()]
        for folder in reversed(missing):
            folder.mkdir(mode=0o700, exist_ok=True)
        return root

    def remote(self) -> Any:
        """The control API client when ``--server`` is given (a :class:`~backout.cli.remote.Remote`), else None."""
        if not self.server:
            return None
        if "remote" not in self._cache:
            from backout.cli.remote import Remote

            self._cache["remote"] = Remote(self.server)
        return self._cache["remote"]

    def close(self) -> None:
        """Deliver the notices this command queued (best effort, a few seconds at most:
        what is left stays in the outbox for ``backout serve``), then release database
        connections (called when the command's context closes)."""
        ctl = self._cache.pop("controller", None)
        if ctl is not None:
            try:
                ctl.alerts.deliver_queued(within=NOTICE_DELIVERY_S)
            except Exception as exc:  # never fail a command that did its work over a notice
                logging.getLogger("backout.outbox").warning(
                    "the notices of this command stay queued for `backout serve` (%s: %s)",
                    type(exc).__name__, str(exc).splitlines()[0] if str(exc) else "",
                )  # fmt: skip
            ctl.close_routers()  # the connections to routers and metric systems it opened
        store = self._cache.pop("store", None)
        if store is not None:
            store.dispose()
        remote = self._cache.pop("remote", None)
        if remote is not None:
            remote.close()

    def deployments(self) -> Any:
        if "deployments" not in self._cache:
            from backout.traffic.deployments import Deployments

            self._cache["deployments"] = Deployments(self.store(), self.registry())
        return self._cache["deployments"]

    def controller(self) -> Any:
        if "controller" not in self._cache:
            from backout.control.controller import Controller

            self._cache["controller"] = Controller(self.store(), self.registry(), actor=self.actor)
        return self._cache["controller"]

    def registry(self) -> Any:
        if "registry" not in self._cache:
            from backout.registry.releases import Registry

            self._cache["registry"] = Registry(self.store(), self.blobs())
        return self._cache["registry"]


def settings(ctx: typer.Context) -> Settings:
    """The global options of the command running in ``ctx``."""
    obj = ctx.find_root().obj
    assert isinstance(obj, Settings)
    return obj


JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


def print_json(value: Any, *, redacted: bool = True) -> None:
    """Print ``value`` as indented JSON on stdout: the ``--json`` form of a command.

    Secrets (webhook URLs, passwords, tokens) are redacted; ``redacted=False`` is for the
    one output whose point is a secret the user asked for.
    """
    from backout.redaction import redact

    shown = redact(value) if redacted else value
    sys.stdout.write(orjson.dumps(shown, option=orjson.OPT_INDENT_2).decode() + "\n")


def short(text: str, n: int = 48) -> str:
    """``text`` on one line, cut to ``n`` characters with an ellipsis: for table cells."""
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 1] + "…"
