"""Shadow traffic: copies of live requests answered by a shadow release, off the request path.

For the gateway's request path (:mod:`backout.serving.pipeline`): when a route table mirrors
a share of requests to a shadow release, :class:`Mirror` answers each copy in a background
task once the live answer is known, compares the two and counts the difference in the
shadow release's telemetry batch. Callers never wait for, or see, a shadow answer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

import numpy as np

from backout.serving.pool import WarmPool
from backout.serving.telemetry import Recorder


class Mirror:
    """Sends copies of live requests to shadow releases of the warm pool and records the outcome."""

    def __init__(self, pool: WarmPool, recorder: Recorder, *, timeout_s: float) -> None:
        self.pool = pool
        self.recorder = recorder
        self.timeout_s = timeout_s
        self._background: set[asyncio.Task[None]] = set()

    def send(
        self, model: str, version: str, inputs: dict[str, np.ndarray], live: dict[str, np.ndarray]
    ) -> None:
        """Answer ``inputs`` with ``model@version`` in the background and compare with ``live``."""
        task = asyncio.create_task(self._shadow(model, version, inputs, live))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _shadow(
        self, model: str, version: str, inputs: dict[str, np.ndarray], live: dict[str, np.ndarray]
    ) -> None:
        """Answer a copy of a live request with the shadow release and record the difference."""
        entry = self.pool.entries.get((model, version))
        if entry is None:
            return
        n = _batch_size(live)
        try:
            out = await asyncio.wait_for(entry.predictor.infer(inputs), self.timeout_s)
            disagree, diff = _compare(live, out)
        except Exception:  # a failing shadow is recorded as disagreeing, never seen by callers
            disagree, diff = n, 0.0
        batch = self.recorder.batch(model, version)
        batch.shadow_requests += n
        batch.shadow_disagreements += disagree
        batch.shadow_abs_diff_sum += diff


def _batch_size(outputs: Mapping[str, np.ndarray]) -> int:
    """How many rows an answer has (1 for a scalar or an empty answer)."""
    for arr in outputs.values():
        return int(arr.shape[0]) if arr.ndim else 1
    return 1


def _compare(live: Mapping[str, np.ndarray], shadow: Mapping[str, np.ndarray]) -> tuple[int, float]:
    """Disagreements (labels, or scores beyond 1e-6) and the summed absolute difference."""
    for name in ("label", "prediction", *live.keys()):
        a, b = live.get(name), shadow.get(name)
        if a is None or b is None or a.shape != b.shape:
            continue
        if a.dtype.kind in "fiu" and b.dtype.kind in "fiu":
            d = (
                np.abs(a.astype(np.float64) - b.astype(np.float64))
                .reshape(a.shape[0], -1)
                .sum(axis=1)
            )
            return int((d > 1e-6).sum()), float(d.sum())
        return int((a != b).reshape(a.shape[0], -1).any(axis=1).sum()), 0.0
    return _batch_size(live), 0.0
