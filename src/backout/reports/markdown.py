"""The words of an incident report: event titles, judge evidence, the story, the questions.

Everything here is a pure function of stored data (event payloads, an
:class:`~backout.reports.model.IncidentReport`), shared by the HTML and Markdown renderers.
The words are plain text (people and the store wrote much of them); :func:`markdown` passes
every one through :func:`escape_markdown`, as the HTML renderer passes them through
``html.escape``, so no actor, reason or summary can add a link, an image, a heading, raw
HTML or a table cell to a report.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from backout.judges.evidence import effect_detail
from backout.reports.model import Finding, IncidentReport, JudgeLine, TriggerInfo
from backout.store.audit import Event

_PHASE_TITLES = {
    "rolling-out": "Rollout step",
    "awaiting-approval": "Waiting for a human",
    "paused": "Paused",
    "completing": "Candidate at 100%",
    "rolling-back": "Rollback step",
    "verifying": "Verifying the target",
    "frozen": "Frozen",
    "succeeded": "Rollout succeeded",
    "rolled-back": "Rolled back and verified",
    "aborted": "Aborted",
    "unfrozen": "Freeze lifted",
}


# Markdown's inline punctuation (CommonMark lets any ASCII punctuation be backslash-escaped):
# emphasis, code, links and images, raw HTML and entities, GFM tables and strikethrough.
_MD_INLINE = re.compile(r"([\\`*_\[\]<|~&])")
# What starts a block where a line or a list item begins: a heading, a quote, a list, a
# setext underline.
_MD_BLOCK_START = re.compile(r"^(\d{1,9})([.)])|^([-+=#>])")


def escape_markdown(text: object, *, starts_line: bool = False) -> str:
    """``text`` as literal Markdown inline text: on one line, with every character that
    could start markup backslash-escaped, so it renders as exactly what was written.
    ``starts_line``: the text opens a paragraph or a list item, where ``1.``, ``-``, ``#``
    or ``>`` would start a block."""
    flat = _MD_INLINE.sub(r"\\\1", " ".join(str(text).split()))
    if not starts_line:
        return flat
    return _MD_BLOCK_START.sub(lambda g: f"{g[1]}\\{g[2]}" if g[1] else f"\\{g[3]}", flat)


# -- small formats -------------------------------------------------------------------------


def duration(seconds: float | None) -> str:
    """``4.2 s``, ``1 min 05 s``, ``2 h 03 min``; an em dash when unknown."""
    if seconds is None or math.isnan(seconds):
        return "—"
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 60:
        return f"{seconds:.0f} s"
    s = round(seconds)
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


def relative(at: float, zero: float) -> str:
    """Seconds from the trigger, signed: ``T−35 s``, ``T+0 s``, ``T+1 min 15 s``."""
    d = at - zero
    sign = "−" if d < -0.05 else "+"
    return f"T{sign}{duration(abs(d)) if abs(d) >= 0.05 else '0 s'}"


def clock(at: float, *, date: bool = False) -> str:
    """UTC wall-clock time of ``at``."""
    t = datetime.fromtimestamp(at, UTC)
    return t.strftime("%Y-%m-%d %H:%M:%S UTC" if date else "%H:%M:%S")


def weights(w: Mapping[str, float]) -> str:
    """``1.4.0 75% · 1.5.0 25%``, biggest first."""
    return " · ".join(f"{v} {p:g}%" for v, p in sorted(w.items(), key=lambda kv: -kv[1]) if p > 0)


def percent(rate: float | None) -> str:
    return "—" if rate is None else f"{rate:.2%}"


def _num(v: Any) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f


def _g(v: Any) -> str:
    f = _num(v)
    if f is None:
        return str(v)
    if math.isinf(f):
        return "∞"
    if math.isnan(f):
        return "n/a"
    return f"{f:.3g}"


# -- evidence ------------------------------------------------------------------------------


def judge_lines(evidence: Mapping[str, Any] | None) -> tuple[JudgeLine, ...]:
    """Readable lines for a gate result's judgements or a list of trigger results."""
    if not evidence:
        return ()
    lines = []
    for j in evidence.get("judgements") or ():
        parts = []
        # Bounds that do not exist yet are said so, never shown as infinities.
        effect = effect_detail(
            j.get("estimate"), j.get("lower"), j.get("upper"), j.get("tolerance")
        )
        if effect:
            parts.append(effect)
        threshold = _num(j.get("threshold"))
        if j.get("e_value") is not None and not (threshold is not None and math.isinf(threshold)):
            # (integrity has no threshold: one breach fails it, and its summary says so)
            parts.append(f"e-value {_g(j.get('e_value'))} (fails at {_g(j.get('threshold'))})")
        if j.get("samples") is not None:
            parts.append(
                f"{int(j.get('samples') or 0):,} vs {int(j.get('baseline_samples') or 0):,} requests"
            )
        lines.append(
            JudgeLine(
                judge=str(j.get("judge", "judge")),
                verdict=str(j.get("verdict", "")),
                summary=str(j.get("summary", "")),
                detail=" · ".join(parts),
            )
        )
    for t in evidence.get("triggers") or ():
        lines.append(
            JudgeLine(
                judge=str(t.get("name") or t.get("kind") or "trigger"),
                verdict="fired" if t.get("fired", True) else "quiet",
                summary=str(t.get("summary", "")),
            )
        )
    return tuple(lines)


