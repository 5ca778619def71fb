"""The warm pool: the releases one gateway worker keeps loaded.

The live releases of every model and each model's newest known-good releases (up to a
configured count) stay loaded, so a switch to any of them — above all a rollback — never
waits on a load. Loading runs off the event loop; a release that fails to load is reported,
never half-loaded. A release whose policy requires a signature is loaded only with a valid
one (:mod:`backout.registry.signing`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from backout.errors import BackoutError
from backout.proof.contracts import Validator, compile_validator
from backout.registry import signing
from backout.registry.artifacts import BlobStore
from backout.registry.releases import Registry, Release
from backout.runtimes import Predictor, load_release

log = logging.getLogger("backout.pool")

Key = tuple[str, str]  # (model, version)


@dataclass(slots=True)
class Loaded:
    """A release ready to answer: its predictor and compiled contract validators."""

    release: Release
    predictor: Predictor
    input_validator: Validator | None
    output_validator: Validator | None
    memory_bytes: int
    load_seconds: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "release": self.release.ref,
            "runtime": self.release.manifest.runtime.kind.value,
            "memory_bytes": self.memory_bytes,
            "load_seconds": round(self.load_seconds, 4),
        }


class WarmPool:
    """Loaded releases keyed by (model, version)."""

    def __init__(
        self, registry: Registry, blobs: BlobStore, *, close_grace_s: float = 35.0
    ) -> None:
        self.registry = registry
        self.blobs = blobs
        self.close_grace_s = close_grace_s  # longer than any request may take
        self._closing: set[asyncio.Task[None]] = set()
        self.entries: dict[Key, Loaded] = {}
        self.failures: dict[Key, str] = {}

    def get(self, model: str, version: str) -> Loaded | None:
        return self.entries.get((model, version))

    def load_sync(self, key: Key) -> Loaded:
        """Load one release (blocking: verifies digests, deserialises the model)."""
        t0 = time.perf_counter()
        release = self.registry.get(f"{key[0]}@{key[1]}")
        # A model whose policy requires signed releases never serves one without a valid
        # signature, whatever route table asks for it (a table written by hand, say).
        signing.require_signed(self.registry.store, release.ref, why="not loaded")
        predictor = load_release(release.manifest, self.blobs)
        contract = release.manifest.contract
        return Loaded(
            release=release,
            predictor=predictor,
            input_validator=compile_validator(contract.input) if contract.input else None,
            output_validator=compile_validator(contract.output) if contract.output else None,
            memory_bytes=predictor.memory_bytes(),
            load_seconds=time.perf_counter() - t0,
        )

    async def ensure(self, wanted: Iterable[Key], *, keep: Iterable[Key] = ()) -> dict[Key, str]:
        """Load every release in ``wanted`` that is not loaded; drop what is in neither set.

        Returns the releases that failed to load, with the reason.
        """
        wanted = set(wanted)
        failed: dict[Key, str] = {}
        for key in sorted(wanted - self.entries.keys()):
            try:
                self.entries[key] = await asyncio.to_thread(self.load_sync, key)
                self.failures.pop(key, None)
                log.info("loaded %s@%s", *key)
            except BackoutError as exc:
                failed[key] = exc.message
                self.failures[key] = exc.message
                log.error("cannot load %s@%s: %s", key[0], key[1], exc.message)
        for key in list(self.entries.keys() - wanted - set(keep)):
            # Requests already on this release hold the predictor and must finish on it:
            # closing now would fail them (a runtime's close frees its model). Close it once
            # the longest request could have ended.
            entry = self.entries.pop(key)
            self._retire(entry)
        return failed

    def _retire(self, entry: Loaded) -> None:
        async def close_later() -> None:
            await asyncio.sleep(self.close_grace_s)
            await entry.predictor.aclose()

        task = asyncio.get_running_loop().create_task(close_later())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def aclose(self) -> None:
        for task in list(self._closing):
            task.cancel()
        for entry in self.entries.values():
            await entry.predictor.aclose()
        self.entries.clear()
