"""The plots of an incident report, drawn with matplotlib as SVG text.

Three charts share one time axis — seconds from the trigger — and the same marks: the
trigger, the moment the target held all the traffic, the verification, and the stretch
from the start of the trouble to recovery, shaded. Figures are made with
:class:`matplotlib.figure.Figure` directly (no pyplot, no global state, no display), so
reports can be drawn from any thread or process.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Sequence

from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, PercentFormatter

from backout.reports.model import IncidentReport

BAD = "#d1495b"  # the release rolled back from
GOOD = "#2a7ab0"  # the rollback target
OTHERS = ("#7b6fd0", "#e29a2d", "#3a9e6f", "#8a8f98")
INK = "#1f2430"
MUTED = "#6b7280"
GRID = "#e6e8ec"
SHADE = "#fbe9eb"
_WIDTH_IN = 10.8  # the page's content column at 1280 px
_HEIGHT_IN = 2.7


def colors(report: IncidentReport) -> dict[str, str]:
    """One colour per release, the same on every chart and in the page's legends."""
    out = {report.from_version: BAD, report.target: GOOD}
    rest = [s.version for s in report.series if s.version not in out]
    rest += sorted({v for _, w in report.weights for v in w if v not in out and v not in rest})
    for i, v in enumerate(rest):
        out[v] = OTHERS[i % len(OTHERS)]
    return out


def traffic_svg(report: IncidentReport) -> str:
    """Each release's share of the traffic, as the route table set it."""

    def draw(ax: Axes, x: Callable[[float], float]) -> bool:
        if not report.weights:
            return False
        end = report.window[1]
        times = [x(at) for at, _ in report.weights] + [x(end)]
        for version, color in colors(report).items():
            ys = [w.get(version, 0.0) for _, w in report.weights]
            if not any(ys):
                continue
            ax.step(times, [*ys, ys[-1]], where="post", color=color, lw=2.2, label=version)
            ax.fill_between(times, [*ys, ys[-1]], step="post", color=color, alpha=0.08)
        ax.set_ylim(-3, 103)
        ax.yaxis.set_major_formatter(PercentFormatter(100, decimals=0))
        return True

    return _figure(report, "share of traffic", draw)


def error_svg(report: IncidentReport) -> str:
    """Each release's error rate per bin of batches."""

    def draw(ax: Axes, x: Callable[[float], float]) -> bool:
        drawn = False
        top = 0.0
        for s in report.series:
            ys = [math.nan if r is None else r * 100 for r in s.error_rate]
            if all(math.isnan(y) for y in ys):
                continue
            top = max(top, max(y for y in ys if not math.isnan(y)))
            ax.plot([x(t) for t in s.t], ys, color=colors(report)[s.version], lw=2, label=s.version)
            drawn = True
        ax.set_ylim(0, max(1.0, top * 1.15))
        ax.yaxis.set_major_formatter(PercentFormatter(100, decimals=1 if top < 5 else 0))
        return drawn

    return _figure(report, "error rate", draw)


def latency_svg(report: IncidentReport) -> str:
    """Each release's p50 (solid) and p99 (dashed) latency per bin of batches."""

    def draw(ax: Axes, x: Callable[[float], float]) -> bool:
        values: list[float] = []
        for s in report.series:
            color = colors(report)[s.version]
            for q, style, qs in (("p50", "-", s.p50_ms), ("p99", "--", s.p99_ms)):
                ys = [math.nan if v is None else v for v in qs]
                if all(math.isnan(y) for y in ys):
                    continue
                values += [y for y in ys if not math.isnan(y)]
                ax.plot([x(t) for t in s.t], ys, color=color, lw=2 if q == "p50" else 1.5,
                        ls=style, label=f"{s.version} {q}")  # fmt: skip
        if not values:
            return False
        lo, hi = min(values), max(values)
        if lo > 0 and hi / lo > 20:
            ax.set_yscale("log")
        else:
            ax.set_ylim(0, hi * 1.15)
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g} ms"))
        return True

    return _figure(report, "latency", draw)


def _figure(
    report: IncidentReport, ylabel: str, draw: Callable[[Axes, Callable[[float], float]], bool]
) -> str:
    zero = report.started_at
    span = report.window[1] - report.window[0]
    unit, unit_name = (60.0, "min") if span > 900 else (1.0, "s")

    def x(at: float) -> float:
        return (at - zero) / unit

    fig = Figure(figsize=(_WIDTH_IN, _HEIGHT_IN), dpi=100)
    # Fixed margins, not a layout engine: the three charts' time axes line up on the page.
    fig.subplots_adjust(left=0.075, right=0.86, top=0.88, bottom=0.19)
    fig.patch.set_alpha(0)
    ax = fig.add_subplot()
    _marks(ax, report, x)
    if not draw(ax, x):
        ax.text(0.5, 0.5, "no data in this window", transform=ax.transAxes, ha="center",
                va="center", color=MUTED, fontsize=11)  # fmt: skip
        ax.set_yticks([])
    ax.set_xlim(x(report.window[0]), x(report.window[1]))
    ax.set_xlabel(f"{unit_name} from the trigger", color=MUTED, fontsize=9)
    ax.set_ylabel(ylabel, color=MUTED, fontsize=9)
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:+g}" if v else "0"))
    _style(ax)
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        ax.legend(handles, labels, loc="upper left", bbox_to_anchor=(1.005, 1.0), frameon=False,
                  fontsize=9, labelcolor=INK)  # fmt: skip
    buf = io.StringIO()
    fig.savefig(buf, format="svg", metadata={"Date": None})
    return buf.getvalue()


def _marks(ax: Axes, r: IncidentReport, x: Callable[[float], float]) -> None:
    """Shade the trouble, draw the trigger, recovery and verification lines."""
    if r.detect_from is not None:
        end = r.recovered_at if r.recovered_at is not None else r.window[1]
        ax.axvspan(x(r.detect_from), x(end), color=SHADE, lw=0, zorder=0)
    if r.rollout is not None and r.rollout.active_at_trigger:
        for d in r.timeline:
            if d.kind in ("rollout.started", "phase.rolling-out") and d.at >= r.rollout.started_at:
                ax.axvline(x(d.at), color="#b8bcc6", lw=1, ls=":", zorder=1)
    marks: Sequence[tuple[float | None, str, str]] = (
        (r.started_at, BAD, "trigger"),
        (r.recovered_at, GOOD, "100% on target"),
        (r.ended_at if r.outcome == "rolled-back" else None, "#3a9e6f", "verified"),
    )
    near = 0.05 * (r.window[1] - r.window[0])  # closer than this, two labels would collide
    placed: list[tuple[float, str, str]] = []
    for at, color, label in marks:
        if at is None or math.isnan(at):
            continue
        ax.axvline(x(at), color=color, lw=1.2, ls="--", zorder=2)
        if placed and at - placed[-1][0] < near:
            placed[-1] = (placed[-1][0], placed[-1][1], f"{placed[-1][2]} · {label}")
        else:
            placed.append((at, color, label))
    for at, color, label in placed:
        ax.annotate(label, (x(at), 1.0), xycoords=("data", "axes fraction"), xytext=(0, 3),
                    textcoords="offset points", ha="center", va="bottom", fontsize=8,
                    color=color, annotation_clip=False)  # fmt: skip


def _style(ax: Axes) -> None:
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    for side in ("left", "bottom"):
        ax.spines[side].set_color(GRID)
    ax.tick_params(colors=MUTED, labelsize=8.5, length=0)
    ax.grid(True, color=GRID, lw=0.8)
    ax.set_axisbelow(True)