def trigger_info(trigger: Mapping[str, Any] | None, reason: str, actor: str) -> TriggerInfo:
    """What started the rollback, from the operation's stored ``trigger`` evidence."""
    if not trigger:
        return TriggerInfo("manual", reason or f"rolled back by hand by {actor}")
    gate = trigger.get("gate")
    if isinstance(gate, Mapping):
        summary = str(gate.get("summary") or gate.get("note") or reason)
        # GateResult.summary reads "gate fail: <judges>"; the badge already says which.
        summary = summary.removeprefix(f"gate {gate.get('verdict', '')}: ")
        return TriggerInfo("gate", summary, judge_lines(gate))
    lines = judge_lines(trigger)
    if lines:
        return TriggerInfo("trigger", "; ".join(line.summary for line in lines), lines)
    return TriggerInfo("trigger", reason)


def decision_title(e: Event) -> tuple[str, str, str | None, tuple[JudgeLine, ...]]:
    """Title, detail, verdict and judge lines of one timeline row."""
    d = e.data
    evidence = d.get("evidence") if isinstance(d.get("evidence"), Mapping) else {}
    verdict = d.get("verdict") or (evidence or {}).get("verdict")
    judges = judge_lines(evidence)
    if e.kind == "rollout.started":
        steps = ", ".join(f"{float(s):g}%" for s in d.get("steps") or ())
        return (
            f"Rollout of {d.get('candidate', '?')} started",
            e.reason + (f" — steps {steps}" if steps else ""),
            None,
            (),
        )
    if e.kind == "rollback.started":
        trig = trigger_info(d.get("trigger"), e.reason, e.actor)
        detail = f"{d.get('from', '?')} → {d.get('target', '?')}: {e.reason}"
        if d.get("warm"):
            detail += f" ({d['warm']})"
        return (
            f"{str(d.get('mode', '')).capitalize()} rollback started",
            detail,
            "fail" if trig.kind != "manual" else None,
            trig.judges,
        )
    if e.kind.startswith("phase."):
        to = e.kind.removeprefix("phase.")
        title = _PHASE_TITLES.get(to, to)
        if to == "rolling-out" and d.get("from") == "rolling-out":
            title = f"Gate passed: step {int(d.get('step', 0)) + 1}"
        elif to == "rolling-back" and d.get("from") == "rolling-back":
            title = f"Rollback step {int(d.get('step', 0)) + 1}"
        if to == "aborted" and d.get("kind") in ("rollout", "rollback"):
            title = f"{str(d['kind']).capitalize()} aborted"
        extra = ""
        if (
            evidence
            and "requests" in evidence
            and "seconds" in evidence
            and f"{int(evidence['requests']):,}" not in e.reason
        ):
            extra = f" ({int(evidence['requests']):,} requests in {duration(_num(evidence['seconds']))})"
        if evidence and evidence.get("note"):
            extra = f" ({evidence['note']})"
        return title, e.reason + extra, verdict, judges
    if e.kind in ("traffic.applied", "traffic.set", "deploy.first"):
        title = {"traffic.set": "Traffic changed", "deploy.first": "First deploy"}.get(
            e.kind, "Traffic applied"
        )
        return title, e.reason, None, ()
    if e.kind == "escalation":
        return f"Escalated to {d.get('contact', '?')}", e.reason, None, ()
    if e.kind == "release.marked-good":
        return f"{d.get('version', '?')} marked known-good", e.reason, None, ()
    if e.kind.startswith(("compat.", "replay.")):
        f = finding_from(e)
        name = "Compatibility gate" if e.kind.startswith("compat.") else "Replay"
        return name, f.summary, f.verdict, judges
    summary = d.get("summary")
    title = e.kind.replace(".", " ").replace("-", " ").capitalize()
    return title, str(summary or e.reason), verdict, judges


