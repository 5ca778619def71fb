"""The warm pool: the releases one gateway worker keeps loaded.

The live releases of every model and each model's newest known-good releases (up to a
configured count) stay loaded, so a switch to any of them — above all a rollback — never
waits on a load. Loading runs off the event loop; a release that fails to load is reported
once (one log line per fault, another when it loads), never half-loaded, and tried again
with a growing pause (1 s up to 30 s) so a route switch never waits on it again and again. A release whose policy requires a signature is loaded only with a valid
one (:mod:`backout.registry.signing`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from backout.errors import BackoutError
from backout.proof.contracts import TENSORS_KEY, Validator, compile_validator
from backout.registry import signing
from backout.registry.artifacts import BlobStore
from backout.registry.releases import Registry, Release
from backout.runtimes import Predictor, load_release
from backout.runtimes.tensors import NUMERIC_KINDS, numeric_kinds

log = logging.getLogger("backout.pool")

Key = tuple[str, str]  # (model, version)

RETRY_FIRST_S = 1.0  # pause before a release that failed to load is tried again, doubling
RETRY_MAX_S = 30.0
_NUMERIC_JSON = frozenset({"number", "integer", "boolean"})


def input_kinds(schema: Mapping[str, Any] | None) -> dict[str, str]:
    """Which inputs of a release's contract take only numbers: input name (``"*"`` for the
    one input of a positional model) → the numpy kinds they accept.

    From the contract's tensor list when it has one, else from its instance schema: an
    array of numbers is a numeric positional input, an object's numeric fields are numeric
    inputs of those names. The request path refuses a tensor of strings for them (422).
    """
    if not schema:
        return {}
    tensors = schema.get(TENSORS_KEY)
    if isinstance(tensors, list) and tensors:
        kinds = {
            t["name"]: k
            for t in tensors
            if isinstance(t, Mapping) and isinstance(t.get("name"), str)
            if (k := numeric_kinds(t.get("datatype"))) is not None
        }
        if len(tensors) == 1 and kinds:
            kinds["*"] = NUMERIC_KINDS
        return kinds
    if _numeric_leaf(schema):
        return {"*": NUMERIC_KINDS}
    props = schema.get("properties")
    if schema.get("type") == "object" and isinstance(props, Mapping):
        return {str(k): NUMERIC_KINDS for k, v in props.items() if _numeric_leaf(v)}
    return {}


def _numeric_leaf(schema: Any) -> bool:
    """Whether ``schema`` is a number (or an array of arrays ... of numbers)."""
    while isinstance(schema, Mapping) and schema.get("type") == "array":
        schema = schema.get("items")
    return isinstance(schema, Mapping) and schema.get("type") in _NUMERIC_JSON


@dataclass(slots=True)
class Loaded:
    """A release ready to answer: its predictor and compiled contract validators."""

    release: Release
    predictor: Predictor
    input_validator: Validator | None
    output_validator: Validator | None
    memory_bytes: int
    load_seconds: float
    input_kinds: dict[str, str] = field(default_factory=dict)  # see :func:`input_kinds`

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
        # A release that failed to load: (failed attempts, monotonic time of the next try).
        self._retry: dict[Key, tuple[int, float]] = {}
        # Loads under way, so a route change and a warm-up of the same release share one.
        self._loading: dict[Key, asyncio.Task[Loaded]] = {}

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
            input_kinds=input_kinds(contract.input),
        )

    async def _load(self, key: Key) -> Loaded:
        task = self._loading.get(key)
        if task is None:
            task = asyncio.get_running_loop().create_task(asyncio.to_thread(self.load_sync, key))
            self._loading[key] = task
            task.add_done_callback(lambda _t: self._loading.pop(key, None))
        return await asyncio.shield(task)  # a cancelled waiter leaves the load to the others

    async def preload(self, keys: Iterable[Key]) -> None:
        """Load releases that traffic is about to move to, so the route change that moves it
        finds them loaded; kept only while the caller passes them to :meth:`ensure` in
        ``keep``. A release that fails here is left to the route change to report."""
        for key in sorted(set(keys)):
            if key in self.entries or key in self._retry:
                continue
            try:
                loaded = await self._load(key)
            except BackoutError as exc:
                log.info("could not warm %s@%s ahead of its route change: %s", *key, exc.message)
                continue
            self.entries.setdefault(key, loaded)

    def retry_due(self, now: float | None = None) -> bool:
        """Whether a release that failed to load is due to be tried again."""
        now = time.monotonic() if now is None else now
        return any(at <= now for _, at in self._retry.values())

    async def ensure(self, wanted: Iterable[Key], *, keep: Iterable[Key] = ()) -> dict[Key, str]:
        """Load every release in ``wanted`` that is not loaded; drop what is in neither set.

        A release that failed before is tried again only once its pause is over, so a
        route switch does not wait on a load that just failed. Returns the releases that
        failed to load now, with the reason.
        """
        wanted = set(wanted)
        failed: dict[Key, str] = {}
        now = time.monotonic()
        for key in sorted(wanted - self.entries.keys()):
            attempts, at = self._retry.get(key, (0, now))
            if at > now or key in self.entries:  # (loaded by a warm-up meanwhile)
                continue
            try:
                self.entries[key] = await self._load(key)
            except BackoutError as exc:
                failed[key] = exc.message
                if self.failures.get(key) != exc.message:
                    # One line per fault (and per change of reason), not one per attempt.
                    log.error("cannot load %s@%s: %s (trying again every %g s at most)",
                              key[0], key[1], exc.message, RETRY_MAX_S)  # fmt: skip
                self.failures[key] = exc.message
                pause = min(RETRY_FIRST_S * 2**attempts, RETRY_MAX_S)
                self._retry[key] = (attempts + 1, time.monotonic() + pause)
                continue
            if key in self.failures:
                log.warning("loaded %s@%s after %d failed attempts", key[0], key[1], attempts)
            else:
                log.info("loaded %s@%s", *key)
            self.failures.pop(key, None)
            self._retry.pop(key, None)
        for key in list(self.failures):
            if key not in wanted:  # no longer routed to: its failure is no longer news
                self.failures.pop(key)
                self._retry.pop(key, None)
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
