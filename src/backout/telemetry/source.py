"""The ``TelemetrySource`` seam: where the judges' per-release, per-second batches come from.

The controller reads telemetry only through this protocol, so gates and triggers run
unchanged whether the batches were flushed by backout's gateway into the store
(:class:`StoreTelemetry`) or computed from another metric system.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from backout.store import Store
from backout.telemetry.batches import Batch, read_batches


@runtime_checkable
class TelemetrySource(Protocol):
    """Per-release, per-second batches of one model's traffic. The contract:

    - ``batches(model, since, until)`` returns, for each release that served ``model``,
      its batches whose start lies in ``[since, until)`` (``until`` None: up to now), in
      time order, at most one per second per release (a source merges what several
      gateways reported for the same second).
    - A release that served nothing in the window is absent; a second with no data has no
      batch. A source never invents zeros: missing data must stay visible as missing, so
      that the policy's ``on_missing_data`` decides instead of a gate passing on silence.
    - It raises :class:`~backout.errors.StoreUnavailable` (or its own
      :class:`~backout.errors.BackoutError`) when it cannot be read; it never returns a
      partial window as if it were whole.
    """

    def batches(
        self, model: str, since: float, until: float | None = None
    ) -> dict[str, list[Batch]]: ...


class StoreTelemetry:
    """Batches that backout's gateway workers flushed into the store (about once a second)."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def batches(
        self, model: str, since: float, until: float | None = None
    ) -> dict[str, list[Batch]]:
        return read_batches(self.store, model, since=since, until=until)
