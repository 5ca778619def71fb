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
    "Artifact": "backout.releases",
    "Contract": "backout.releases",
    "ReleaseManifest": "backout.releases",
    "Runtime": "backout.releases",
    "RuntimeKind": "backout.releases",
    "Store": "backout.store",
    "open_store": "backout.store",
    "LocalBlobStore": "backout.artifacts",
    "Registry": "backout.registry",
    "Release": "backout.registry",
    "Deployments": "backout.deployments",
    "RouteTable": "backout.routing",
    "Gateway": "backout.gateway",
    "GatewaySettings": "backout.gateway",
    "Controller": "backout.controller",
    "Phase": "backout.operations",
    "Policy": "backout.policy",
    "load_policy": "backout.policy",
    "parse_policy": "backout.policy",
    "Gate": "backout.judges",
    "Judgement": "backout.judges",
    "Verdict": "backout.judges",
    "CompatReport": "backout.compat",
    "diff_contracts": "backout.compat",
    "ConsumerContract": "backout.consumers",
    "ReplayReport": "backout.replay",
    "replay": "backout.replay",
    "run_drill": "backout.drills",
    "build_report": "backout.reports",
    "write_report": "backout.reports",
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
    from backout.artifacts import LocalBlobStore
    from backout.compat import CompatReport, diff_contracts
    from backout.consumers import ConsumerContract
    from backout.controller import Controller
    from backout.deployments import Deployments
    from backout.drills import run_drill
    from backout.errors import BackoutError
    from backout.gateway import Gateway, GatewaySettings
    from backout.judges import Gate, Judgement, Verdict
    from backout.operations import Phase
    from backout.policy import Policy, load_policy, parse_policy
    from backout.registry import Registry, Release
    from backout.releases import Artifact, Contract, ReleaseManifest, Runtime, RuntimeKind
    from backout.replay import ReplayReport, replay
    from backout.reports import build_report, write_report
    from backout.routing import RouteTable
    from backout.store import Store, open_store


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'backout' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
