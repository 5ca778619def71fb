"""The one-line evidence of a judgement, written the same way for every judge.

For the judges (which call one function here to write their summary) and for whoever shows
judgements: the controller names the releases with :func:`name_arms`, reports use
:func:`effect_detail`. A line says what was compared, the effect with its confidence bound,
and the requests behind it::

    error rate 2.40% on 1.5.0 vs 1.10% on 1.4.0: +1.3 points, ×2.18 (at least ×1.52, 99%
    confidence) over 3,120 vs 28,400 requests: fail

Only formatting lives here, no statistics. Numbers that are not finite never reach the
text: a bound that does not exist yet reads "no bound yet (120 vs 1,100 requests)", a rate
of no requests reads "no requests", so no summary ever shows ``inf``, ``nan`` or
"unbounded".
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable

CANDIDATE = "the candidate"
BASELINE = "the baseline"
_ARMS = re.compile(r"\bthe (candidate|baseline)\b")

Fmt = Callable[[float], str]


def name_arms(text: str, candidate: str, baseline: str) -> str:
    """``text`` with "the candidate" and "the baseline" replaced by the releases' names."""
    names = {"candidate": candidate, "baseline": baseline}
    return _ARMS.sub(lambda m: names[m.group(1)], text)


def finite(x: float | None) -> bool:
    """Whether ``x`` is a number that can be shown (not None, NaN or an infinity). Callers
    pass the value as it will be printed (``x * 100`` for a percentage), so that a huge
    finite number that overflows on the way is not shown either."""
    try:
        return x is not None and math.isfinite(x)
    except TypeError:
        return False


def count(n: float) -> str:
    """A count with thousands separators (``3,120``); 0 for what is not a number."""
    return f"{int(n):,}" if finite(n) else "0"


def requests(n_c: float, n_b: float | None = None) -> str:
    """``3,120 vs 28,400 requests`` (or ``3,120 requests`` without a baseline)."""
    if n_b is None:
        return f"{count(n_c)} requests"
    return f"{count(n_c)} vs {count(n_b)} requests"


def percent(x: float, digits: int = 1) -> str:
    """A share as a percentage (``2.4%``), or ``n/a``."""
    return f"{x * 100:.{digits}f}%" if finite(x * 100) else "n/a"


def change(x: float) -> str:
    """A relative change as a signed percentage (``+12%``, ``-3.5%``), or ``n/a``."""
    if not finite(x * 100):
        return "n/a"
    digits = 1 if abs(x) < 0.1 else 0
    return f"{_unsigned_zero(x * 100, digits):+.{digits}f}%"


def points(x: float) -> str:
    """A difference of two shares in percentage points (``+1.3 points``), or ``n/a``."""
    return f"{_unsigned_zero(x * 100, 1):+.1f} points" if finite(x * 100) else "n/a"


def _unsigned_zero(x: float, digits: int) -> float:
    """``x`` rounded, with a rounded-away negative zero made positive ("+0.0", not "-0.0")."""
    return round(x, digits) + 0.0


def number(x: float, digits: int = 4) -> str:
    """A plain number (PSI, a distance), or ``n/a``."""
    return f"{x:.{digits}f}" if finite(x) else "n/a"


def level(alpha: float) -> str:
    """The confidence of a bound at ``alpha``: ``99% confidence``."""
    return (
        f"{(1 - alpha) * 100:.4g}% confidence" if finite(alpha) and 0 < alpha < 1 else "confidence"
    )


def bound(verdict: str, lower: float, upper: float, fmt: Fmt, alpha: float) -> str | None:
    """The bound that matters for ``verdict``: a fail says how bad the effect is at least, a
    pass how bad at most, anything else the interval. Sides that are not finite are left
    out; with none left, None (the line then says "no bound yet")."""
    lo, hi = finite(lower), finite(upper)
    if verdict == "fail" and lo:
        text = f"at least {fmt(lower)}"
    elif verdict == "pass" and hi:
        text = f"at most {fmt(upper)}"
    elif lo and hi:
        text = f"between {fmt(lower)} and {fmt(upper)}"
    elif lo:
        text = f"at least {fmt(lower)}"
    elif hi:
        text = f"at most {fmt(upper)}"
    else:
        return None
    return f"{text}, {level(alpha)}"


