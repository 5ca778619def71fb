"""Vendored OpenAPI schemas of the custom resources backout writes, for offline validation.

- ``httproute-v1.json``: the ``openAPIV3Schema`` of ``HTTPRoute``
  (``gateway.networking.k8s.io/v1``) from the Gateway API's standard-channel CRD,
  github.com/kubernetes-sigs/gateway-api tag ``v1.6.1`` (commit 8bb74df00e56),
  ``config/crd/standard/gateway.networking.k8s.io_httproutes.yaml``. Apache-2.0.
- ``servicemonitor-v1.json``: the ``openAPIV3Schema`` of ``ServiceMonitor``
  (``monitoring.coreos.com/v1``) from github.com/prometheus-operator/prometheus-operator tag
  ``v0.93.0`` (commit f8fafd475f3d),
  ``example/prometheus-operator-crd/monitoring.coreos.com_servicemonitors.yaml``. Apache-2.0.

Each file is the CRD's ``spec.versions[name=v1].schema.openAPIV3Schema`` unchanged, with a
``$comment`` naming its source. What JSON Schema cannot check is not checked here: the CEL
rules in ``x-kubernetes-validations`` (the API server evaluates them) and ``x-kubernetes-*``
list semantics. ``metadata`` is an open object in a CRD schema, so object names are checked
by kubernetes-validate for the core kinds only.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

from jsonschema import Draft7Validator

HERE = Path(__file__).parent


@functools.cache
def schema(name: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((HERE / f"{name}-v1.json").read_text())
    return doc


def validator(name: str) -> Draft7Validator:
    """A validator for ``httproute`` or ``servicemonitor`` objects (formats not checked: the
    OpenAPI formats ``int32``/``int64`` are not JSON Schema's)."""
    return Draft7Validator(schema(name))


def httproute_validator() -> Draft7Validator:
    return validator("httproute")
