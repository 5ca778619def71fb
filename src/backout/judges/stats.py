"""The judges' statistics: vectorised functions over per-batch numpy arrays.

For the judges and for the detection benchmark, which runs these same functions on millions
of synthetic batches. Mixture likelihood ratios for counts split between two arms
(``split_llr``) and for one-sample rates (``binomial_llr``) on a shared log-ratio grid, their
mixture e-values and confidence sequences; Lai's t-mixture e-value and interval for batch
differences of means, with the weights, differences and block sums it reads; and effect
sizes between two distributions (population stability index, Wasserstein distance). No
I/O, and no state beyond :class:`TMixtureSums`, the running sums a judge keeps for a t-mixture.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.special import logsumexp

from backout.telemetry.batches import bucket_mid

F64 = NDArray[np.float64]


# --- count tests: events split between the arms, and one-sample rates ----------------

# Log rate-ratio grid shared by the count tests: 5% steps from e^-3 to e^3. The mixture
# e-values integrate over it; the confidence sequences are read off it (so bounds are exact
# to one grid step, about 5%).
GRID: F64 = np.round(np.arange(-60, 61) * 0.05, 10)


def prior_log_weights(
    scale: float, side: str = "greater", grid: F64 = GRID, mean: float = 0.0
) -> F64:
    """Log weights of a normal(mean, scale) prior on the log-ratio grid, normalised over the
    points on ``side`` ("greater", "less" or "two-sided"; zero itself is excluded)."""
    lw = -0.5 * ((grid - mean) / scale) ** 2
    keep = {"greater": grid > 0, "less": grid < 0, "two-sided": grid != 0}[side]
    lw = np.where(keep, lw, -np.inf)
    return np.asarray(lw - logsumexp(lw), dtype=np.float64)


def candidate_share(cand_n: F64, base_n: F64) -> F64:
    """Per-slot share of the candidate in the two arms' total (zero where both are empty):
    the traffic split ``split_llr`` conditions on."""
    total = cand_n + base_n
    return np.divide(cand_n, total, out=np.zeros_like(total), where=total > 0)


def split_llr(k_c: F64, k_b: F64, share: F64, grid: F64 = GRID) -> F64:
    """Per-batch log-likelihood ratios of rate ratio e^g against 1 for events split between
    arms, conditional on the traffic split (shape ``(..., len(grid))``).

    Lindon & Malek's anytime-valid count tests: given m events in a slot and the candidate's
    share pi of its traffic, the candidate's events are Binomial(m, p) with
    p = rho*pi / (rho*pi + 1 - pi) for rate ratio rho. A load shared by both arms cancels, so
    the test stays valid when traffic and base rates vary over time.
    """
    k_c, k_b, share = (np.asarray(x, dtype=np.float64)[..., None] for x in (k_c, k_b, share))
    return np.asarray(k_c * grid - (k_c + k_b) * np.log1p(np.expm1(grid) * share), dtype=np.float64)


def binomial_llr(k: F64, n: F64, p0: float, grid: F64 = GRID) -> F64:
    """Per-batch log-likelihood ratios of rate p0*e^g against p0 for k events in n trials;
    grid points with p0*e^g >= 1 get -inf."""
    k, n = (np.asarray(x, dtype=np.float64)[..., None] for x in (k, n))
    p = p0 * np.exp(grid)
    ok = p < 1
    tail = np.log1p(-np.where(ok, p, 0.0)) - math.log1p(-p0)
    return np.asarray(np.where(ok, k * grid + (n - k) * tail, -np.inf), dtype=np.float64)


def log_sum_exp(x: F64) -> F64:
    """log(sum(exp(x))) over the last axis; plain numpy, which beats scipy's call overhead on
    the short grids a gate evaluates on every batch."""
    if x.ndim == 1 and x.size:  # the gate's common case, in scalars: a third of the time
        top = float(x.max())
        if not math.isfinite(top):
            return np.asarray(top if top > 0 or math.isnan(top) else -math.inf)
        return np.asarray(math.log(float(np.exp(x - top).sum())) + top)
    m = np.max(x, axis=-1, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    with np.errstate(divide="ignore"):
        return np.asarray(np.log(np.exp(x - m).sum(axis=-1)) + m[..., 0], dtype=np.float64)


def log_mixture(llr: F64, log_w: F64) -> F64:
    """Log of the mixture e-value sum_g w_g exp(llr_g) over the last axis."""
    return log_sum_exp(llr + log_w)


def ratio_bounds(llr: F64, log_w: F64, alpha: float, grid: F64 = GRID) -> tuple[float, float]:
    """Confidence-sequence bounds (log scale) for the grid parameter: the set of g0 whose
    mixture e-value against g0 stays below 1/alpha. Infinite when the set reaches an end."""
    lm = float(log_sum_exp(llr + log_w))
    inside = np.flatnonzero(lm - llr < math.log(1 / alpha))
    if inside.size == 0:  # the grid cannot resolve it; fall back to the best-supported point
        g = float(grid[int(np.argmax(llr))])
        return g, g
    lo = -math.inf if inside[0] == 0 else float(grid[inside[0]])
    hi = math.inf if inside[-1] == len(grid) - 1 else float(grid[inside[-1]])
    return lo, hi


# --- Lai's t-mixture over per-slot (or per-block) differences of means ----------------

# Standard-normal offsets of the quadrature nodes around the peak of ``_log_j``'s integrand.
_Z: F64 = np.linspace(-8.0, 8.0, 41)


def _log_j(n: F64, beta: F64) -> F64:
    """log of the integral over v > 0 of v^(n-1) exp(-v^2/2 + beta v) (a parabolic-cylinder
    function), by the trapezoid rule on nodes spread around the integrand's peak; accurate to
    about 1e-3 for n >= 2, and the same nodes serve numerator and denominator."""
    k = n - 1
    peak = 0.5 * (beta + np.sqrt(beta * beta + 4 * k))
    sd = 1 / np.sqrt(1 + k / np.maximum(peak, 1e-12) ** 2)
    v = peak[..., None] + sd[..., None] * _Z
    ok = v > 0
    vs = np.where(ok, v, 1.0)
    f = np.where(ok, k[..., None] * np.log(vs) - 0.5 * vs * vs + beta[..., None] * vs, -np.inf)
    m = f.max(axis=-1, keepdims=True)
    with np.errstate(divide="ignore"):
        out = np.log(np.exp(f - m).sum(axis=-1)) + m[..., 0] + np.log(sd * (_Z[1] - _Z[0]))
    return np.asarray(out, dtype=np.float64)


def t_mixture_log_evalue(
    n: ArrayLike, a: ArrayLike, s: ArrayLike, q: ArrayLike, c: float, mean: float = 0.0
) -> F64:
    """Log e-value of Lai's t-mixture (scale-invariant normal mixture SPRT) for a zero mean.

    Observations are batch differences d_t with weight w_t (Var d_t = sigma^2 / w_t, sigma
    unknown): ``n`` batches, ``a`` = sum w, ``s`` = sum w d, ``q`` = sum w d^2. Mixing the
    standardised effect over N(0, c^2) and sigma over the right-Haar prior gives
    (1 + c^2 a)^-1/2 * (q / (q - c^2 s^2 / (1 + c^2 a)))^(n/2), an e-process under the null
    (Lai 1976; Wang & Ramdas 2023). The variance comes from the spread *across* batches, so
    latency autocorrelated within a batch does not inflate false alarms.

    With ``mean`` != 0 the effect prior is N(mean, c^2): the ratio of mixtures is still an
    e-process for any prior on the standardised effect (it is scale-invariant; Pérez-Ortiz
    et al. 2024, "E-statistics, group invariance and anytime-valid testing"), and a prior
    centred on the effect that matters detects it sooner than one centred on zero, which
    spends half its mass on improvements and most of the rest on effects too small or too
    large. The sigma integral then has no elementary form: with D = 1 + c^2 a,
    Q = q - c^2 s^2 / D and beta = mean s / (D sqrt(Q)) the e-value is
    D^-1/2 exp(-mean^2 a / 2D) (q/Q)^(n/2) J(n, beta) / J(n, 0), J as in ``_log_j``.
    """
    n, a, s, q = np.broadcast_arrays(*(np.asarray(x, dtype=np.float64) for x in (n, a, s, q)))
    with np.errstate(divide="ignore", invalid="ignore"):
        denom = 1 + c * c * a
        frac = 1 - c * c * s * s / (denom * q)
        out = -0.5 * np.log(denom) - 0.5 * n * np.log(frac)
        good = (n >= 2) & (q > 0) & (frac > 0)
        if mean != 0.0 and good.any():
            big_q = np.where(good, q * frac, 1.0)
            beta = np.where(good, mean * s / (denom * np.sqrt(big_q)), 0.0)
            nn = np.where(good, n, 2.0)
            # J(n, beta) and J(n, 0) on the same nodes in one call: their errors cancel.
            lj = _log_j(np.stack([nn, nn]), np.stack([beta, np.zeros_like(beta)]))
            out = out - mean * mean * a / (2 * denom) + lj[0] - lj[1]
    return np.asarray(np.where(good, out, 0.0), dtype=np.float64)


def t_mixture_interval(
    n: float, a: float, s: float, q: float, c: float, alpha: float
) -> tuple[float, float, float]:
    """Estimate and confidence-sequence bounds for the mean of the t-mixture's batch
    differences: the means whose t-mixture e-value stays below 1/alpha (closed form)."""
    if n < 2 or a <= 0:
        return math.nan, -math.inf, math.inf
    est = s / a
    rss = max(q - s * s / a, 0.0)
    denom = 1 + c * c * a
    r = (math.sqrt(denom) / alpha) ** (-2 / n)
    kappa = c * c / denom - (1 - r) / a
    if kappa <= 0:
        return est, -math.inf, math.inf
    h = math.sqrt((1 - r) * rss / kappa) / a
    return est, est - h, est + h


@dataclass(slots=True)
class TMixtureSums:
    """Sums of Lai's t-mixture over batch differences (see ``t_mixture_log_evalue``)."""

    n: float = 0.0
    a: float = 0.0
    s: float = 0.0
    q: float = 0.0

    def add(self, d: F64, w: F64) -> None:
        ok = w > 0
        d, w = d[ok], w[ok]
        self.n += float(ok.sum())
        self.a += float(w.sum())
        self.s += float((w * d).sum())
        self.q += float((w * d * d).sum())