def ending(effect: str, b: str | None, behind: str, verdict: str) -> str:
    """``<effect> (<bound>) over <behind>: <verdict>``, or without a bound
    ``<effect>, no bound yet (<behind>): <verdict>``."""
    if b is None:
        return f"{effect}, no bound yet ({behind}): {verdict}"
    return f"{effect} ({b}) over {behind}: {verdict}"


def times(r: float) -> str:
    """A ratio (``×2.18``, ``×12.4``, ``×310``), or ``n/a``."""
    if not finite(r):
        return "n/a"
    return f"×{r:.2f}" if r < 10 else f"×{r:.1f}" if r < 100 else f"×{r:,.0f}"


def ratio(r: float) -> float:
    """A ratio to show: one at or below 0 (no lower bound at all) is not finite."""
    return r if finite(r) and r > 0 else math.nan


def ratio_effect(head: str, est: float, lower: float, upper: float, verdict: str,
                 alpha: float, behind: str) -> str:  # fmt: skip
    """``<head>, ×2.18 (at least ×1.52, 99% confidence) over …``; without a finite estimate
    the bound says it is the ratio's."""
    b = bound(verdict, ratio(lower), ratio(upper), times, alpha)
    if finite(ratio(est)):
        return ending(f"{head}, {times(est)}", b, behind, verdict)
    return ending(head, None if b is None else f"ratio {b}", behind, verdict)


# -- one function per judge -----------------------------------------------------------------


def error_rate_line(*, rate_c: float, rate_b: float, ratio: float, lower: float, upper: float,
                    alpha: float, n_c: float, n_b: float, verdict: str) -> str:  # fmt: skip
    """``error rate 2.40% on the candidate vs 1.10% on the baseline: +1.3 points, ×2.18 (at
    least ×1.52, 99% confidence) over 3,120 vs 28,400 requests: fail``."""
    behind = requests(n_c, n_b)
    head = f"error rate {_rate(rate_c, n_c)} on {CANDIDATE} vs {_rate(rate_b, n_b)} on {BASELINE}"
    if not (n_c and n_b):
        return f"{head}: no bound yet ({behind}): {verdict}"
    return ratio_effect(
        f"{head}: {points(rate_c - rate_b)}", ratio, lower, upper, verdict, alpha, behind
    )


def latency_line(*, estimate: float, lower: float, upper: float, alpha: float, n_c: float,
                 n_b: float, verdict: str, basis: str = "") -> str:  # fmt: skip
    """``mean latency +12% on the candidate vs the baseline (at least +5%, 99% confidence)
    over 3,120 vs 28,400 requests: fail``; ``basis`` says how (``per batch``)."""
    behind = requests(n_c, n_b)
    b = bound(verdict, lower, upper, change, alpha)
    if not finite(estimate) or b is None:
        return f"mean latency on {CANDIDATE} vs {BASELINE}: no bound yet ({behind}): {verdict}"
    how = f"; {basis}" if basis else ""
    return ending(f"mean latency {change(estimate)} on {CANDIDATE} vs {BASELINE}", b + how,
                  behind, verdict)  # fmt: skip


def tail_line(*, quantile: float | None, change_q: float, threshold_ms: float, share_c: float,
              share_b: float, lower: float, upper: float, alpha: float, n_c: float, n_b: float,
              verdict: str) -> str:  # fmt: skip
    """``p99 latency +30% on the candidate vs the baseline: 2.1% vs 1.0% of requests above 250
    ms, +1.1 points (at least +0.4 points, 99.5% confidence) over …: fail``. Without a
    ``quantile`` (thresholds still being chosen): no bound yet."""
    behind = requests(n_c, n_b)
    if quantile is None or not finite(threshold_ms * 1.0):
        return (
            f"tail latency on {CANDIDATE} vs {BASELINE}: no bound yet (thresholds are taken "
            f"from the baseline's warm-up; {behind}): {verdict}"
        )
    name = f"p{quantile * 100:g}"
    moved = f" {change(change_q)}" if finite(change_q) else ""
    effect = (
        f"{name} latency{moved} on {CANDIDATE} vs {BASELINE}: {percent(share_c)} vs "
        f"{percent(share_b)} of requests above {threshold_ms:.0f} ms, {points(share_c - share_b)}"
    )
    return ending(effect, bound(verdict, lower, upper, points, alpha), behind, verdict)