def finding_from(e: Event) -> Finding:
    """A compatibility or replay verdict, rendered generically from its event."""
    d = e.data
    details: list[str] = []
    for key in ("problems", "findings", "breaks", "differences", "consumers"):
        items = d.get(key)
        if isinstance(items, Sequence) and not isinstance(items, str):
            details.extend(_item(x) for x in items)
    for key, value in d.items():
        if key in ("operation", "summary", "verdict", "evidence") or isinstance(value, list | dict):
            continue
        details.append(f"{key}: {value}")
    ok = d.get("ok")
    verdict = str(d.get("verdict") or ("pass" if ok is True else "fail" if ok is False else "done"))
    return Finding(
        e.at.timestamp(), e.kind, verdict, str(d.get("summary") or e.reason), tuple(details)
    )


def _item(x: Any) -> str:
    if isinstance(x, Mapping):
        return str(
            x.get("summary") or x.get("message") or ", ".join(f"{k}: {v}" for k, v in x.items())
        )
    return str(x)


# -- the story and the questions -----------------------------------------------------------


def what_happened(r: IncidentReport) -> str:
    """One paragraph, from the data, that tells the incident to someone who was asleep."""
    when = clock(r.started_at, date=True)
    s: list[str] = []
    ro = r.rollout
    if ro is not None and ro.active_at_trigger:
        pct = ro.steps[ro.step] if ro.step < len(ro.steps) else None
        at = f" at {pct:g}% of traffic" if pct is not None else ""
        s.append(
            f"On {when}, {r.model}@{ro.candidate} was being rolled out (step {ro.step + 1} of "
            f"{len(ro.steps) or '?'}{at}, replacing {ro.stable})."
        )
    else:
        s.append(f"On {when}, {r.model}@{r.from_version} was serving traffic.")
    detect = (
        f", {duration(r.time_to_detect)} after {r.detect_basis}"
        if r.time_to_detect is not None
        else ""
    )
    rollback = f"a{'n' if r.mode == 'emergency' else ''} {r.mode} rollback to {r.target}"
    if r.kind == "freeze":
        what = "The rollout gate failed" if r.trigger.kind == "gate" else "Something went wrong"
        who = "the controller" if r.actor == "controller" else r.actor
        s.append(
            f"{what} ({r.trigger.summary}){detect}, but no rollback was safe, so {who} froze "
            f"the model with traffic where it was and called people: {r.reason}."
        )
    elif r.trigger.kind == "manual":
        s.append(f"{r.actor} started {rollback} by hand{detect}: {r.trigger.summary}.")
    else:
        what = "The rollout gate failed" if r.trigger.kind == "gate" else "A trigger fired"
        who = "the controller" if r.actor == "controller" else r.actor
        s.append(f"{what} ({r.trigger.summary}) and {who} started {rollback}{detect}.")
    if r.kind == "freeze" and r.recovered_at is None:
        pass  # the freeze sentence says traffic stayed where it was
    elif r.recovered_at is not None:
        moves = sum(1 for at, _ in r.weights if at >= r.started_at - 1)
        if (r.time_to_recover or 0.0) < 0.5:
            s.append(f"All traffic moved to {r.target} at once.")
        else:
            how = "in one move" if moves <= 1 else f"in {moves} moves"
            s.append(
                f"All traffic was back on {r.target} {duration(r.time_to_recover)} later, {how}."
            )
    else:
        s.append(f"Traffic never reached 100% on {r.target}.")
    if r.outcome == "rolled-back" and r.ended_at is not None:
        s.append(
            f"{r.target} was verified healthy {duration(r.time_to_verified)} after the trigger."
        )
    elif r.outcome == "frozen" and r.kind != "freeze":
        s.append("Both releases looked unhealthy, so the model was frozen and people were called.")
    elif r.outcome == "unfrozen":
        s.append("The freeze was later lifted by hand (`backout unfreeze`).")
    elif r.outcome == "aborted":
        s.append(f"The rollback was aborted: {_last_reason(r)}.")
    elif r.outcome == "in progress":
        s.append(f"The rollback was still {r.phase} when this report was written.")
    elif r.kind == "freeze" and r.outcome == "frozen":
        s.append(f"The model was still frozen when this report was written ({r.phase}).")
    s.append(
        f"{r.requests_affected:,} requests reached {r.from_version} during the incident and "
        f"{r.requests_failed:,} requests failed ({r.failed_on_bad:,} of them on {r.from_version})."
    )
    if r.escalations:
        s.append(f"It was escalated to {', '.join(r.escalations)}.")
    return " ".join(s)


