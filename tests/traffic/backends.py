"""Per-release backends for router tests: backout's gateway serving one release each.

Each backend is a real :class:`~backout.serving.app.Gateway` with ``release=(model,
version)`` (what ``backout serve --release`` runs), on its own 127.0.0.1 port in a thread,
loading a real scikit-learn model from a real store.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from backout.registry.artifacts import LocalBlobStore
from backout.registry.releases import Registry
from backout.serving.app import Gateway, GatewaySettings
from backout.store import Store, bump_generation, open_store, schema
from tests.loopback import serve
from tests.models import register_iris

BODY = {"instances": [[5.1, 3.5, 1.4, 0.2]]}


@dataclass
class Releases:
    """A store holding iris 1.0.0 and 1.1.0 and a backend URL for each."""

    store: Store
    registry: Registry
    urls: dict[tuple[str, str], str]

    def regress(self, version: str, *, errors: float) -> None:
        """Make ``version``'s backend fail a share of its requests (a fault row, as drills do)."""
        now = time.time()
        with self.store.write() as conn:
            conn.execute(
                schema.faults.insert().values(
                    model="iris", version=version, kind="errors", value=errors,
                    start_at=now, end_at=now + 3600,
                )
            )  # fmt: skip
            bump_generation(conn)

    def heal(self, version: str) -> None:
        """Remove the faults of ``version``'s backend."""
        with self.store.write() as conn:
            F = schema.faults
            conn.execute(F.delete().where(F.c.model == "iris", F.c.version == version))
            bump_generation(conn)


@contextlib.contextmanager
def iris_backends(
    tmp_path: Path, versions: tuple[str, ...] = ("1.0.0", "1.1.0")
) -> Iterator[Releases]:
    store = open_store(f"sqlite:///{tmp_path / 'store.db'}", create=True)
    blobs = LocalBlobStore(tmp_path / "artifacts")
    registry = Registry(store, blobs)
    for i, v in enumerate(versions):
        register_iris(registry, tmp_path / "models", v, c=1.0 + i)
    try:
        with contextlib.ExitStack() as stack:
            urls = {}
            for v in versions:
                gw = Gateway(store, blobs, GatewaySettings(release=("iris", v)))
                urls[("iris", v)] = stack.enter_context(serve(gw.app))
            yield Releases(store, registry, urls)
    finally:
        store.dispose()


def predict(client: httpx.Client, base: str, **headers: str) -> httpx.Response:
    return client.post(f"{base}/models/iris/predict", json=BODY, headers=headers)


class Load:
    """Light load through a router, in a thread: one request every ``interval`` seconds, for
    at most ``limit`` seconds. Records (send time, status, release) per request."""

    def __init__(self, base: str, *, interval: float = 0.025, limit: float = 120.0) -> None:
        self.base, self.interval, self.limit = base, interval, limit
        self.log: list[tuple[float, int, str]] = []
        self.failures: list[str] = []  # the bodies of answers other than 200, for messages
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="router-load", daemon=True)

    def __enter__(self) -> Load:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(30)

    def _run(self) -> None:
        end = time.monotonic() + self.limit
        with httpx.Client(timeout=10) as c:
            while not self.stop.is_set() and time.monotonic() < end:
                t = time.time()
                try:
                    r = predict(c, self.base)
                    self.log.append((t, r.status_code, r.headers.get("x-backout-release", "")))
                    if r.status_code != 200:
                        self.failures.append(r.text[:200])
                except httpx.HTTPError:
                    self.log.append((t, 0, ""))
                self.stop.wait(self.interval)

    def answered_since(self, t: float) -> set[str]:
        return {release for sent, _, release in list(self.log) if sent >= t}