def drift_line(*, label: str | None, share_c: float, share_b: float, ratio: float,
               lower: float, upper: float, alpha: float, psi: float, wasserstein: float,
               n_c: float, n_b: float, verdict: str) -> str:  # fmt: skip
    """``output drift on the candidate vs the baseline: class 'spam' 12.0% vs 10.0% of answers,
    (PSI 0.0123, W 0.0100), ×1.20 (at least ×1.05, 99% confidence) over …: fail``. Without a
    ``label`` (classes still being chosen): no bound yet."""
    behind = requests(n_c, n_b)
    head = f"output drift on {CANDIDATE} vs {BASELINE}"
    if label is None:
        return f"{head}: no bound yet (classes are chosen after the warm-up; {behind}): {verdict}"
    shares = (
        f"{head}: class {label!r} {percent(share_c)} vs {percent(share_b)} of answers "
        f"(PSI {number(psi)}, W {number(wasserstein)})"
    )
    return ratio_effect(shares, ratio, lower, upper, verdict, alpha, behind)


def budget_line(*, quantile: float, value_s: float, limit_s: float, share: float,
                lower: float, upper: float, allowed: float, alpha: float, n_c: float,
                verdict: str) -> str:  # fmt: skip
    """``p99 latency 320 ms on the candidate vs budget 300 ms: 1.4% of requests over it,
    allowed 1.0% (at least 1.1%, 95% confidence) over 3,120 requests: fail``."""
    name = f"p{quantile * 100:g}"
    behind = requests(n_c)
    budget = f"budget {limit_s * 1000:.0f} ms"
    if not (finite(value_s * 1000) and finite(share)):
        return f"{name} latency on {CANDIDATE} vs {budget}: no bound yet ({behind}): {verdict}"
    # A share bound at or below 0 is no lower bound at all.
    b = bound(verdict, lower if finite(lower) and lower > 0 else math.nan, upper,
              percent, alpha)  # fmt: skip
    effect = (
        f"{name} latency {value_s * 1000:.0f} ms on {CANDIDATE} vs {budget}: {percent(share)} "
        f"of requests over it, allowed {percent(allowed)}"
    )
    return ending(effect, b, behind, verdict)


def integrity_line(*, nonfinite: float, contract: float, unreconciled: float, n_c: float,
                   verdict: str) -> str:  # fmt: skip
    """``integrity of the candidate: 3 non-finite outputs, 0 contract violations, 0
    unreconciled requests over 3,120 requests: fail``."""
    return (
        f"integrity of {CANDIDATE}: {count(nonfinite)} non-finite outputs, {count(contract)} "
        f"contract violations, {count(unreconciled)} unreconciled requests over "
        f"{requests(n_c)}: {verdict}"
    )


def _rate(rate: float, n: float) -> str:
    return percent(rate, 2) if n else "n/a"


# -- for reports ----------------------------------------------------------------------------


def effect_detail(estimate: object, lower: object, upper: object, tolerance: object) -> str:
    """``effect 1.8 (bounds 1.2 to 2.9), tolerance 1.2`` from stored judgement fields, with
    sides that are not finite left out and ``no bound yet`` when none is left; "" without an
    estimate."""
    est, lo, hi, tol = (_float(v) for v in (estimate, lower, upper, tolerance))
    if not finite(est):
        return ""
    if finite(lo) and finite(hi):
        b = f"bounds {lo:.3g} to {hi:.3g}"
    elif finite(lo):
        b = f"at least {lo:.3g}"
    elif finite(hi):
        b = f"at most {hi:.3g}"
    else:
        b = "no bound yet"
    return f"effect {est:.3g} ({b})" + (f", tolerance {tol:.3g}" if finite(tol) else "")


def _float(v: object) -> float:
    try:
        return float(v)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return math.nan