def headline(r: IncidentReport) -> str:
    """``fraud rolled back from 1.5.0 to 1.4.0``, or what froze."""
    if r.kind == "freeze":
        return f"{r.model} frozen while rolling out {r.from_version} (stable {r.target})"
    return f"{r.model} rolled back from {r.from_version} to {r.target}"


def trigger_words(r: IncidentReport) -> str:
    """What kind of trigger it was, in words: ``rollout gate failed``."""
    return {"gate": "rollout gate failed", "trigger": "trigger fired"}.get(
        r.trigger.kind, f"by hand ({r.actor})"
    )


def _last_reason(r: IncidentReport) -> str:
    ends = [d for d in r.timeline if d.kind == f"phase.{r.outcome}"]
    return ends[-1].detail if ends else r.outcome


def questions(r: IncidentReport) -> list[str]:
    """Open questions for the post-incident review, each raised by something in the data."""
    q: list[str] = []
    ro = r.rollout
    if ro is not None and ro.active_at_trigger:
        for i in range(min(ro.step, len(ro.steps))):
            passed = [
                d
                for d in r.timeline
                if d.kind in ("phase.rolling-out", "phase.completing")
                and d.verdict == "pass"
                and d.at >= ro.started_at
                and _step_of(d) == i + 1
            ]
            said = "; ".join(j.summary for j in passed[0].judges) if passed else ""
            why = f" Its gate saw: {said}." if said else ""
            q.append(f"Why did {ro.candidate} pass the {ro.steps[i]:g}% step?{why}")
        if r.trigger.kind == "trigger":
            q.append(
                f"A trigger, not the rollout gate, caught {ro.candidate}: should the gate judge "
                "what the trigger watched, so it fails earlier?"
            )
        if ro.bake_s is not None and (r.time_to_detect or 0) > ro.bake_s:
            q.append(
                f"Detection took {duration(r.time_to_detect)}, longer than a step's bake of "
                f"{duration(ro.bake_s)}: why did the gate need more than one bake?"
            )
    if r.trigger.kind == "manual":
        q.append(
            f"{r.actor} rolled back by hand: what did they see that no trigger or gate caught?"
        )
    if r.warm_note:
        q.append(
            f"{r.target} was not warm when the rollback started ({r.warm_note}): how long did "
            "loading it take, and should it stay in the warm pool?"
        )
    for contact in r.escalations:
        q.append(f"The incident was escalated to {contact}: what held the recovery up?")
    if r.kind == "freeze":
        q.append(
            f"No rollback to {r.target} was safe ({r.reason}): what would have made the way "
            f"back safe, and is {r.target} still a sound rollback point?"
        )
    elif r.outcome == "frozen":
        q.append(
            "Both releases looked unhealthy and the model was frozen: is the cause upstream "
            "(input data, a dependency) rather than in a release?"
        )
    if r.outcome == "aborted":
        q.append(
            f"The rollback was aborted ({_last_reason(r)}): is {r.target} still a sound rollback point?"
        )
    if r.outcome == "in progress":
        q.append(
            "The rollback had not finished when this report was written: rebuild it once it has."
        )
    if r.mode == "emergency" and r.trigger.kind != "manual":
        q.append(
            "The rollback moved all traffic at once, with no gate on the way back: was "
            "emergency mode the right call for this trigger?"
        )
    if r.requests_failed:
        q.append(
            f"{r.requests_failed:,} requests failed during the incident: which consumers did they "
            "reach, and did those retry?"
        )
    if not r.compat:
        q.append(
            f"The compatibility gate left no verdict: was {r.target}'s contract checked against "
            f"{r.from_version} and every registered consumer?"
        )
    elif any(f.verdict in ("fail", "failed", "breaking") for f in r.compat):
        q.append("The compatibility gate found breaking changes: why did traffic move anyway?")
    if not r.replay:
        q.append(
            f"No replay verdict was recorded: was {r.target} proven on recorded traffic before "
            "it took traffic back?"
        )
    elif any(f.verdict in ("fail", "failed") for f in r.replay):
        q.append(
            f"The replay of recorded traffic against {r.target} failed: why did it still take traffic?"
        )
    return q


