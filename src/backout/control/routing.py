"""Which router carries a model's traffic and which metric system judges it, from its policy.

For the platform engineer whose models already sit behind Traefik or a Kubernetes Gateway
and whose Prometheus already scrapes it. A policy's ``router`` section names the router
(``gateway``, backout's own, by default; ``traefik``; ``gateway-api``) with what it needs to
reach it, and its ``telemetry`` section where the judges' numbers come from (``gateway``:
the batches backout's gateway writes into the store; ``prometheus``: PromQL). The
controller builds each model's router and telemetry source from the policy it runs by
(:func:`build_router`, :func:`build_telemetry`), so ``backout serve`` and ``backout
controller`` steer them with no code; the policy check refuses what the named router cannot
carry (:mod:`backout.control.capabilities`).

Release backends are named per version (``backends``) or by a template (``backend``) with
``{model}``, ``{version}`` and ``{slug}`` (the version lower-cased with every character other
than letters, digits and dashes turned into a dash: a valid Kubernetes name part).
"""

from __future__ import annotations

import re
import string
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import Field, field_validator, model_validator

from backout.configfile import Duration, Url, rule_error
from backout.control.rules import Section
from backout.errors import BackoutError, RouterError, TelemetryUnavailable
from backout.store import Store
from backout.telemetry.prometheus import METRIC, PrometheusTelemetry
from backout.telemetry.source import StoreTelemetry, TelemetrySource
from backout.traffic.deployments import Deployments
from backout.traffic.router import ROUTER_CAPABILITIES, Capability, GatewayRouter, TrafficRouter

PLACEHOLDERS = frozenset({"model", "version", "slug"})


def slug(version: str) -> str:
    """``1.4.0-RC1`` → ``1-4-0-rc1``: a version as a part of a Kubernetes name."""
    return re.sub(r"[^a-z0-9-]", "-", version.lower()).strip("-") or "v"


def _template(value: str | None) -> str | None:
    if value is None:
        return None
    try:
        names = {name for _, name, _, _ in string.Formatter().parse(value) if name is not None}
    except ValueError as exc:
        raise ValueError(f"is not a valid template: {exc}") from None
    unknown = sorted(names - PLACEHOLDERS)
    if unknown:
        raise ValueError(
            f"uses {{{unknown[0]}}}: a backend template may use only {{model}}, {{version}}, {{slug}}"
        )
    return value


def fill(template: str, model: str, version: str) -> str:
    """A backend template filled in for ``model@version``."""
    return template.format(model=model, version=version, slug=slug(version))


class _Backends(Section):
    """Per-release backends: a mapping from version, or a template (one of them). The fields
    are declared by each router's section, after its own (as ``policy check`` prints them)."""

    if TYPE_CHECKING:  # declared by each subclass, so that they come after its own fields
        backends: dict[str, str]
        backend: str | None

    @field_validator("backend", check_fields=False)
    @classmethod
    def _check_template(cls, value: str | None) -> str | None:
        return _template(value)

    @model_validator(mode="after")
    def _some_backend(self) -> _Backends:
        if not self.backends and self.backend is None:
            raise rule_error(
                "backend",
                "name each release's backend: 'backends' by version or a 'backend' template",
            )
        return self

    def backend_for(self, model: str, version: str) -> str | None:
        """The backend of ``model@version``, or None when the policy names none."""
        if version in self.backends:
            return self.backends[version]
        return fill(self.backend, model, version) if self.backend is not None else None


class GatewayRouting(Section):
    """backout's own gateway carries the traffic (the default)."""

    kind: Literal["gateway"] = "gateway"


class TraefikRouting(_Backends):
    """Traefik, steered through the folder its file provider watches and read back by its API."""

    kind: Literal["traefik"]
    api: Url  # Traefik's API (its `traefik` entry point), e.g. http://127.0.0.1:8081
    config_dir: str = Field(min_length=1)  # --providers.file.directory, on the controller's host
    web: Url | None = None  # the consumers' entry point: also asked which table it serves
    entrypoints: list[str] = Field(default_factory=lambda: ["web"], min_length=1)
    prefix: str = Field(default="backout", pattern=r"^[a-z][a-z0-9-]*$")
    settle: Duration = Field(default=2.0, gt=0, le=60)
    backends: dict[str, str] = Field(default_factory=dict)  # version -> URL
    backend: str | None = None  # or a URL template: http://fraud-{slug}:8000

    @field_validator("backends")
    @classmethod
    def _urls(cls, backends: dict[str, str]) -> dict[str, str]:
        for version, url in backends.items():
            if not re.fullmatch(r"https?://[^\s/]+\S*", url):
                raise rule_error(version, f"the backend of {version} must be an http:// URL")
        return backends


