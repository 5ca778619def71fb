"""The Kubernetes Gateway API as a :class:`~backout.traffic.router.TrafficRouter`.

For teams whose models run in Kubernetes behind a Gateway (Envoy Gateway, Istio, Cilium,
NGINX Gateway Fabric, Traefik's Kubernetes provider...). backout owns the ``rules`` of one
``HTTPRoute`` per model (``gateway.networking.k8s.io/v1``); its ``parentRefs`` and
``hostnames`` stay yours — create the route once (``deploy/kubernetes/httproute.yaml``) and
backout patches its rules through the official ``kubernetes`` client (an optional extra:
``pip install 'backout[kubernetes]'``, imported only when this router is used). Each release
is one Service. The rules, in the order the Gateway API's precedence needs:

1. one rule per release for pins: ``x-backout-version: V`` on the model's paths, or the
   version in the path (``/models/M/versions/V/...``, ``/v2/models/M/versions/V/...``);
2. one rule per release holding pinned keys: ``x-backout-key: K`` on the model's paths (a
   tie with a version pin goes to the earlier rule: the explicit version wins);
3. the split: the model's paths to weighted ``backendRefs`` (basis points), with a
   ``RequestMirror`` filter to the shadow's Service when the table has one.

Every rule adds ``x-backout-generation: N`` to its answers, and the route carries the table's
generation in an annotation. :meth:`GatewayApiRouter.served` reads the route back: the
weights it holds, and whether the Gateway's controller accepted that generation of it (its
``status.parents[].conditions``, ``Accepted`` and ``ResolvedRefs`` at the route's
``metadata.generation``). A route no controller has accepted yet serves nothing that backout
can verify, so the controller moves no further step until it is accepted.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import httpx

from backout.errors import ConfigError, RouterError
from backout.traffic.router import GATEWAY_API_CAPABILITIES
from backout.traffic.routes import RouteTable

GROUP = "gateway.networking.k8s.io"
VERSION = "v1"
PLURAL = "httproutes"
GENERATION_ANNOTATION = "backout/route-generation"
MODEL_ANNOTATION = "backout/model"
PIN_HEADER = "x-backout-version"  # the same headers backout's gateway reads
KEY_HEADER = "x-backout-key"
GENERATION_HEADER = "x-backout-generation"
MAX_RULES = 16  # the HTTPRoute schema's limits
MAX_MATCHES = 64

ServiceFor = Callable[[str, str], str | None]


class CustomObjects(Protocol):
    """The calls of ``kubernetes.client.CustomObjectsApi`` the router makes (tests pass an
    in-memory one). Errors carry the HTTP ``status`` as ``ApiException`` does."""

    def get_namespaced_custom_object(
        self, group: str, version: str, namespace: str, plural: str, name: str
    ) -> Any: ...

    def patch_namespaced_custom_object(
        self, group: str, version: str, namespace: str, plural: str, name: str, body: Any
    ) -> Any: ...


def kubernetes_api(kubeconfig: str | None = None, context: str | None = None) -> CustomObjects:
    """A ``CustomObjectsApi`` for the cluster: the in-cluster ServiceAccount when running in a
    pod and no ``kubeconfig`` is given, otherwise that kubeconfig (or ``~/.kube/config``)."""
    try:
        from kubernetes import client, config
    except ImportError as exc:
        raise ConfigError(
            "the gateway-api router needs the kubernetes client: pip install 'backout[kubernetes]'"
        ) from exc
    try:
        # A client of its own (not the module's global default), so that two models' routers
        # may reach two clusters.
        if kubeconfig is None:
            try:
                cfg = client.Configuration()
                config.load_incluster_config(client_configuration=cfg)  # type: ignore[no-untyped-call]
                api_client = client.ApiClient(cfg)
            except config.ConfigException:
                api_client = config.new_client_from_config(context=context)  # type: ignore[no-untyped-call]
        else:
            api_client = config.new_client_from_config(config_file=kubeconfig, context=context)  # type: ignore[no-untyped-call]
    except (config.ConfigException, OSError) as exc:
        raise ConfigError(
            f"no Kubernetes configuration ({exc}): run in a pod with a ServiceAccount, or give "
            "the router's kubeconfig"
        ) from exc
    api: CustomObjects = client.CustomObjectsApi(api_client)
    return api


def _paths(model: str, version: str | None = None) -> list[str]:
    tail = "" if version is None else f"/versions/{version}"
    return [f"/models/{model}{tail}", f"/v2/models/{model}{tail}"]


def _match(path: str, header: tuple[str, str] | None = None) -> dict[str, Any]:
    m: dict[str, Any] = {"path": {"type": "PathPrefix", "value": path}}
    if header is not None:
        m["headers"] = [{"type": "Exact", "name": header[0], "value": header[1]}]
    return m


def _name(kind: str, i: int, version: str) -> str:
    # A rule name is a DNS subdomain: the index keeps two versions that differ only in case
    # or punctuation apart.
    part = "".join(c if c.isalnum() or c == "-" else "-" for c in version.lower()).strip("-")
    return f"{kind}-{i}-{part}"[:63].rstrip("-")


def httproute_rules(
    table: RouteTable, service: Callable[[str, str], str], port: int
) -> list[dict[str, Any]]:
    """The ``spec.rules`` of an HTTPRoute that serves ``table`` (pure; see the module doc)."""
    model = table.model

    def ref(version: str, weight: int | None = None) -> dict[str, Any]:
        r: dict[str, Any] = {"kind": "Service", "name": service(model, version), "port": port}
        if weight is not None:
            r["weight"] = weight
        return r

    stamp = {
        "type": "ResponseHeaderModifier",
        "responseHeaderModifier": {
            "set": [{"name": GENERATION_HEADER, "value": str(table.generation)}]
        },
    }
    rules: list[dict[str, Any]] = []
    versions = sorted(table.versions)
    for i, v in enumerate(versions):
        matches = [_match(p, (PIN_HEADER, v)) for p in _paths(model)]
        matches += [_match(p) for p in _paths(model, v)]
        rules.append({"name": _name("pin", i, v), "matches": matches,
                      "filters": [stamp], "backendRefs": [ref(v)]})  # fmt: skip
    keyed: dict[str, list[str]] = {}
    for key, v in sorted(table.pins.items()):
        keyed.setdefault(v, []).append(key)
    for i, v in enumerate(versions):
        if v not in keyed:
            continue
        matches = [_match(p, (KEY_HEADER, k)) for k in keyed[v] for p in _paths(model)]
        if len(matches) > MAX_MATCHES:
            raise RouterError(
                f"{len(keyed[v])} keys pinned to {model}@{v}: an HTTPRoute rule holds at most "
                f"{MAX_MATCHES // 2}; pin fewer keys, or send x-backout-version instead"
            )
        rules.append({"name": _name("key", i, v), "matches": matches,
                      "filters": [stamp], "backendRefs": [ref(v)]})  # fmt: skip
    split: dict[str, Any] = {
        "name": "split",
        "matches": [_match(p) for p in _paths(model)],
        "filters": [stamp],
        "backendRefs": [ref(v, w) for v, w in sorted(table.weights.items()) if w > 0],
    }
    if table.shadow is not None and table.shadow.basis_points > 0:
        # The Gateway API mirrors a fraction: basis points out of 10,000, exactly.
        split["filters"].append({
            "type": "RequestMirror",
            "requestMirror": {
                "backendRef": ref(table.shadow.version),
                "fraction": {"numerator": table.shadow.basis_points, "denominator": 10_000},
            },
        })  # fmt: skip
    rules.append(split)
    if len(rules) > MAX_RULES:
        raise RouterError(
            f"{model}'s table needs {len(rules)} HTTPRoute rules, more than the {MAX_RULES} a "
            "route holds: take releases that serve nothing out of the table"
        )
    return rules


def httproute(
    table: RouteTable, name: str, namespace: str, service: Callable[[str, str], str], port: int,
    parent_refs: list[dict[str, Any]],
) -> dict[str, Any]:  # fmt: skip
    """A whole HTTPRoute object serving ``table`` under ``parent_refs`` (for examples and the
    schema test; the router itself only patches the rules and annotations)."""
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "HTTPRoute",
        "metadata": {"name": name, "namespace": namespace, "annotations": route_annotations(table)},
        "spec": {"parentRefs": parent_refs, "rules": httproute_rules(table, service, port)},
    }


def route_annotations(table: RouteTable) -> dict[str, str]:
    """What the route carries to say which table it holds."""
    return {GENERATION_ANNOTATION: str(table.generation), MODEL_ANNOTATION: table.model}


class GatewayApiRouter:
    """The HTTPRoute ``namespace/route`` carries ``model``; ``backends(model, version)`` names
    each release's Service (on ``port``). ``apply`` patches the route's rules and waits up to
    ``settle_s`` for the Gateway's controller to accept them; ``served`` is the check.
    With ``web_url`` (the Gateway's listener as the controller reaches it, and ``host`` for
    its hostname), both also ask the data plane itself: ``GET /v2/models/MODEL`` through the
    Gateway must answer with the route's generation (``x-backout-generation``), since a
    route can be accepted a little before every Gateway replica serves it."""

    name = "gateway-api"
    capabilities = GATEWAY_API_CAPABILITIES

    def __init__(
        self, api: CustomObjects, *, namespace: str, route: str, model: str,
        backends: ServiceFor | Mapping[tuple[str, str], str], port: int = 8000,
        settle_s: float = 10.0, poll_s: float = 0.2, web_url: str | None = None,
        host: str | None = None, timeout_s: float = 2.0,
    ) -> None:  # fmt: skip
        self.api = api
        self.namespace = namespace
        self.route = route
        self.model = model
        self.backends = backends
        self.port = port
        self.settle_s = settle_s
        self.poll_s = poll_s
        self.web_url = web_url.rstrip("/") if web_url else None
        self.host = host
        timeout = httpx.Timeout(timeout_s, connect=min(1.0, timeout_s))
        self.http = httpx.Client(timeout=timeout) if self.web_url else None

    @property
    def where(self) -> str:
        return f"HTTPRoute {self.namespace}/{self.route}"

    def service(self, model: str, version: str) -> str:
        b = self.backends
        name = b(model, version) if callable(b) else b.get((model, version))
        if not name:
            raise RouterError(
                f"the gateway-api router has no Service for {model}@{version}: run it as a "
                "Service and name it in the policy's router.backends (or router.backend)"
            )
        return name

    def _check_model(self, model: str) -> None:
        if model != self.model:
            raise RouterError(f"{self.where} carries {self.model}, not {model}")

    def apply(self, table: RouteTable) -> None:
        """Patch the route's rules to serve ``table``, then wait until it is accepted."""
        self._check_model(table.model)
        rules = httproute_rules(table, self.service, self.port)
        self._call("read", self.api.get_namespaced_custom_object)  # a missing route: one line
        # A JSON merge patch replaces the rules list whole: backout owns it; parentRefs and
        # hostnames are not touched.
        body = {"metadata": {"annotations": route_annotations(table)}, "spec": {"rules": rules}}
        self._call("patch", self.api.patch_namespaced_custom_object, body)
        deadline = time.monotonic() + self.settle_s
        while True:
            doc = self._call("read", self.api.get_namespaced_custom_object)
            accepted = self._accepted(doc) and _generation(doc) == table.generation
            if accepted and self._switched(table.generation):
                return
            if time.monotonic() > deadline:
                if accepted:  # the control plane took it; the data plane has not yet
                    raise RouterError(
                        f"the Gateway at {self.web_url} still answers {self.model} with an older "
                        f"table than generation {table.generation} after {self.settle_s:g} s"
                    )
                raise RouterError(
                    f"no Gateway controller accepted generation {table.generation} of "
                    f"{self.where} within {self.settle_s:g} s: check its parentRefs and "
                    "`kubectl describe httproute`"
                )
            time.sleep(self.poll_s)

    def served(self, model: str) -> dict[str, float] | None:
        """Percent per release of the route's split, once its controller accepted it."""
        self._check_model(model)
        doc = self._call("read", self.api.get_namespaced_custom_object)
        if _generation(doc) is None:
            return None  # backout has not written this route yet
        if not self._accepted(doc):
            return None  # written, not yet taken by the Gateway: nothing verified
        if not self._switched(_generation(doc)):
            return None  # accepted, but the data plane still answers with an older table
        try:
            rules = doc["spec"]["rules"]
            split = next(r for r in rules if r.get("name") == "split")
            refs = split.get("backendRefs") or []
            weights = {str(r["name"]): int(r.get("weight", 1)) for r in refs}
        except (KeyError, TypeError, ValueError, StopIteration) as exc:
            raise RouterError(
                f"{self.where} has no split rule backout can read: is another program "
                "writing its rules?"
            ) from exc
        by_service = {}
        for name in weights:
            version = self._version_of(doc, name)
            if version is None:
                raise RouterError(
                    f"{self.where} splits to Service {name!r}, which is not a release of {model}"
                )
            by_service[name] = version
        return {by_service[n]: w / 100 for n, w in weights.items()}  # basis points to percent

    def _version_of(self, doc: Mapping[str, Any], service: str) -> str | None:
        # Every release the route names has its own pin rule, whose version-path match says
        # which release the Service is.
        head = f"/models/{self.model}/versions/"
        for rule in doc["spec"]["rules"]:
            refs = rule.get("backendRefs") or []
            if len(refs) != 1 or refs[0].get("name") != service:
                continue
            for m in rule.get("matches") or []:
                value = str((m.get("path") or {}).get("value", ""))
                if value.startswith(head):
                    return value[len(head) :]
        return None

    def _accepted(self, doc: Mapping[str, Any]) -> bool:
        """True when every parent in the route's status has accepted its current generation
        (and there is at least one); a parent that refused it is a :class:`RouterError`
        naming its reason. A parent still on an older generation means: not yet."""
        current = (doc.get("metadata") or {}).get("generation")
        parents = (doc.get("status") or {}).get("parents") or []
        accepted = bool(parents)
        for parent in parents:
            fresh = {
                c.get("type"): c
                for c in parent.get("conditions") or []
                if current is None or c.get("observedGeneration") == current
            }
            for kind in ("Accepted", "ResolvedRefs"):
                c = fresh.get(kind)
                if c is not None and c.get("status") == "False":
                    who = parent.get("controllerName", "its Gateway")
                    raise RouterError(
                        f"{self.where} is not {kind} by {who}: "
                        f"{c.get('reason', '')} {c.get('message', '')}".rstrip()
                    )
            if (fresh.get("Accepted") or {}).get("status") != "True":
                accepted = False  # this parent has not taken the new generation yet
        return accepted

    def probe(self) -> int | None:
        """The generation the Gateway's data plane answers the model's path with (None: no
        stamp, a table backout has not written or a path no rule of it matches)."""
        assert self.web_url is not None and self.http is not None
        headers = {"host": self.host} if self.host else {}
        try:
            r = self.http.get(f"{self.web_url}/v2/models/{self.model}", headers=headers)
        except httpx.HTTPError as exc:
            raise RouterError(
                f"the Gateway at {self.web_url} cannot be reached ({type(exc).__name__}): is "
                "that the address of its listener as the controller sees it?"
            ) from exc
        value = r.headers.get(GENERATION_HEADER)
        try:
            return int(value) if value is not None else None
        except ValueError as exc:
            raise RouterError(f"the Gateway answered {GENERATION_HEADER}: {value!r}") from exc

    def _switched(self, generation: int | None) -> bool:
        if self.web_url is None:
            return True  # no data-plane address: the route's status is the word we have
        seen = self.probe()
        return seen is not None and generation is not None and seen >= generation

    def close(self) -> None:
        """Close the client's connections (a ``CustomObjectsApi``'s pool, the probe's)."""
        _close(self.api)
        if self.http is not None:
            self.http.close()

    def _call(self, what: str, fn: Callable[..., Any], body: Any = None) -> Any:
        args: list[Any] = [GROUP, VERSION, self.namespace, PLURAL, self.route]
        if body is not None:
            args.append(body)
        try:
            doc = fn(*args)
        # The client raises ApiException for an HTTP answer and urllib3's errors for a
        # connection that failed; both are translated here, by their status when they have
        # one, so this module needs no import of the optional client.
        except Exception as exc:
            status = getattr(exc, "status", None)
            if status == 404:
                raise RouterError(
                    f"{self.where} does not exist: create it with its parentRefs "
                    "(deploy/kubernetes/httproute.yaml); backout sets only its rules"
                ) from exc
            if status in (401, 403):
                raise RouterError(
                    f"the Kubernetes API refused to {what} {self.where} ({status}): give the "
                    "controller's ServiceAccount a Role that may get and patch httproutes"
                ) from exc
            if isinstance(status, int):
                reason = getattr(exc, "reason", "") or ""
                raise RouterError(
                    f"the Kubernetes API answered {status} {reason} to {what} {self.where}".rstrip()
                ) from exc
            raise RouterError(
                f"the Kubernetes API cannot be reached to {what} {self.where} "
                f"({type(exc).__name__})"
            ) from exc
        if not isinstance(doc, Mapping) or not isinstance(doc.get("spec"), Mapping):
            raise RouterError(f"the Kubernetes API answered {what} {self.where} with no spec")
        return doc


def _close(api: object) -> None:
    inner = getattr(api, "api_client", None)
    close = getattr(inner, "close", None)
    if callable(close):
        close()


def _generation(doc: Mapping[str, Any]) -> int | None:
    value = ((doc.get("metadata") or {}).get("annotations") or {}).get(GENERATION_ANNOTATION)
    try:
        return int(value) if value is not None else None
    except (TypeError, ValueError):
        return None
