"""The HTML incident report: one self-contained page a person is glad to read.

Inline CSS, plots as SVG inside ``data:`` URLs, no script, no font, no image fetched: the file
can be mailed, attached to a ticket or opened offline years later and look the same.
"""

from __future__ import annotations

import base64
from html import escape

from backout import __version__ as _version
from backout.reports import markdown as text
from backout.reports import plots
from backout.reports.model import Decision, Finding, IncidentReport, JudgeLine

_BADGES = {
    "rolled-back": ("rolled back", "ok"),
    "aborted": ("rollback aborted", "warn"),
    "frozen": ("frozen", "bad"),
    "unfrozen": ("freeze lifted", "warn"),
    "in progress": ("in progress", "info"),
}
_VERDICT_CLASS = {
    "pass": "ok", "passed": "ok", "compatible": "ok", "quiet": "ok",
    "fail": "bad", "failed": "bad", "fired": "bad", "breaking": "bad",
    "inconclusive": "warn", "continue": "info",
}  # fmt: skip

CSS = """
:root { --ink:#1f2430; --muted:#6b7280; --line:#e6e8ec; --bg:#f6f7f9; --card:#fff;
  --ok:#1f7a4d; --ok-bg:#e3f4ea; --bad:#b42336; --bad-bg:#fbe4e7; --warn:#8a5a00;
  --warn-bg:#fdf0d5; --info:#1f5f99; --info-bg:#e2eefa; }
* { box-sizing: border-box; }
html { background: var(--bg); }
body { margin: 0; color: var(--ink); font: 15px/1.55 system-ui, -apple-system, "Segoe UI",
  Roboto, "Helvetica Neue", "DejaVu Sans", Arial, sans-serif; -webkit-font-smoothing: antialiased; }
header { background: #161b26; color: #fff; padding: 28px 0 26px; }
.wrap { max-width: 1160px; margin: 0 auto; padding: 0 32px; }
.eyebrow { text-transform: uppercase; letter-spacing: .08em; font-size: 12px; color: #aab1bf; }
h1 { font-size: 30px; line-height: 1.2; margin: 6px 0 10px; font-weight: 650; }
h1 .arrow { color: #aab1bf; font-weight: 400; }
.meta { color: #cfd5df; font-size: 14px; display: flex; flex-wrap: wrap; gap: 6px 18px; }
.meta b { color: #fff; font-weight: 600; }
.badge { display: inline-block; border-radius: 999px; padding: 2px 10px; font-size: 12px;
  font-weight: 650; letter-spacing: .02em; white-space: nowrap; vertical-align: 2px; }
header .badge { font-size: 13px; padding: 4px 12px; margin-left: 10px; vertical-align: 5px; }
.ok { background: var(--ok-bg); color: var(--ok); } .bad { background: var(--bad-bg); color: var(--bad); }
.warn { background: var(--warn-bg); color: var(--warn); } .info { background: var(--info-bg); color: var(--info); }
.plain { background: #eef0f3; color: #4b5260; }
main.wrap { padding-top: 30px; padding-bottom: 40px; }
section { margin: 0 0 30px; }
h2 { font-size: 13px; text-transform: uppercase; letter-spacing: .08em; color: var(--muted);
  margin: 0 0 12px; font-weight: 650; }
.card { background: var(--card); border: 1px solid var(--line); border-radius: 10px; padding: 20px 24px; }
.story { font-size: 17px; line-height: 1.65; max-width: 78ch; margin: 0; }
.trigger { margin-top: 14px; padding-top: 14px; border-top: 1px solid var(--line); font-size: 14px; }
.numbers { display: grid; grid-template-columns: repeat(5, 1fr); gap: 14px; }
.stat { background: var(--card); border: 1px solid var(--line); border-radius: 10px; padding: 16px 18px; }
.stat .v { font-size: 28px; font-weight: 650; line-height: 1.15; font-variant-numeric: tabular-nums; }
.stat .k { font-size: 13px; font-weight: 600; margin-top: 4px; }
.stat .h { font-size: 12px; color: var(--muted); margin-top: 2px; }
.stat.alert .v { color: var(--bad); }
figure { margin: 0 0 14px; background: var(--card); border: 1px solid var(--line);
  border-radius: 10px; padding: 14px 16px 8px; }
figcaption { font-weight: 600; font-size: 14px; margin-bottom: 4px; }
figcaption span { color: var(--muted); font-weight: 400; }
figure img { display: block; width: 100%; height: auto; }
table { width: 100%; border-collapse: collapse; background: var(--card); font-size: 14px; }
.tablecard { padding: 0; overflow: hidden; }
th { text-align: left; font-size: 12px; color: var(--muted); font-weight: 600; text-transform: uppercase;
  letter-spacing: .05em; padding: 10px 14px; border-bottom: 1px solid var(--line); background: #fafbfc; }
td { padding: 11px 14px; border-bottom: 1px solid var(--line); vertical-align: top; }
tr:last-child td { border-bottom: 0; }
tr.key td { background: #fff7f7; } tr.key-ok td { background: #f5fbf7; }
td.time { white-space: nowrap; font-variant-numeric: tabular-nums; width: 118px; }
td.time small { display: block; color: var(--muted); font-size: 12px; }
td.what { width: 250px; font-weight: 600; }
td.what code { display: block; color: var(--muted); font-weight: 400; margin-top: 3px; }
td.who { width: 110px; color: #4b5260; }
.detail { color: #333a47; }
.weights { margin-top: 6px; font-size: 13px; color: #4b5260; }
.chip { display: inline-block; width: 9px; height: 9px; border-radius: 2px; margin: 0 5px 0 0; }
.judges { list-style: none; margin: 8px 0 0; padding: 0; }
.judges li { padding: 6px 0 0; font-size: 13.5px; }
.judges .n { font-weight: 600; margin: 0 6px; }
.judges .d { display: block; color: var(--muted); font-size: 12px; margin-left: 2px; }
.two { display: grid; grid-template-columns: 1fr 1fr; gap: 14px; }
.two h3 { margin: 0 0 8px; font-size: 15px; }
.muted { color: var(--muted); }
ul.found { margin: 6px 0 0; padding-left: 18px; color: #4b5260; font-size: 13.5px; }
ol.questions { margin: 0; padding-left: 22px; } ol.questions li { margin: 0 0 8px; padding-left: 4px; }
footer { color: var(--muted); font-size: 12px; padding: 0 0 36px; }
code { font: 12px/1.4 ui-monospace, "DejaVu Sans Mono", Menlo, monospace; }
"""


