"""Pre-flight gates: what must hold before traffic moves to a release, either way.

Before a release takes traffic (a deploy, a rollback, traffic set by hand) or becomes
known-good, the controller checks that it loads and answers at all (in a separate process,
once per release digest); before a rollout's first step and before a rollback moves
traffic, that the target's contract can take the live release's traffic for every
registered consumer, and it replays captured production requests against the target.
Each returns a verdict with evidence that goes into the timeline.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from backout.control.policy import Replay
from backout.errors import BackoutError
from backout.proof.compat import CompatReport, diff_contracts
from backout.proof.consumers import list_consumers
from backout.proof.replay import Limits, load_captures, replay
from backout.registry.releases import Registry
from backout.runtimes.probe import Prober
from backout.store import Store, audit


@dataclass(frozen=True, slots=True)
class Check:
    """One pre-flight check's outcome."""

    name: str  # load | compat | replay
    verdict: str  # pass | fail | skipped
    summary: str
    evidence: dict[str, Any] = field(default_factory=dict)

    @property
    def failed(self) -> bool:
        return self.verdict == "fail"

    def to_dict(self) -> dict[str, Any]:
        return {
            "check": self.name,
            "verdict": self.verdict,
            "summary": self.summary,
            "evidence": self.evidence,
        }


def compat_report(
    store: Store, registry: Registry, model: str, live: str, target: str
) -> CompatReport:
    """Can ``target`` take ``live``'s traffic, for every registered consumer?"""
    a = registry.get(f"{model}@{live}")
    b = registry.get(f"{model}@{target}")
    consumers = list_consumers(store, model)
    return diff_contracts(
        a.manifest.contract, b.manifest.contract, consumers, live_name=a.ref, target_name=b.ref
    )


def compat_check(store: Store, registry: Registry, model: str, live: str, target: str) -> Check:
    report = compat_report(store, registry, model, live, target)
    return Check(
        "compat", "pass" if report.compatible else "fail", report.summary(), report.to_dict()
    )


def replay_check(
    store: Store, registry: Registry, model: str, target: str, policy: Replay,
    baseline: str | None = None,
) -> Check:  # fmt: skip
    """Replay up to ``policy.requests`` captured requests against ``target`` in-process.

    ``baseline``: the release whose traffic ``target`` would take. It is replayed on the
    same requests beside the target, and the latency check compares the two replays (never
    a replay with telemetry from live load: see :mod:`backout.proof.replay`).
    """
    if not policy.allowed:
        return Check("replay", "skipped", "replay is turned off by the policy")
    if not load_captures(store, model, limit=1):
        return Check("replay", "skipped", f"no captured requests of {model} yet: nothing to replay")
    limits = Limits(max_error_rate=policy.max_error_rate, max_latency_ratio=policy.max_latency_ratio,
                    min_agreement=policy.min_agreement)  # fmt: skip
    try:
        report = replay(
            store,
            registry,
            registry.blobs,
            f"{model}@{target}",
            limit=policy.requests,
            limits=limits,
            baseline=baseline,
        )
    except BackoutError as exc:  # the target cannot even load: that is a failed proof
        return Check("replay", "fail", f"{model}@{target} could not be replayed: {exc.message}")
    d = report.to_dict()
    d.pop("latencies_ms", None)
    return Check("replay", "pass" if report.within_envelope else "fail", report.summary(), d)


def proven(store: Store, model: str, digest: str) -> int | None:
    """The event that recorded a passed load check of the release with ``digest``, if any.

    Only passes are remembered: a release that failed (a timeout on a busy host, a library
    installed since) is checked again the next time it is asked to take traffic.
    """
    with store.read() as conn:
        for e in audit.list_events(conn, model, kinds=("load.pass",), newest_first=True):
            if (e.data.get("evidence") or {}).get("digest") == digest:
                return e.seq
    return None


def load_check(
    store: Store, registry: Registry, ref: str, *, prober: Prober, timeout_s: float
) -> Check:
    """Does ``ref`` load and answer its contract's example, in a fresh process, in time?"""
    rel = registry.get(ref)
    seq = proven(store, rel.model, rel.digest)
    if seq is not None:
        return Check("load", "pass", f"{ref} loaded and answered before (event {seq}): not loaded again",
                     {"digest": rel.digest, "cached": True, "event": seq})  # fmt: skip
    probe = prober(rel.manifest, registry.blobs, timeout_s=timeout_s)
    evidence = {"digest": rel.digest, "cached": False, **probe.to_dict()}
    if probe.ok:
        return Check("load", "pass", f"{ref} {probe.detail} in {probe.seconds:.1f} s", evidence)
    return Check("load", "fail", f"it failed its load-and-answer check ({probe.stage}): {probe.detail}",
                 evidence)  # fmt: skip
