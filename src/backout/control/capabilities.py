"""What a policy needs from the router that carries its traffic, and the check before it runs.

A policy is refused — by ``backout policy check --router``, by ``deploy``, and when it is
stored — if it needs a capability its router does not declare, with one line that names the
setting, the capability and the router. Nothing moves on a policy that could not be carried
out halfway through an incident.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from backout.control.policy import Policy
from backout.errors import UnsupportedByRouter
from backout.traffic.router import ROUTER_CAPABILITIES, ROUTER_LIMITS, Capability


def requirements(policy: Policy) -> list[tuple[str, Capability]]:
    """(the setting, the capability it needs) for each router-dependent part of ``policy``."""
    needs: list[tuple[str, Capability]] = []
    if policy.capture.rate > 0:
        needs.append((f"capture.rate: {policy.capture.rate:g}", Capability.CAPTURE))
    if policy.replay.allowed:
        # The pre-flight replay proves a target on captured requests: without capture it
        # would have nothing to replay and every rollback would wait on an empty log.
        needs.append(("replay.allowed: true", Capability.CAPTURE))
    return needs


def missing(
    policy: Policy, capabilities: Iterable[Capability], why: Mapping[Capability, str] | None = None
) -> list[str]:
    """One line per requirement of ``policy`` that ``capabilities`` do not cover (with the
    router's reason for lacking it, from ``why``)."""
    have = frozenset(capabilities)
    why = why or {}
    return [
        f"{setting} needs the {cap.value} capability" + (f" ({why[cap]})" if cap in why else "")
        for setting, cap in requirements(policy)
        if cap not in have
    ]


def check(policy: Policy, router: str, capabilities: Iterable[Capability]) -> None:
    """Raise :class:`UnsupportedByRouter` when ``policy`` needs what ``router`` cannot do."""
    gaps = missing(policy, capabilities, ROUTER_LIMITS.get(router))
    if gaps:
        raise UnsupportedByRouter(
            f"the policy cannot run on the {router} router: {'; '.join(gaps)}, which it lacks "
            "(turn those settings off for this model, or route it through a router that has them)"
        )


def check_drill(policy: Policy, model: str) -> None:
    """Refuse a drill on a model whose router cannot inject its fault (only backout's own
    gateway can: it answers for the release, so it can fail, slow or corrupt the answers)."""
    kind = policy.router.kind
    if Capability.FAULT_INJECTION in ROUTER_CAPABILITIES[kind]:
        return
    why = ROUTER_LIMITS.get(kind, {}).get(Capability.FAULT_INJECTION)
    raise UnsupportedByRouter(
        f"a drill needs the fault-injection capability, and {model}'s traffic goes through the "
        f"{kind} router" + (f" ({why})" if why else "") + ": rehearse on a model served by "
        "backout's gateway, or inject the fault in the model server itself"
    )


# What a router lacks that no policy setting asks for, but people count on: said beside the
# effective policy so nobody learns it during an incident.
NOTED = {
    Capability.STICKY_KEYS: "routing keys (x-backout-key) are not sticky",
    Capability.FAULT_INJECTION: "`backout drill` is refused",
}


def notes(router: str) -> list[str]:
    """One line per capability of backout's gateway that ``router`` lacks and that no policy
    setting covers, with the router's reason."""
    have = ROUTER_CAPABILITIES.get(router, frozenset())
    why = ROUTER_LIMITS.get(router, {})
    return [
        f"on the {router} router, {what}" + (f" ({why[cap]})" if cap in why else "")
        for cap, what in NOTED.items()
        if cap not in have
    ]