def render(r: IncidentReport) -> str:
    """The whole page."""
    title = (
        f"Incident {r.id} · {text.headline(r)}"
        if r.kind == "freeze"
        else f"Incident {r.id} · {r.model} · {r.from_version} → {r.target}"
    )
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{escape(title)}</title>
<style>{CSS}</style>
</head>
<body>
{_header(r)}
<main class="wrap">
<section id="what-happened"><h2>What happened</h2><div class="card"><p class="story">{escape(r.summary)}</p>
<div class="trigger"><span class="badge {_cls(r.trigger.kind)}">{escape(text.trigger_words(r))}</span>
{escape(r.trigger.summary)}{_judges(r.trigger.judges) if r.trigger.kind == "gate" else ""}</div></div></section>
<section id="numbers"><h2>Key numbers</h2>{_numbers(r)}</section>
<section id="plots"><h2>Across the incident</h2>{_plots(r)}</section>
<section id="timeline"><h2>Decision timeline</h2>{_timeline(r)}</section>
<section id="gates"><h2>Compatibility gate and replay</h2><div class="two">
{_findings("Compatibility gate", r.compat)}{_findings("Replay", r.replay)}</div></section>
<section id="questions"><h2>Open questions for the review</h2><div class="card"><ol class="questions">
{"".join(f"<li>{escape(q)}</li>" for q in r.questions) or "<li>None raised by the data.</li>"}
</ol></div></section>
</main>
<footer class="wrap">{_footer(r)}</footer>
</body>
</html>
"""


def _cls(verdict: str | None) -> str:
    v = (verdict or "").lower()
    if v in _VERDICT_CLASS:
        return _VERDICT_CLASS[v]
    return {"gate": "bad", "trigger": "bad", "manual": "info"}.get(v, "plain")


def _header(r: IncidentReport) -> str:
    label, cls = _BADGES.get(r.outcome, (r.outcome, "plain"))
    by = f"started by <b>{escape(r.actor)}</b>"
    if r.kind == "freeze":
        heading = (
            f'{escape(r.model)} <span class="arrow">frozen while rolling out</span> '
            f'{escape(r.from_version)} <span class="arrow">· stable</span> {escape(r.target)}'
        )
        how = "<span><b>frozen</b>: no rollback was safe</span>"
    else:
        heading = (
            f'{escape(r.model)} <span class="arrow">rolled back</span> {escape(r.from_version)}\n'
            f'<span class="arrow">→</span> {escape(r.target)}'
        )
        how = f"<span><b>{escape(r.mode)}</b> rollback</span>"
    return f"""<header><div class="wrap">
