"""The judges' input: two arms' telemetry batches, paired by time, as per-batch arrays.

For the judges and for whoever hands them batches (the controller, the detection
benchmark): :func:`pair_by_time` aligns two arms' raw batch lists so ``candidate[i]`` and
``baseline[i]`` cover the same slot, :func:`check_paired` refuses lists that are not, and
:class:`Series` is one arm's batches as numpy columns, the form the judges compute on.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from backout.errors import ValidationError
from backout.judges.stats import F64
from backout.telemetry.batches import LAT_BUCKETS, Batch


@dataclass(frozen=True, slots=True)
class Series:
    """One arm's batches as per-batch numpy arrays (length T), the judges' working form."""

    requests: F64
    predictions: F64
    errors: F64
    nonfinite: F64
    contract: F64  # input + output contract violations
    log_sum: F64
    hist: NDArray[np.int64]  # (T, LAT_BUCKETS) latency counts
    outputs: Mapping[str, F64]

    def __len__(self) -> int:
        return int(self.requests.shape[0])

    def slice(self, lo: int, hi: int) -> Series:
        """Batches ``lo`` to ``hi`` (exclusive) of this series."""
        return Series(
            self.requests[lo:hi], self.predictions[lo:hi], self.errors[lo:hi],
            self.nonfinite[lo:hi], self.contract[lo:hi], self.log_sum[lo:hi],
            self.hist[lo:hi], {k: v[lo:hi] for k, v in self.outputs.items()},
        )  # fmt: skip

    @classmethod
    def from_batches(cls, batches: Sequence[Batch]) -> Series:
        t = len(batches)
        hist = np.zeros((t, LAT_BUCKETS), dtype=np.int64)
        labels: dict[str, F64] = {}
        for i, b in enumerate(batches):
            if b.latency:
                hist[i, list(b.latency)] = list(b.latency.values())
            for label, count in b.outputs.items():
                if label not in labels:
                    labels[label] = np.zeros(t)
                labels[label][i] = count

        def col(values: list[float]) -> F64:
            return np.asarray(values, dtype=np.float64)

        return cls(
            requests=col([b.requests for b in batches]),
            predictions=col([b.predictions for b in batches]),
            errors=col([b.error_count for b in batches]),
            nonfinite=col([b.errors.get("nonfinite", 0) for b in batches]),
            contract=col([b.errors.get("output_contract", 0) for b in batches]),
            log_sum=col([b.log_latency_sum for b in batches]),
            hist=hist,
            outputs=labels,
        )


def pair_by_time(
    candidate: Sequence[Batch], baseline: Sequence[Batch], slot_s: float = 1.0
) -> tuple[list[Batch], list[Batch]]:
    """Align two arms' batches on slots of ``slot_s`` seconds, merging batches that share a
    slot and filling missing slots with empty batches, so ``c[i]`` and ``b[i]`` are same-time."""

    def slots(batches: Sequence[Batch]) -> dict[int, Batch]:
        out: dict[int, Batch] = {}
        for b in batches:
            k = math.floor(b.start / slot_s)
            if k in out:
                out[k].merge(b)
            else:
                out[k] = Batch.from_dict(b.to_dict())  # a copy: never mutate the caller's
        return out

    cs, bs = slots(candidate), slots(baseline)
    if not cs and not bs:
        return [], []
    keys = range(min(cs.keys() | bs.keys()), max(cs.keys() | bs.keys()) + 1)
    model_c = candidate[0] if candidate else baseline[0]
    model_b = baseline[0] if baseline else candidate[0]

    def fill(m: dict[int, Batch], like: Batch) -> list[Batch]:
        return [
            m.get(k) or Batch(like.model, like.version, k * slot_s, (k + 1) * slot_s) for k in keys
        ]

    return fill(cs, model_c), fill(bs, model_b)


def check_paired(candidate: Sequence[Batch], baseline: Sequence[Batch]) -> None:
    """Refuse batch lists that cannot be same-time pairs (their lengths differ)."""
    if len(candidate) != len(baseline):
        raise ValidationError(
            f"Judges need same-time batch pairs, got {len(candidate)} candidate and "
            f"{len(baseline)} baseline batches; align them with judges.pair_by_time()."
        )
