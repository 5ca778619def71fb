"""Traffic arithmetic for operations: weights in percent per release. Pure functions."""

from __future__ import annotations

from collections.abc import Mapping


def split(stable: str, candidate: str, candidate_pct: float) -> dict[str, float]:
    """Weights with the candidate at ``candidate_pct`` and the rest on stable."""
    if candidate_pct >= 100:
        return {candidate: 100.0}
    return {stable: round(100.0 - candidate_pct, 2), candidate: round(candidate_pct, 2)}


def dominant(weights: Mapping[str, int | float]) -> str:
    """The release with the most traffic (the live one)."""
    return max(weights, key=lambda v: weights[v])


def clean(weights: Mapping[str, float]) -> dict[str, float]:
    """Weights rounded to hundredths of a percent, without releases at zero."""
    return {v: round(w, 2) for v, w in weights.items() if w > 0}


def fmt_weights(weights: Mapping[str, float]) -> str:
    """``1.0.0=90% 1.1.0=10%``."""
    return " ".join(f"{v}={w:g}%" for v, w in weights.items())


def next_rollback_step(steps: list[float], target_now: float) -> float:
    """The first rollback step above the target's current weight (100 when none is left)."""
    return next((s for s in steps if s > target_now), 100.0)
