"""Judges: pure functions over telemetry batches that compare a release with a baseline.

Each judge is a sequential (anytime-valid) test with evidence a person can read; a gate
combines them with a family-wise error rate. Nothing here does I/O: the controller hands
the judges batches and records what they say.
"""

from backout.judges.core import Gate, GateResult, Judgement, Verdict, pair_by_time

__all__ = ["Gate", "GateResult", "Judgement", "Verdict", "pair_by_time"]