def _step_of(d: Any) -> int | None:
    # "Gate passed: step 2" — the row's title carries the step the gate moved to.
    title = str(d.title)
    if d.kind == "phase.completing":
        return None
    tail = title.rsplit(" ", 1)[-1]
    return int(tail) - 1 if tail.isdigit() else None


# -- Markdown ------------------------------------------------------------------------------


def markdown(r: IncidentReport) -> str:
    """The short Markdown summary; every word from the data is escaped (see the module)."""
    m = escape_markdown
    z = r.started_at
    lines = [
        f"# Incident {r.id}: {m(headline(r))}",
        "",
        f"**Outcome:** {m(r.outcome)} · **Mode:** {m(r.mode)} · **Started:** "
        f"{clock(z, date=True)} by {m(r.actor)}",
        "",
        f"**Trigger:** {m(trigger_words(r))}: {m(r.trigger.summary)}",
        "",
        m(r.summary, starts_line=True),
        "",
        "| time to detect | time to recover | time to verified | requests affected | requests failed |",
        "| --- | --- | --- | --- | --- |",
        f"| {duration(r.time_to_detect)} | {duration(r.time_to_recover)} | "
        f"{duration(r.time_to_verified)} | {r.requests_affected:,} | {r.requests_failed:,} |",
        "",
        f"Time to detect counts from {m(r.detect_basis)}.",
        "",
        "## Decisions",
        "",
    ]
    for d in r.timeline:
        w = f" → {m(weights(d.weights))}" if d.weights else ""
        verdict = f" \\[{m(d.verdict)}\\]" if d.verdict else ""
        lines.append(
            f"- `{relative(d.at, z)}` **{m(d.title)}**{verdict} ({m(d.actor)}){w}: {m(d.detail)}"
        )
    for name, found in (("Compatibility gate", r.compat), ("Replay", r.replay)):
        lines += ["", f"## {name}", ""]
        if not found:
            lines.append("not run")
        for f in found:
            lines.append(f"- **{m(f.verdict)}**: {m(f.summary)}")
    lines += ["", "## Open questions", ""]
    lines += [f"{i}. {m(text, starts_line=True)}" for i, text in enumerate(r.questions, 1)]
    return "\n".join(lines) + "\n"
