"""backout: the safe way back for machine-learning models in production."""

from backout.errors import BackoutError
from backout.releases import Artifact, Contract, ReleaseManifest, Runtime, RuntimeKind

__version__ = "0.1.0"

__all__ = [
    "Artifact",
    "BackoutError",
    "Contract",
    "ReleaseManifest",
    "Runtime",
    "RuntimeKind",
    "__version__",
]