def batch_weights(n_c: F64, n_b: F64) -> F64:
    """Weight of a slot's difference of means: 1 / (1/n_c + 1/n_b), zero if an arm is empty."""
    with np.errstate(divide="ignore", invalid="ignore"):
        w = n_c * n_b / (n_c + n_b)
    return np.asarray(np.where((n_c > 0) & (n_b > 0), w, 0.0), dtype=np.float64)


def mean_difference(x_c: F64, n_c: F64, x_b: F64, n_b: F64) -> F64:
    """Per-slot difference of the arms' means x/n (zero where an arm is empty)."""
    mc = np.divide(x_c, n_c, out=np.zeros_like(x_c), where=n_c > 0)
    mb = np.divide(x_b, n_b, out=np.zeros_like(x_b), where=n_b > 0)
    return np.asarray(mc - mb, dtype=np.float64)


def blocks(cols: F64, pending: F64, pending_slots: int, size: int) -> tuple[F64, F64, int]:
    """Sum rows of ``cols`` (T, k) into complete blocks of ``size`` slots, continuing an open
    block (``pending`` sums over ``pending_slots`` slots); returns the blocks and the new
    open block."""
    need = size - pending_slots
    if len(cols) < need:
        return np.zeros((0, cols.shape[1])), pending + cols.sum(axis=0), pending_slots + len(cols)
    head = pending + cols[:need].sum(axis=0)
    rest = cols[need:]
    m = len(rest) // size
    full = np.vstack([head[None, :], rest[: m * size].reshape(m, size, cols.shape[1]).sum(axis=1)])
    return full, rest[m * size :].sum(axis=0), len(rest) - m * size