class GatewayApiRouting(_Backends):
    """A Kubernetes Gateway API ``HTTPRoute`` whose rules backout owns (its parents are yours).

    ``backends`` / ``backend`` name each release's Service, on ``port``.
    """

    kind: Literal["gateway-api"]
    namespace: str = Field(default="default", pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    route: str = Field(min_length=1, max_length=253, pattern=r"^[a-z0-9]([-.a-z0-9]*[a-z0-9])?$")
    port: int = Field(default=8000, ge=1, le=65535)
    kubeconfig: str | None = None  # None: the in-cluster ServiceAccount, else ~/.kube/config
    # The Gateway's listener as the controller reaches it, and the route's hostname there:
    # when set, the data plane itself must answer with the new table before traffic moves on.
    web: Url | None = None
    host: str | None = Field(default=None, pattern=r"^[a-z0-9]([-.a-z0-9]*[a-z0-9])?$")
    context: str | None = None
    settle: Duration = Field(default=10.0, gt=0, le=120)
    backends: dict[str, str] = Field(default_factory=dict)  # version -> Service name
    backend: str | None = None  # or a name template: fraud-{slug}


RouterSpec = Annotated[
    GatewayRouting | TraefikRouting | GatewayApiRouting, Field(discriminator="kind")
]


class GatewayTelemetry(Section):
    """The batches backout's gateway (or its per-release backends) write into the store."""

    kind: Literal["gateway"] = "gateway"


class PrometheusTelemetrySpec(Section):
    """Per-release request, error and latency histograms read from Prometheus with PromQL.

    The release is read from ``service_label``, whose value must be
    ``PREFIX.MODEL.VERSION`` (what the Traefik router names its services; relabel another
    router's metrics to that form), the response code from ``code_label``.
    """

    kind: Literal["prometheus"]
    url: Url
    metric: str = Field(default=METRIC, pattern=r"^[a-zA-Z_:][a-zA-Z0-9_:]*_bucket$")
    service_label: str = Field(default="service", pattern=r"^[a-zA-Z_][a-zA-Z0-9_]*$")
    code_label: str = Field(default="code", pattern=r"^[a-zA-Z_][a-zA-Z0-9_]*$")
    matchers: str = ""  # extra label matchers, e.g. job="traefik"
    prefix: str = Field(default="backout", pattern=r"^[a-z][a-z0-9-]*$")
    lookback: Duration = Field(default=5.0, gt=0, le=3600)  # at least one scrape interval
    timeout: Duration = Field(default=5.0, gt=0, le=60)

    @field_validator("matchers")
    @classmethod
    def _matchers(cls, value: str) -> str:
        # One or more `label op "value"` pairs, as inside PromQL's braces; nothing that could
        # close the selector and smuggle in another query.
        pair = r'\s*[a-zA-Z_][a-zA-Z0-9_]*\s*(=|!=|=~|!~)\s*"(?:[^"\\]|\\.)*"\s*'
        if value and not re.fullmatch(rf"{pair}(,{pair})*", value):
            raise ValueError('must be label matchers such as job="traefik", env!="dev"')
        return value


TelemetrySpec = Annotated[GatewayTelemetry | PrometheusTelemetrySpec, Field(discriminator="kind")]


def capabilities_of(
    spec: GatewayRouting | TraefikRouting | GatewayApiRouting,
) -> frozenset[Capability]:
    """What the router ``spec`` names can do (without reaching it)."""
    return ROUTER_CAPABILITIES[spec.kind]


def build_router(
    spec: GatewayRouting | TraefikRouting | GatewayApiRouting, model: str, deployments: Deployments
) -> TrafficRouter:
    """The router ``spec`` describes, for ``model``. A router whose settings cannot be used
    here (a missing folder, no kubernetes client) is a :class:`RouterError`: the controller
    records it in the model's timeline and moves nothing."""
    if isinstance(spec, GatewayRouting):
        return GatewayRouter(deployments)
    try:
        if isinstance(spec, TraefikRouting):
            from backout.traffic.traefik import TraefikRouter

            return TraefikRouter(
                spec.api, Path(spec.config_dir), spec.backend_for, prefix=spec.prefix,
                entrypoints=spec.entrypoints, settle_s=spec.settle, web_url=spec.web,
            )  # fmt: skip
        from backout.traffic.gateway_api import GatewayApiRouter, kubernetes_api

        return GatewayApiRouter(
            kubernetes_api(spec.kubeconfig, spec.context), namespace=spec.namespace,
            route=spec.route, model=model, backends=spec.backend_for, port=spec.port,
            settle_s=spec.settle, web_url=spec.web, host=spec.host,
        )  # fmt: skip
    except RouterError:
        raise
    except BackoutError as exc:
        raise RouterError(f"cannot set up the {spec.kind} router: {exc.message}") from exc


def build_telemetry(
    spec: GatewayTelemetry | PrometheusTelemetrySpec, store: Store
) -> TelemetrySource:
    """The telemetry source ``spec`` describes."""
    if isinstance(spec, GatewayTelemetry):
        return StoreTelemetry(store)
    try:
        return PrometheusTelemetry(
            spec.url, prefix=spec.prefix, matchers=spec.matchers, lookback_s=spec.lookback,
            timeout_s=spec.timeout, metric=spec.metric, service_label=spec.service_label,
            code_label=spec.code_label,
        )  # fmt: skip
    except BackoutError as exc:  # pragma: no cover - the settings were validated with the policy
        raise TelemetryUnavailable(f"cannot set up Prometheus telemetry: {exc.message}") from exc
