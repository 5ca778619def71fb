"""Judges: pure functions over telemetry batches that compare a release with a baseline.

Each judge is a sequential (anytime-valid) test with evidence a person can read; a gate
combines them with a family-wise error rate. Nothing here does I/O: the controller hands
the judges batches and records what they say.
"""

from backout.judges.base import AnyJudge, Common, Judge
from backout.judges.budget import LatencyBudgetConfig, LatencyBudgetJudge
from backout.judges.drift import DriftConfig, DriftJudge
from backout.judges.error_rate import ErrorRateConfig, ErrorRateJudge
from backout.judges.gate import Gate, GateResult, default_gate
from backout.judges.integrity import IntegrityConfig, IntegrityJudge
from backout.judges.latency import LatencyConfig, LatencyJudge
from backout.judges.series import pair_by_time
from backout.judges.tail import TailLatencyConfig, TailLatencyJudge
from backout.judges.verdict import Judgement, Verdict

__all__ = [
    "AnyJudge",
    "Common",
    "DriftConfig",
    "DriftJudge",
    "ErrorRateConfig",
    "ErrorRateJudge",
    "Gate",
    "GateResult",
    "IntegrityConfig",
    "IntegrityJudge",
    "Judge",
    "Judgement",
    "LatencyBudgetConfig",
    "LatencyBudgetJudge",
    "LatencyConfig",
    "LatencyJudge",
    "TailLatencyConfig",
    "TailLatencyJudge",
    "Verdict",
    "default_gate",
    "pair_by_time",
]