# --- distributions: quantiles of histograms, and how far two distributions are apart --


def hist_quantile(hist: NDArray[np.int64], q: float) -> float:
    """``telemetry.latency_quantile`` on a dense histogram, vectorised; NaN when empty."""
    cum = np.cumsum(hist)
    if cum[-1] == 0:
        return math.nan
    return bucket_mid(int(np.searchsorted(cum, q * cum[-1], side="left")))


def psi(expected: ArrayLike, actual: ArrayLike, eps: float = 1e-4) -> float:
    """Population stability index of ``actual`` against ``expected``, two count vectors over
    the same bins: sum over bins i of (a_i - e_i) ln(a_i / e_i), where a_i and e_i are bin
    i's shares of each side's total (the usual definition: Siddiqi 2006, *Credit Risk
    Scorecards*; Yurdakul 2018, "Statistical properties of the population stability index").
    It is the symmetrised Kullback-Leibler divergence KL(a || e) + KL(e || a), so the order
    of the arguments does not change its value; by the customary rule of thumb below 0.1 is
    stable, 0.1 to 0.25 a moderate shift and above 0.25 a major one.

    The bins are the caller's: class labels, or the score bins the gateway counts
    (``score:<bin>``); nothing is re-binned here. A bin empty on one side would make its
    term infinite, so every share is floored at ``eps`` (0.01%), the usual smoothing, before
    the logarithm (the floored shares are not renormalised). A side without counts has no
    distribution to compare, and the index is then 0.
    """
    e = np.asarray(expected, dtype=np.float64)
    a = np.asarray(actual, dtype=np.float64)
    if e.sum() == 0 or a.sum() == 0:
        return 0.0
    e = np.clip(e / e.sum(), eps, None)
    a = np.clip(a / a.sum(), eps, None)
    return float(np.sum((a - e) * np.log(a / e)))


