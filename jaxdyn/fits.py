"""Convergence-rate fits of logged loss curves (analysis layer: NumPy and pandas, no JAX).

For every run, two fits of its loss curve L(T) against the step T, each over a window that the
curve itself picks — nothing about the window is set by hand, only how straight it must be:

- **power-law tail**: the log-log slope p of L ∝ T^p over the tail (T⁻³ gives p = −3);
- **linear convergence**: the log-linear rate c of L ∝ e^{−cT} (per step) over the
  exponential stretch.

How a window is chosen (:func:`fit_curve`):

1. *Usable points*: T > 0, L finite and > 0, and nothing at or after the numerical floor. The
   floor is the flat suffix after the last point where L still decreased by a relative
   ``progress`` (default 1e-9; GD on a smooth loss decreases L at every logged step until
   rounding stops it); when there is one, points within a factor ``floor_margin`` of its level
   are dropped too, since they already feel the rounding.
2. *Local slopes*: s_j = d ln L / d ln T (power law) or ρ_j = −d ln L / dT (linear), by
   centred differences on the usable points.
3. *Window*: the longest stretch ending at the last usable point over which the local slope
   stays within ``slope_tol`` (absolute) of its value at the end, or the local rate within
   ``rate_tol`` (relative) of its value at the end. A pure power law or a pure exponential
   gives a window spanning the whole regime; a curve that is still bending gives a short one.
4. *Fit*: least squares of ln L on ln T (or on T) over the window, with its standard error.
   A window with fewer than ``min_points`` points, or spanning less than ``min_decades``
   decades of T (power law) or ``min_drop`` decades of L (linear), gives NaN: no such regime.

:func:`fit_rates` applies it to every run of a sweep and returns one row per run, to be
joined next to ``runs`` (``runs.merge(fit_rates(curves, runs), on="run_id")``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

#: columns :func:`fit_rates` returns besides ``run_id``
COLUMNS = (
    "fit_kind",            # "linear", "power" or "none": which regime the curve ends in
    "fit_tail_slope",      # OLS slope of ln L on ln T over the tail window (−3 for T⁻³)
    "fit_tail_slope_se",   # its standard error
    "fit_tail_local_end",  # local log-log slope at the end of the usable curve
    "fit_tail_t0",         # tail window: first and last step, points, decades of T
    "fit_tail_t1",
    "fit_tail_points",
    "fit_tail_decades",
    "fit_lin_rate",        # c in L ∝ e^{−cT}, per step, over the linear window
    "fit_lin_rate_se",
    "fit_lin_t0",
    "fit_lin_t1",
    "fit_lin_points",
    "fit_lin_drop",        # decades of L the linear window covers
    "fit_floor_step",      # first step of the flat numerical floor (NaN: none reached)
    "fit_floor_loss",      # its level
    "fit_usable_points",   # points left after dropping T = 0, non-positive values and the floor
)


@dataclass
class FitOptions:
    slope_tol: float = 0.15    # power-law window: |s_j − s_end| ≤ slope_tol
    rate_tol: float = 0.10     # linear window: |ρ_j − ρ_end| ≤ rate_tol·|ρ_end|
    min_points: int = 5
    min_decades: float = 0.5   # of T, for a power-law window
    min_drop: float = 1.0      # decades of L, for a linear window
    progress: float = 1e-9     # relative decrease that still counts as progress
    floor_margin: float = 100.0


def _ols(x, y):
    """Slope of y on x and its standard error."""
    n = len(x)
    xm, ym = x.mean(), y.mean()
    sxx = float(np.sum((x - xm) ** 2))
    if n < 2 or sxx == 0:
        return math.nan, math.nan
    b = float(np.sum((x - xm) * (y - ym)) / sxx)
    if n < 3:
        return b, math.nan
    resid = y - ym - b * (x - xm)
    return b, math.sqrt(float(np.sum(resid**2)) / (n - 2) / sxx)


def _end_value(s):
    """A robust value of a local-slope sequence at its end (median of the last three)."""
    return float(np.median(s[-3:]))


def _window_start(s, target, tol):
    """First index of the longest suffix of ``s`` with |s − target| ≤ tol throughout."""
    ok = np.abs(s - target) <= tol
    bad = np.flatnonzero(~ok)
    return min(int(bad[-1]) + 1, len(s) - 1) if len(bad) else 0


def usable(t, loss, opts: FitOptions = FitOptions()):
    """Mask of the usable points of one curve, the floor's first step and level (or NaN)."""
    t = np.asarray(t, float)
    loss = np.asarray(loss, float)
    ok = (t > 0) & np.isfinite(loss) & (loss > 0)
    floor_step = floor_loss = math.nan
    idx = np.flatnonzero(ok)
    if len(idx) >= 2:
        y = loss[idx]
        run_min = np.minimum.accumulate(y)
        progress = np.r_[True, y[1:] < run_min[:-1] * (1.0 - opts.progress)]
        last = int(np.flatnonzero(progress)[-1])
        if last < len(idx) - 1:  # a flat suffix: the floor
            floor_step = float(t[idx[last + 1]])
            floor_loss = float(np.median(y[last + 1:]))
            cut = np.zeros(len(idx), bool)
            cut[last + 1:] = True
            cut |= y <= opts.floor_margin * floor_loss
            ok[idx[cut]] = False
    return ok, floor_step, floor_loss


