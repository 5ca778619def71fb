"""Tests of the gateway (``backout.serving``).

The loopback server helper lives in :mod:`tests.loopback`; it is re-exported here because
tests written before this package existed import it as ``tests.serving``.
"""

from tests.loopback import free_port, serve

__all__ = ["free_port", "serve"]
