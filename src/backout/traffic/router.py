"""The ``TrafficRouter`` seam: what carries a model's traffic, as the controller sees it.

The controller never talks to a proxy, a mesh or a gateway directly. It writes the route
table it wants into the store (the source of truth, in the same transaction as its
decision), then asks the model's router to serve it and to say what it really serves. A
router declares its capabilities, and a policy that needs one its router lacks is refused
before anything moves. backout's own gateway is the first router (:class:`GatewayRouter`);
an external proxy is another implementation of the same four members.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Protocol, runtime_checkable

from backout.traffic.deployments import Deployments
from backout.traffic.routes import RouteTable


class Capability(StrEnum):
    """What a router can do beyond splitting traffic by weight."""

    STICKY_KEYS = "sticky-keys"  # a routing key keeps landing on the same release
    PINS = "pins"  # a request or a key can be pinned to one release
    MIRRORING = "mirroring"  # a sampled copy of live traffic goes to a shadow release
    CAPTURE = "capture"  # live requests are recorded for replay
    FAULT_INJECTION = "fault-injection"  # drills inject latency, errors, NaN or crashes


@runtime_checkable
class TrafficRouter(Protocol):
    """A router that serves route tables. The contract, for every implementation:

    - ``name`` names the router in events and error messages.
    - ``capabilities`` is fixed for the router's life; the policy check reads it.
    - ``apply(table)`` makes the router serve ``table``'s weights (and shadow and pins where
      it has those capabilities). It is called after the store committed ``table``, may be
      called again with the same table at any time (every tick where :meth:`served`
      disagrees), and must be idempotent. It raises
      :class:`~backout.errors.RouterError` when the router cannot be reached or refuses.
    - ``served(model)`` reads back what the router really serves right now: percent per
      release, summing to 100, or None when the router serves nothing for ``model``. It
      never answers from what was asked; a router that cannot tell raises
      :class:`~backout.errors.RouterError`. The controller moves no further step while
      what is served differs from what it asked for.
    """

    name: str
    capabilities: frozenset[Capability]

    def apply(self, table: RouteTable) -> None: ...

    def served(self, model: str) -> Mapping[str, float] | None: ...


GATEWAY_CAPABILITIES = frozenset(Capability)


class GatewayRouter:
    """backout's own gateway as a router: it reads the route table straight from the store.

    Gateway workers watch the store's routes generation and swap in a committed table within
    milliseconds, so ``apply`` has nothing to push; ``served`` reads the committed table
    back, which is what every worker serves once it has seen the generation.
    """

    name = "gateway"
    capabilities = GATEWAY_CAPABILITIES

    def __init__(self, deployments: Deployments) -> None:
        self.deployments = deployments

    def apply(self, table: RouteTable) -> None:
        del table  # the committed table is the gateway's configuration: nothing to push

    def served(self, model: str) -> dict[str, float] | None:
        table = self.deployments.get(model)
        if table is None:
            return None
        return {v: w / 100 for v, w in table.weights.items()}


# Traefik (traffic/traefik.py): weighted services, mirroring, and header rules for pins. Its
# weighted round robin does not keep a routing key on its release as weights change, it
# records no requests for replay and it injects no faults for drills.
TRAEFIK_CAPABILITIES = frozenset({Capability.PINS, Capability.MIRRORING})

# The Kubernetes Gateway API (traffic/gateway_api.py): weighted backendRefs, header matches
# for pins and the RequestMirror filter; like Traefik, no sticky keys, capture or faults.
GATEWAY_API_CAPABILITIES = frozenset({Capability.PINS, Capability.MIRRORING})

# The routers backout knows by name, with what each can do (for `backout policy check`).
ROUTER_CAPABILITIES: dict[str, frozenset[Capability]] = {
    GatewayRouter.name: GATEWAY_CAPABILITIES,
    "traefik": TRAEFIK_CAPABILITIES,
    "gateway-api": GATEWAY_API_CAPABILITIES,
    # An external router that splits by weight only (a proxy's weighted services).
    "weights-only": frozenset(),
}

# Why a router lacks a capability, for the policy check's one-line refusal.
ROUTER_LIMITS: dict[str, dict[Capability, str]] = {
    "traefik": {
        Capability.STICKY_KEYS: "its weighted round robin does not keep a routing key on its "
        "release as weights change",
        Capability.CAPTURE: "Traefik forwards requests without recording them for replay",
        Capability.FAULT_INJECTION: "Traefik injects no faults into a release's answers",
    },
    "gateway-api": {
        Capability.STICKY_KEYS: "an HTTPRoute's weighted backendRefs do not keep a routing key "
        "on its release as weights change",
        Capability.CAPTURE: "the Gateway forwards requests without recording them for replay",
        Capability.FAULT_INJECTION: "an HTTPRoute injects no faults into a release's answers",
    },
}