def normalised_wasserstein(p: F64, q: F64, ordered: bool) -> float:
    """Wasserstein-1 distance between two distributions over classes, in [0, 1]: over ordered
    bins divided by the range; over unordered labels the total-variation distance (W1 under
    the 0/1 metric)."""
    p, q = p / max(p.sum(), 1e-300), q / max(q.sum(), 1e-300)
    if ordered and len(p) > 1:
        return float(np.abs(np.cumsum(p - q)).sum() / (len(p) - 1))
    return float(0.5 * np.abs(p - q).sum())


# --- dependence: long-run variance of one arm's per-slot series ------------------------

# Block lengths (in the series' own slots) of the batch-means estimates, and the rules that
# decide when one counts: at least LRV_MIN_BLOCKS complete blocks, and a ratio to the
# short-run variance significantly above 1 (LRV_Z standard errors of a chi-square variance
# estimate), so that i.i.d. noise does not inflate the variance by chance and cost power.
LRV_SCALES = (4, 16, 64, 256)
LRV_MIN_BLOCKS = 8
LRV_Z = 2.5
NW_LAGS = 4


def long_run_variance(x: F64, ok: F64, ends: ArrayLike) -> tuple[F64, F64]:
    """Short-run and long-run variance of one arm's per-slot values ``x`` (last axis; ``ok``
    marks slots with data), for each prefix length in ``ends``: shapes ``(..., len(ends))``.

    Non-overlapping batch means (Carlstein 1986; Flegal & Jones 2010, "Batch means and
    spectral variance estimators in Markov chain Monte Carlo"): with blocks of b slots,
    b * Var(block means) tends to the long-run variance sum_k gamma_k as b grows, and
    equals the short-run variance gamma_0 for independent slots. Several block lengths are
    computed (4 to 256 slots, up to about a third of a typical baseline history) and the
    largest ratio that is significant is kept: a per-second level that wanders with a
    correlation time of a minute needs blocks of minutes before its variance shows, while
    for i.i.d. slots every ratio stays near 1 and the estimate is gamma_0 itself. Taking the
    largest significant ratio errs on the side of a larger variance, i.e. of fewer false
    alarms. Empty slots are left out of their block's mean; a block without data is skipped.
    """
    x = np.asarray(x, dtype=np.float64)
    ok = np.asarray(ok, dtype=np.float64)
    ends = np.asarray(ends, dtype=np.int64)
    lead = x.shape[:-1]

    def scale(b: int) -> tuple[F64, F64]:
        m = x.shape[-1] // b
        sx = (x * ok)[..., : m * b].reshape(*lead, m, b).sum(axis=-1)
        cnt = ok[..., : m * b].reshape(*lead, m, b).sum(axis=-1)
        valid = cnt > 0
        bm = np.divide(sx, cnt, out=np.zeros_like(sx), where=valid)

        def cum(v: F64) -> F64:
            z = np.zeros((*lead, 1))
            return np.concatenate([z, np.cumsum(v, axis=-1)], axis=-1)[..., ends // b]

        k, s1, s2 = cum(valid.astype(np.float64)), cum(bm), cum(bm * bm)
        with np.errstate(divide="ignore", invalid="ignore"):
            var = np.where(k >= 2, (s2 - s1 * s1 / np.maximum(k, 1)) / np.maximum(k - 1, 1), 0.0)
        return np.maximum(var, 0.0), k

    g0, _ = scale(1)
    ratio = np.ones_like(g0)
    # Short-range dependence (requests correlated across a second's boundary) shows sooner
    # in a Newey-West sum over the first few lags (Bartlett weights) than in batch means.
    z = np.zeros((*lead, 1))

    def cum(v: F64) -> F64:
        return np.concatenate([z, np.cumsum(v, axis=-1)], axis=-1)[..., ends]

    k0, s1 = cum(ok), cum(x * ok)
    mean = np.divide(s1, k0, out=np.zeros_like(s1), where=k0 > 0)
    nw = np.zeros_like(g0)
    weights = 0.0
    for lag in range(1, NW_LAGS + 1):
        pair = np.zeros_like(x)
        pair[..., lag:] = ok[..., lag:] * ok[..., :-lag]
        xy, xs, ys = np.zeros_like(x), np.zeros_like(x), np.zeros_like(x)
        xy[..., lag:] = x[..., lag:] * x[..., :-lag] * pair[..., lag:]
        xs[..., lag:] = x[..., lag:] * pair[..., lag:]
        ys[..., lag:] = x[..., :-lag] * pair[..., lag:]
        kp = cum(pair)
        cov = cum(xy) - mean * (cum(xs) + cum(ys)) + kp * mean * mean
        wk = 1 - lag / (NW_LAGS + 1)
        nw += 2 * wk * np.divide(cov, k0, out=np.zeros_like(cov), where=k0 > 0)
        weights += wk * wk
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.where(g0 > 0, 1 + nw / np.where(g0 > 0, g0, 1.0), 1.0)
    se = 2 * np.sqrt(weights / np.maximum(k0, 1))
    ratio = np.maximum(ratio, np.where((k0 >= 4 * NW_LAGS) & (r > 1 + LRV_Z * se), r, 1.0))
    for b in LRV_SCALES:
        var, k = scale(b)
        with np.errstate(divide="ignore", invalid="ignore"):
            r = np.where(g0 > 0, b * var / np.where(g0 > 0, g0, 1.0), 1.0)
        sig = (k >= LRV_MIN_BLOCKS) & (r > 1 + LRV_Z * np.sqrt(2 / np.maximum(k - 1, 1)))
        ratio = np.maximum(ratio, np.where(sig, r, 1.0))
    return np.asarray(g0, dtype=np.float64), np.asarray(g0 * ratio, dtype=np.float64)


def centre_segments(x: F64, ok: F64, every: int) -> F64:
    """``x`` less the mean of its segment of ``every`` slots (last axis, slots with data).

    The candidate's own long-run variance is measured on these residuals: a regression
    that starts in mid-window is a step in the candidate's level, which a variance
    estimate around one mean would read as strong autocorrelation, inflating the variance
    and slowing the very detection it should not affect. Centring each segment (the
    restarts' spacing) removes the step, and the wander slower than a segment is covered by
    the baseline's estimate (``inflation``)."""
    x, ok = np.asarray(x, dtype=np.float64), np.asarray(ok, dtype=np.float64)
    t = x.shape[-1]
    m = -(-t // every)
    pad = m * every - t
    widths = [(0, 0)] * (x.ndim - 1) + [(0, pad)]
    xp, okp = np.pad(x * ok, widths), np.pad(ok, widths)
    lead = x.shape[:-1]
    sx = xp.reshape(*lead, m, every).sum(axis=-1)
    cnt = okp.reshape(*lead, m, every).sum(axis=-1)
    mean = np.divide(sx, cnt, out=np.zeros_like(sx), where=cnt > 0)
    return np.asarray((x - np.repeat(mean, every, axis=-1)[..., :t]) * ok, dtype=np.float64)


def inflation(g0_c: ArrayLike, lrv_c: ArrayLike, g0_b: ArrayLike, lrv_b: ArrayLike) -> F64:
    """Variance inflation kappa >= 1 of a difference of the arms' per-slot values, the arms
    independent: (LRV_c + LRV_b) / (gamma0_c + gamma0_b), each arm's long-run variance its
    own (``long_run_variance``).

    The candidate has only the window's slots, too few to see a level that wanders over a
    minute before minutes have passed, so it is taken to wander at least as much as the
    baseline, which has its history: the candidate's long-run variance is at least its own
    short-run variance plus the baseline's excess LRV_b - gamma0_b (both releases run on the
    same kind of hosts; the candidate's own estimate takes over when it is larger).
    """
    g0_c, lrv_c, g0_b, lrv_b = (np.asarray(v, dtype=np.float64) for v in (g0_c, lrv_c, g0_b, lrv_b))
    lrv_c = np.maximum(lrv_c, g0_c + np.maximum(lrv_b - g0_b, 0.0))
    short = g0_c + g0_b
    with np.errstate(divide="ignore", invalid="ignore"):
        k = np.where(short > 0, (lrv_c + lrv_b) / np.where(short > 0, short, 1.0), 1.0)
    return np.asarray(np.maximum(k, 1.0), dtype=np.float64)


# --- change points: a weighted mixture over start times --------------------------------


def restart_log_weights(count: int, first: float) -> F64:
    """Log weights of the e-processes started at each of ``count`` start times: ``first``
    on the one started with the window, the rest shared equally by the later ones."""
    if count <= 1:
        return np.zeros(1)
    rest = math.log((1 - first) / (count - 1))
    return np.asarray([math.log(first)] + [rest] * (count - 1), dtype=np.float64)


@dataclass(slots=True)
class Dependence:
    """Each arm's per-block values, for the variance inflation of a difference test: the
    baseline's from its history on, the candidate's from the window's start. ``kappa`` is
    refreshed every ``every`` blocks, from the baseline's blocks up to that point and the
    candidate's complete segments of ``segment`` blocks (see ``centre_segments``)."""

    every: int
    segment: int
    hist: list[float]
    hist_ok: list[float]
    c: list[float]
    c_ok: list[float]
    b: list[float]
    b_ok: list[float]
    kappa: float = 1.0
    done: int = -1

    @classmethod
    def new(cls, every: int, segment: int) -> Dependence:
        return cls(every, segment, [], [], [], [], [], [])

    def set_history(self, x: F64, ok: F64) -> None:
        self.hist, self.hist_ok = [float(v) for v in x], [float(v) for v in ok]
        self.done = -1
        self.refresh()

    def add(self, xc: F64, ok_c: F64, xb: F64, ok_b: F64) -> None:
        self.c += xc.tolist()
        self.c_ok += ok_c.tolist()
        self.b += xb.tolist()
        self.b_ok += ok_b.tolist()
        self.refresh()

    def refresh(self) -> None:
        r = len(self.c) // self.every
        if r == self.done:
            return
        self.done = r
        upto = r * self.every
        g0_c = lrv_c = 0.0
        own = upto // self.segment * self.segment  # the candidate's complete segments
        if own >= 2:
            ok = np.asarray(self.c_ok[:own])
            x = centre_segments(np.asarray(self.c[:own]), ok, self.segment)
            g, lv = long_run_variance(x, ok, [own])
            g0_c, lrv_c = float(g[0]), float(lv[0])
        xb = np.asarray(self.hist + self.b[:upto])
        okb = np.asarray(self.hist_ok + self.b_ok[:upto])
        g0_b = lrv_b = 0.0
        if len(xb) >= 2:
            g, lv = long_run_variance(xb, okb, [len(xb)])
            g0_b, lrv_b = float(g[0]), float(lv[0])
        self.kappa = float(inflation(g0_c, lrv_c, g0_b, lrv_b))


def lag1_correlation(d: F64, w: F64) -> F64:
    """Lag-1 autocorrelation of per-slot differences ``d`` (last axis), each standardised by
    the square root of its weight ``w`` (so slots of unequal traffic count alike); slots
    with ``w == 0`` are left out, and so are the pairs they break. Zero when undefined.

    For i.i.d. slots it is about normal(0, 1 / m) over m slots; requests correlated across a
    second's boundary (a queue, a pause) make it positive (Box & Jenkins, *Time Series
    Analysis*, 1976, 2.1.6)."""
    d, w = np.asarray(d, dtype=np.float64), np.asarray(w, dtype=np.float64)
    ok = w > 0
    cnt = ok.sum(axis=-1)
    mean = np.divide((d * w).sum(axis=-1), w.sum(axis=-1), out=np.zeros(d.shape[:-1]),
                     where=w.sum(axis=-1) > 0)  # fmt: skip
    z = np.where(ok, (d - mean[..., None]) * np.sqrt(w), 0.0)
    num = (z[..., 1:] * z[..., :-1]).sum(axis=-1)
    den = (z * z).sum(axis=-1)
    out = np.divide(num, den, out=np.zeros_like(num), where=(den > 0) & (cnt >= 3))
    return np.asarray(out, dtype=np.float64)


def arm_means(x: F64, n: F64) -> tuple[F64, F64]:
    """Per-slot means x / n of one arm and the mask of slots with data."""
    ok = n > 0
    return np.divide(x, n, out=np.zeros_like(x), where=ok), ok.astype(np.float64)


def t_sums(d: F64, w: F64) -> F64:
    """Per-item t-mixture increments (n, a, s, q) of differences ``d`` with weights ``w``."""
    ok = w > 0
    return np.stack([ok.astype(np.float64), w, w * d, w * d * d], axis=-1)


def deflated(sums: F64, kappa: float | F64) -> tuple[F64, F64, F64, F64]:
    """The t-mixture's (n, a, s, q) with the sample size divided by the variance inflation:
    n/kappa effectively independent blocks, each with kappa times the variance."""
    k = np.asarray(kappa, dtype=np.float64)
    return sums[..., 0] / k, sums[..., 1] / k, sums[..., 2] / k, sums[..., 3] / k
