"""The control API's routes, one module per group of commands.

:data:`ROUTERS` lists them in the order the OpenAPI document shows them; :mod:`backout.api.app`
mounts each under ``/api/v1``.
"""

from __future__ import annotations

from fastapi import APIRouter

from backout.api.routes import (
    admin,
    incidents,
    operations,
    proof,
    releases,
    status,
    store_admin,
    traffic,
)

__all__ = ["ROUTERS"]

ROUTERS: list[APIRouter] = [
    status.routes,
    operations.routes,
    traffic.routes,
    releases.routes,
    proof.routes,
    incidents.routes,
    admin.routes,
    store_admin.routes,
]