def fit_curve(t, loss, opts: FitOptions = FitOptions()) -> dict:
    """Both fits of one curve (steps ``t``, values ``loss``); a dict with :data:`COLUMNS`."""
    t = np.asarray(t, float)
    loss = np.asarray(loss, float)
    order = np.argsort(t, kind="stable")
    t, loss = t[order], loss[order]
    out = {k: math.nan for k in COLUMNS}
    out["fit_kind"] = "none"
    ok, out["fit_floor_step"], out["fit_floor_loss"] = usable(t, loss, opts)
    t, y = t[ok], np.log(loss[ok])
    out["fit_usable_points"] = int(len(t))
    if len(t) < max(3, opts.min_points):
        return out
    lt = np.log(t)

    # power-law tail
    s = np.gradient(y, lt)
    s_end = _end_value(s)
    out["fit_tail_local_end"] = s_end
    a = _window_start(s, s_end, opts.slope_tol)
    decades = (lt[-1] - lt[a]) / math.log(10)
    if len(t) - a >= opts.min_points and decades >= opts.min_decades:
        out["fit_tail_slope"], out["fit_tail_slope_se"] = _ols(lt[a:], y[a:])
        out.update(fit_tail_t0=t[a], fit_tail_t1=t[-1], fit_tail_points=len(t) - a,
                   fit_tail_decades=decades)

    # linear convergence
    rho = -np.gradient(y, t)
    r_end = _end_value(rho)
    if r_end > 0:
        b = _window_start(rho, r_end, opts.rate_tol * r_end)
        drop = (y[b] - y[-1]) / math.log(10)
        if len(t) - b >= opts.min_points and drop >= opts.min_drop:
            slope, se = _ols(t[b:], y[b:])
            out.update(fit_lin_rate=-slope, fit_lin_rate_se=se, fit_lin_t0=t[b],
                       fit_lin_t1=t[-1], fit_lin_points=len(t) - b, fit_lin_drop=drop)

    if not math.isnan(out["fit_lin_rate"]):
        out["fit_kind"] = "linear"
    elif not math.isnan(out["fit_tail_slope"]):
        out["fit_kind"] = "power"
    return out


def fit_rates(curves: pd.DataFrame, runs: pd.DataFrame | None = None, *,
              column: str = "loss", **options) -> pd.DataFrame:
    """Fit every run's ``column`` curve; one row per run with ``run_id`` and :data:`COLUMNS`.

    Args:
      curves: ``run_id``, ``step`` and ``column`` (``Results.curves(columns=[column])``).
      runs: the runs to fit (``Results.runs``); rows come out in its order, and a run with no
        curve rows gets NaN. Default: every run in ``curves``.
      column: the metric to fit.
      **options: fields of :class:`FitOptions` (``slope_tol``, ``rate_tol``, ``min_points``,
        ``min_decades``, ``min_drop``, ``progress``, ``floor_margin``).
    """
    opts = FitOptions(**options)
    df = curves[["run_id", "step", column]].sort_values(["run_id", "step"], kind="stable")
    ids = df["run_id"].to_numpy()
    steps = df["step"].to_numpy(float)
    vals = df[column].to_numpy(float)
    bounds = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1], True])
    fits = {}
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        fits[ids[lo]] = fit_curve(steps[lo:hi], vals[lo:hi], opts)
    want = list(runs["run_id"]) if runs is not None else list(fits)
    empty = {k: math.nan for k in COLUMNS} | {"fit_kind": "none"}
    rows = [{"run_id": r, **fits.get(r, empty)} for r in want]
    out = pd.DataFrame(rows, columns=["run_id", *COLUMNS])
    for k in ("fit_tail_points", "fit_lin_points", "fit_usable_points"):
        out[k] = out[k].astype("Int64")
    return out


def with_fits(runs: pd.DataFrame, curves: pd.DataFrame, **kw) -> pd.DataFrame:
    """``runs`` with the fitted columns of :func:`fit_rates` joined next to each run."""
    return runs.merge(fit_rates(curves, runs, **kw), on="run_id", how="left")


def local_slopes(t, loss, opts: FitOptions = FitOptions()) -> pd.DataFrame:
    """The usable points of one curve with their local log-log slope and log-linear rate
    (what the windows are chosen from): columns ``step``, ``loss``, ``slope``, ``rate``."""
    t = np.asarray(t, float)
    loss = np.asarray(loss, float)
    order = np.argsort(t, kind="stable")
    t, loss = t[order], loss[order]
    ok, *_ = usable(t, loss, opts)
    t, L = t[ok], loss[ok]
    if len(t) < 3:
        return pd.DataFrame({"step": t, "loss": L, "slope": np.nan, "rate": np.nan})
    y = np.log(L)
    return pd.DataFrame({"step": t, "loss": L, "slope": np.gradient(y, np.log(t)),
                         "rate": -np.gradient(y, t)})


__all__ = ["COLUMNS", "FitOptions", "fit_curve", "fit_rates", "local_slopes", "usable",
           "with_fits"]
