"""A world for control-API tests: a store with two models, tokens for every role, an app.

``iris`` and ``fraud`` each have 1.0.0 live and known-good and 1.1.0 registered (not
known-good). :func:`make_template` builds it once; :func:`copy_store` gives a test its own
copy of the store file, so an action that succeeds changes nobody else's world. The app is
served on loopback by :class:`Switchboard`, which answers with whichever app is current.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import FastAPI

from backout.api import tokens
from backout.api.app import create_app
from backout.api.roles import Role, make_grant
from backout.control.controller import Controller
from backout.registry.artifacts import LocalBlobStore
from backout.registry.releases import Registry
from backout.store import open_store
from tests.control.world import FakeProber

MODELS = ("iris", "fraud")
SCOPES = ("iris*", "*")


@dataclass
class Template:
    """The world as built once: its store file, artifact folder and tokens."""

    folder: Path
    store_file: Path
    artifacts: Path
    tokens: dict[tuple[Role, str], tuple[str, str]] = field(default_factory=dict)
    real: bool = False  # real scikit-learn releases, proven by the real load-and-answer check


def make_template(folder: Path, *, real: bool = False) -> Template:
    """Build the world: releases, first deploys, and a token per role and scope.

    ``real``: the releases are real models (for the command line, which probes them for
    real); otherwise bytes, and the API's load-and-answer check is an in-memory one."""
    store_file = folder / "template.db"
    store = open_store(f"sqlite:///{store_file}", create=True)
    artifacts = folder / "artifacts"
    registry = Registry(store, LocalBlobStore(artifacts))
    ctl = Controller(store, registry, prober=None if real else FakeProber())
    for model in MODELS:
        for v in ("1.0.0", "1.1.0"):
            f = folder / f"{model}-{v}.bin"
            if real:  # the same files for both models: each is probed once, by its digest
                f = folder / f"model-{v}.bin"
                if not f.exists():
                    write_model(f, c=1.0 if v == "1.0.0" else 0.5)
            else:
                f.write_bytes(f"{model} weights {v}".encode())
            registry.register(model, v, [f], actor="setup")
        ctl.deploy(model, "1.0.0", actor="setup")
    if real:  # proven once here, so that every copy of the store finds the check cached
        ctl.prove("iris", ["1.1.0"], "setup", "take traffic")
    t = Template(folder, store_file, artifacts, real=real)
    for role in Role:
        for scope in SCOPES:
            name = f"{role.value}-{scope.rstrip('*') or 'all'}"
            issued = tokens.create(
                store, [make_grant(role.value, [scope])], actor="setup", name=name
            )
            t.tokens[(role, scope)] = (name, issued.token)
    ctl.close()
    store.dispose()
    return t


def write_model(path: Path, *, c: float) -> None:
    """A real fitted scikit-learn classifier, saved with joblib."""
    import joblib
    from sklearn.linear_model import LogisticRegression

    from tests.models import iris

    joblib.dump(LogisticRegression(C=c, max_iter=500).fit(*iris()), path)


def copy_store(t: Template, name: str) -> str:
    """A copy of the template's store, for one test: its URL."""
    dest = t.folder / f"{name}.db"
    shutil.copyfile(t.store_file, dest)
    return f"sqlite:///{dest}"


def app_for(t: Template, url: str, **kw: Any) -> FastAPI:
    return create_app(url, artifacts=t.artifacts, reports_dir=t.folder / "reports",
                      prober=None if t.real else FakeProber(), **kw)  # fmt: skip


def close_app(app: FastAPI) -> None:
    st = app.state.backout
    st.controller.close()
    st.store.dispose()


class Switchboard:
    """An ASGI app that hands every request to the current app (served once, on loopback)."""

    def __init__(self) -> None:
        self.app: FastAPI | None = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            return
        assert self.app is not None
        await self.app(scope, receive, send)

    @contextmanager
    def using(self, app: FastAPI) -> Iterator[FastAPI]:
        before, self.app = self.app, app
        try:
            yield app
        finally:
            self.app = before
