"""Small inline SVG charts for the dashboard, drawn on the server from telemetry batches.

For :mod:`backout.api.dashboard_data`: traffic share, error rate and p99 latency per release
over the last minutes, in buckets of a few seconds. Hand-written rather than a plotting
library because each chart is a few polylines that must be cheap to redraw every second
(matplotlib takes tens of milliseconds a figure); every label is escaped.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from markupsafe import Markup, escape

from backout.telemetry.batches import Batch, latency_quantile, sum_batches

__all__ = ["PALETTE", "Series", "charts", "line_chart"]

PALETTE = ("#3a78c9", "#e0731b", "#2e9e5b", "#8a4fc7", "#c7372f", "#6b7a8f")
W, H, PAD_L, PAD_B, PAD_T = 520, 150, 44, 20, 18

Series = dict[str, list[tuple[float, float]]]  # release -> (time, value) points


def _fmt(v: float, unit: str) -> str:
    if unit == "%":
        return f"{v:.0f}%" if v >= 10 or v == 0 else f"{v:.1f}%"
    if unit == "ms":
        return f"{v:.0f} ms" if v >= 10 else f"{v:.1f} ms"
    return f"{v:g}"


def line_chart(series: Series, *, title: str, unit: str, t0: float, t1: float,
               colors: Mapping[str, str], ymax: float | None = None) -> Markup:  # fmt: skip
    """One chart: a line per release from ``t0`` to ``t1``, y from 0 to the largest value."""
    values = [v for pts in series.values() for _, v in pts if math.isfinite(v)]
    top = ymax if ymax is not None else max(values, default=0.0)
    top = top * 1.1 if top > 0 else 1.0
    span = max(t1 - t0, 1e-9)

    def x(t: float) -> float:
        return PAD_L + (t - t0) / span * (W - PAD_L - 8)

    def y(v: float) -> float:
        return H - PAD_B - v / top * (H - PAD_B - PAD_T)

    parts = [
        f'<svg class="chart" viewBox="0 0 {W} {H}" width="{W}" height="{H}" role="img" '
        f'aria-label="{escape(title)}"><title>{escape(title)}</title>',
        f'<text x="{PAD_L}" y="12">{escape(title)}</text>',
        f'<line x1="{PAD_L}" y1="{H - PAD_B}" x2="{W - 8}" y2="{H - PAD_B}" stroke="#ccd"/>',
        f'<text x="4" y="{PAD_T + 8}">{escape(_fmt(top / 1.1, unit))}</text>',
        f'<text x="4" y="{H - PAD_B}">{escape(_fmt(0, unit))}</text>',
        f'<text x="{PAD_L}" y="{H - 4}">-{(t1 - t0) / 60:.0f} min</text>',
        f'<text x="{W - 30}" y="{H - 4}">now</text>',
    ]
    legend_x = PAD_L + 140
    for i, (release, pts) in enumerate(sorted(series.items())):
        color = colors.get(release, PALETTE[i % len(PALETTE)])
        good = [(t, v) for t, v in pts if math.isfinite(v)]
        if good:
            path = " ".join(f"{x(t):.1f},{y(v):.1f}" for t, v in good)
            parts.append(
                f'<polyline fill="none" stroke="{color}" stroke-width="2" points="{path}"/>'
            )
        parts.append(
            f'<rect x="{legend_x}" y="4" width="10" height="10" fill="{color}"/>'
            f'<text x="{legend_x + 14}" y="13">{escape(release)}</text>'
        )
        legend_x += 24 + 7 * len(release)
    parts.append("</svg>")
    return Markup("".join(parts))  # built above, every label escaped


def _buckets(batches: Sequence[Batch], t0: float, step: float) -> dict[int, Batch]:
    grouped: dict[int, list[Batch]] = {}
    for b in batches:
        grouped.setdefault(int((b.start - t0) // step), []).append(b)
    out = {}
    for k, bs in grouped.items():
        total = sum_batches(bs)
        if total is not None:
            out[k] = total
    return out


def charts(per_release: Mapping[str, Sequence[Batch]], *, now: float, minutes: float = 5.0,
           step: float = 5.0) -> dict[str, Markup]:  # fmt: skip
    """The dashboard's three charts: traffic share, error rate and p99 latency per release."""
    t0 = now - minutes * 60
    colors = {r: PALETTE[i % len(PALETTE)] for i, r in enumerate(sorted(per_release))}
    by_release = {r: _buckets(bs, t0, step) for r, bs in per_release.items()}
    slots = sorted({k for b in by_release.values() for k in b})
    totals = {k: sum(b[k].requests for b in by_release.values() if k in b) for k in slots}
    share: Series = {}
    errors: Series = {}
    p99: Series = {}
    for release, buckets in by_release.items():
        for k in slots:
            t = t0 + (k + 0.5) * step
            b = buckets.get(k)
            n = b.requests if b is not None else 0
            share.setdefault(release, []).append((t, 100 * n / totals[k] if totals[k] else 0.0))
            if b is not None and n:
                errors.setdefault(release, []).append((t, 100 * b.error_count / n))
                if b.latency:
                    p99.setdefault(release, []).append(
                        (t, latency_quantile(b.latency, 0.99) * 1000)
                    )
    return {
        "weights": line_chart(share, title="traffic share per release", unit="%", t0=t0,
                              t1=now, colors=colors, ymax=100.0),
        "errors": line_chart(errors, title="error rate per release", unit="%", t0=t0,
                             t1=now, colors=colors),
        "latency": line_chart(p99, title="p99 latency per release", unit="ms", t0=t0,
                              t1=now, colors=colors),
    }  # fmt: skip
