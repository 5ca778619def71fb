"""An in-memory stand-in for the calls of ``kubernetes.client.CustomObjectsApi`` that the
Gateway API router makes, with a Gateway controller that accepts (or refuses) each new
generation of the route, for unit tests of :mod:`backout.traffic.gateway_api`."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from kubernetes.client import ApiException

CONTROLLER = "example.net/gateway-controller"


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch, as the API server applies ``application/merge-patch+json``."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = merge_patch(out.get(k), v)
    return out


def example_route(name: str = "iris", namespace: str = "models") -> dict[str, Any]:
    """The route a user creates once: parents and hostnames, no rules yet."""
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": name, "namespace": namespace, "generation": 1},
        "spec": {
            "parentRefs": [{"name": "models-gateway", "namespace": "gateways"}],
            "hostnames": ["models.example.net"],
            "rules": [{"backendRefs": [{"name": "placeholder", "port": 8000}]}],
        },
    }


@dataclass
class FakeCustomObjects:
    """One namespace's HTTPRoutes. ``accept``: the Gateway controller reconciles each patch
    at once; ``refuse``: it reports (condition, reason, message) instead; ``fail``: every
    call raises it (an ``ApiException`` or a connection error)."""

    routes: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    accept: bool = True
    refuse: tuple[str, str, str] | None = None
    fail: Exception | None = None
    patches: list[Any] = field(default_factory=list)

    def _route(
        self, group: str, version: str, namespace: str, plural: str, name: str
    ) -> dict[str, Any]:
        assert (group, version, plural) == ("gateway.networking.k8s.io", "v1", "httproutes")
        if self.fail is not None:
            raise self.fail
        route = self.routes.get((namespace, name))
        if route is None:
            raise ApiException(status=404, reason="Not Found")
        return route

    def get_namespaced_custom_object(
        self, group: str, version: str, namespace: str, plural: str, name: str
    ) -> Any:
        return copy.deepcopy(self._route(group, version, namespace, plural, name))

    def patch_namespaced_custom_object(
        self, group: str, version: str, namespace: str, plural: str, name: str, body: Any
    ) -> Any:
        route = self._route(group, version, namespace, plural, name)
        self.patches.append(copy.deepcopy(body))
        new = merge_patch(route, body)
        if new["spec"] != route["spec"]:  # the API server bumps generation on a spec change
            new["metadata"]["generation"] = route["metadata"]["generation"] + 1
        self.routes[(namespace, name)] = new
        if self.accept or self.refuse:
            self.reconcile(namespace, name)
        return copy.deepcopy(new)

    def reconcile(self, namespace: str, name: str) -> None:
        """What the Gateway's controller writes into the route's status."""
        route = self.routes[(namespace, name)]
        gen = route["metadata"]["generation"]
        conditions = [
            {"type": kind, "status": "True", "reason": kind, "message": "", "observedGeneration": gen,
             "lastTransitionTime": "2026-12-01T10:00:00Z"}
            for kind in ("Accepted", "ResolvedRefs")
        ]  # fmt: skip
        if self.refuse is not None:
            kind, reason, message = self.refuse
            for c in conditions:
                if c["type"] == kind:
                    c.update(status="False", reason=reason, message=message)
        route["status"] = {
            "parents": [{"parentRef": route["spec"]["parentRefs"][0], "controllerName": CONTROLLER,
                         "conditions": conditions}]
        }  # fmt: skip


def api_server(objects: FakeCustomObjects, content_types: list[str]) -> Any:
    """The Kubernetes API's two HTTPRoute calls over HTTP, backed by ``objects``: for tests of
    the real ``kubernetes`` client (its paths, its merge-patch content type, its errors)."""
    import json

    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    async def route(request: Request) -> Response:
        ns, name = request.path_params["ns"], request.path_params["name"]
        args = ("gateway.networking.k8s.io", "v1", ns, "httproutes", name)
        try:
            if request.method == "PATCH":
                content_types.append(request.headers.get("content-type", ""))
                doc = objects.patch_namespaced_custom_object(
                    *args, json.loads(await request.body())
                )
            else:
                doc = objects.get_namespaced_custom_object(*args)
        except ApiException as exc:
            status = {"kind": "Status", "apiVersion": "v1", "status": "Failure",
                      "reason": exc.reason, "code": exc.status}  # fmt: skip
            return JSONResponse(status, status_code=exc.status or 500)
        return JSONResponse(doc)

    path = "/apis/gateway.networking.k8s.io/v1/namespaces/{ns}/httproutes/{name}"
    return Starlette(routes=[Route(path, route, methods=["GET", "PATCH"])])