<div class="eyebrow">backout incident report · incident {r.id}</div>
<h1>{heading}<span class="badge {cls}" id="outcome">{escape(label)}</span></h1>
<div class="meta"><span>model <b>{escape(r.model)}</b></span><span>incident <b>#{r.id}</b></span>
{how}<span>{escape(text.clock(r.started_at, date=True))}</span>
<span>{by}</span></div></div></header>"""


def _numbers(r: IncidentReport) -> str:
    ttd = r.time_to_detect
    stats = [
        (text.duration(ttd), "time to detect", f"from {r.detect_basis} to the trigger", False),
        (text.duration(r.time_to_recover), "time to recover",
         f"trigger to 100% of traffic on {r.target}", r.recovered_at is None),
        (text.duration(r.time_to_verified), "time to verified",
         f"trigger to {r.target} verified healthy" if r.time_to_verified is not None
         else f"not verified: {_BADGES.get(r.outcome, (r.outcome, ''))[0]}", False),
        (f"{r.requests_affected:,}", "requests affected",
         f"answered by {r.from_version} before recovery", False),
        (f"{r.requests_failed:,}", "requests failed",
         f"{r.failed_on_bad:,} on {r.from_version}; baseline {text.percent(r.baseline_error_rate)}",
         r.requests_failed > 0),
    ]  # fmt: skip
    cells = "".join(
        f'<div class="stat{" alert" if alert else ""}"><div class="v">{escape(v)}</div>'
        f'<div class="k">{escape(k)}</div><div class="h">{escape(h)}</div></div>'
        for v, k, h, alert in stats
    )
    return f'<div class="numbers">{cells}</div>'


def _plots(r: IncidentReport) -> str:
    smooth = text.duration(r.series[0].smooth_s) if r.series else "window"
    charts = (
        ("traffic", "Traffic weights", "each release's share, as the route table set it",
         plots.traffic_svg(r)),
        ("errors", "Error rate", f"per release, over the trailing {smooth}", plots.error_svg(r)),
        ("latency", "Latency", f"p50 solid, p99 dashed, per release, over the trailing {smooth}",
         plots.latency_svg(r)),
    )  # fmt: skip
    out = []
    for key, name, sub, svg in charts:
        data = base64.b64encode(svg.encode("utf-8")).decode("ascii")
        out.append(
            f'<figure id="plot-{key}"><figcaption>{name} <span>· {escape(sub)}</span></figcaption>'
            f'<img alt="{escape(name)} of every release across incident {r.id}" '
            f'src="data:image/svg+xml;base64,{data}"></figure>'
        )
    return "".join(out)


def _timeline(r: IncidentReport) -> str:
    colors = plots.colors(r)
    rows = []
    for d in r.timeline:
        mark = ""
        if d.kind == "rollback.started" or d.verdict in ("fail", "fired"):
            mark = " key"
        elif d.kind == f"phase.{r.outcome}":
            mark = " key-ok" if r.outcome == "rolled-back" else " key"
        rows.append(
            f'<tr class="event{mark}" data-kind="{escape(d.kind)}">'
            f'<td class="time">{escape(text.relative(d.at, r.started_at))}'
            f"<small>{escape(text.clock(d.at))}</small></td>"
            f'<td class="what">{escape(d.title)}{_verdict(d.verdict)}<code>{escape(d.kind)}</code></td>'
            f'<td class="who">{escape(d.actor)}</td>'
            f'<td><div class="detail">{escape(d.detail)}</div>{_weights(d, colors)}'
            f"{_judges(d.judges)}</td></tr>"
        )
    body = "".join(rows) or '<tr><td colspan="4" class="muted">No events recorded.</td></tr>'
    return (
        '<div class="card tablecard"><table id="timeline-table"><thead><tr><th>when</th>'
        "<th>decision</th><th>who</th><th>what and why</th></tr></thead>"
        f"<tbody>{body}</tbody></table></div>"
    )


def _verdict(v: str | None) -> str:
    return f' <span class="badge {_cls(v)}">{escape(v)}</span>' if v else ""


def _weights(d: Decision, colors: dict[str, str]) -> str:
    if not d.weights:
        return ""
    parts = [
        f'<span class="chip" style="background:{colors.get(v, "#8a8f98")}"></span>'
        f"{escape(v)} {p:g}%"
        for v, p in sorted(d.weights.items(), key=lambda kv: -kv[1])
        if p > 0
    ]
    return f'<div class="weights">traffic → {" &nbsp; ".join(parts)}</div>'


def _judges(judges: tuple[JudgeLine, ...]) -> str:
    if not judges:
        return ""
    items = "".join(
        f'<li><span class="badge {_cls(j.verdict)}">{escape(j.verdict)}</span>'
        f'<span class="n">{escape(j.judge)}</span>{escape(j.summary)}'
        + (f'<span class="d">{escape(j.detail)}</span>' if j.detail else "")
        + "</li>"
        for j in judges
    )
    return f'<ul class="judges">{items}</ul>'


def _findings(name: str, found: list[Finding]) -> str:
    if not found:
        return (
            f'<div class="card"><h3>{name} <span class="badge plain">not run</span></h3>'
            '<div class="muted">No verdict was recorded for this incident.</div></div>'
        )
    parts = []
    for f in found:
        details = "".join(f"<li>{escape(x)}</li>" for x in f.details[:12])
        parts.append(
            f'<div><span class="badge {_cls(f.verdict)}">{escape(f.verdict)}</span> '
            f"{escape(f.summary)}"
            + (f'<ul class="found">{details}</ul>' if details else "")
            + "</div>"
        )
    return f'<div class="card"><h3>{name}</h3>{"".join(parts)}</div>'


def _footer(r: IncidentReport) -> str:
    first, last, head = r.chain
    chain = (
        f"audit events {first}–{last}, last hash <code>{escape(head[:16])}…</code> "
        f"(check with <code>backout history {escape(r.model)} --verify</code>)"
        if head
        else "no audit events"
    )
    return f"Generated by backout {escape(_version)} from the store: {chain}."
