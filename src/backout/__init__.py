"""backout: the safe way back for machine-learning models in production.

The names users import are re-exported here and resolved on first use, so that
``import backout`` (and every ``backout`` command) stays cheap: the gateway's and the
judges' heavier dependencies load only when they are used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# name -> module that defines it
_EXPORTS = {
    "BackoutError": "backout.errors",
    "Artifact": "backout.registry.manifest",
    "Contract": "backout.registry.manifest",
    "ReleaseManifest": "backout.registry.manifest",
    "Runtime": "backout.registry.manifest",
    "RuntimeKind": "backout.registry.manifest",
    "Store": "backout.store",
    "open_store": "backout.store",
    "LocalBlobStore": "backout.registry.artifacts",
    "Registry": "backout.registry.releases",
    "Release": "backout.registry.releases",
    "Deployments": "backout.traffic.deployments",
    "RouteTable": "backout.traffic.routes",
    "Gateway": "backout.serving.app",
    "GatewaySettings": "backout.serving.app",
    "Controller": "backout.control.controller",
    "Phase": "backout.control.phases",
    "Policy": "backout.control.policy",
    "load_policy": "backout.control.policy",
    "parse_policy": "backout.control.policy",
    "Gate": "backout.judges.gate",
    "Judgement": "backout.judges.verdict",
    "Verdict": "backout.judges.verdict",
    "CompatReport": "backout.proof.compat",
    "diff_contracts": "backout.proof.compat",
    "ConsumerContract": "backout.proof.consumers",
    "ReplayReport": "backout.proof.replay",
    "replay": "backout.proof.replay",
    "run_drill": "backout.control.drills",
    "build_report": "backout.reports.builder",
    "write_report": "backout.reports.writer",
}

__all__ = [
    "Artifact",
    "BackoutError",
    "CompatReport",
    "ConsumerContract",
    "Contract",
    "Controller",
    "Deployments",
    "Gate",
    "Gateway",
    "GatewaySettings",
    "Judgement",
    "LocalBlobStore",
    "Phase",
    "Policy",
    "Registry",
    "Release",
    "ReleaseManifest",
    "ReplayReport",
    "RouteTable",
    "Runtime",
    "RuntimeKind",
    "Store",
    "Verdict",
    "__version__",
    "build_report",
    "diff_contracts",
    "load_policy",
    "open_store",
    "parse_policy",
    "replay",
    "run_drill",
    "write_report",
]

if TYPE_CHECKING:
    from backout.control.controller import Controller
    from backout.control.drills import run_drill
    from backout.control.phases import Phase
    from backout.control.policy import Policy, load_policy, parse_policy
    from backout.errors import BackoutError
    from backout.judges.gate import Gate
    from backout.judges.verdict import Judgement, Verdict
    from backout.proof.compat import CompatReport, diff_contracts
    from backout.proof.consumers import ConsumerContract
    from backout.proof.replay import ReplayReport, replay
    from backout.registry.artifacts import LocalBlobStore
    from backout.registry.manifest import Artifact, Contract, ReleaseManifest, Runtime, RuntimeKind
    from backout.registry.releases import Registry, Release
    from backout.reports.builder import build_report
    from backout.reports.writer import write_report
    from backout.serving.app import Gateway, GatewaySettings
    from backout.store import Store, open_store
    from backout.traffic.deployments import Deployments
    from backout.traffic.routes import RouteTable


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'backout' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
