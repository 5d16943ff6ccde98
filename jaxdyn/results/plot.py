"""``jaxdyn plot``: one quick matplotlib figure of a sweep's curves or final metrics.

Owns: choosing curves or runs columns, aggregating lines over runs (mean and a shaded
spread), hue grouping and binning, and writing the figure.

Must not: write anything but the figure file.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from jaxdyn.results.files import QueryError, _sql_ident
from jaxdyn.results.sql import _connect_folders, ReadOnlyConnection
from jaxdyn.results.tables import load


SPREADS = {"minmax": "min–max", "std": "±1 std", "none": None}
MAX_HUE_LINES = 64  # a numeric --hue with more values is binned
HUE_BINS = 8


def plot(name_or_dir: str | Path, x: str, y: str, out: str | Path, *, hue: str | None = None,
         where: str | None = None, logx: bool = False, logy: bool = False,
         spread: str = "minmax", root: str | Path | None = None,
         max_lines: int = 200, _cli: bool = False) -> dict:
    """A quick figure of one sweep's tables, written to ``out`` (PNG, PDF, SVG by suffix).

    ``x``/``y`` are curves columns (``--x step --y loss``: mean over the runs of each ``hue``
    value at each step, with a shaded spread when a value groups several runs, e.g. seeds)
    or both runs columns (``--x lr --y final_b``: mean and spread over the runs sharing
    (hue, x)). ``x`` another curves metric (a phase portrait) draws one line per run.
    ``where`` is a SQL predicate on the runs table. Data are aggregated in DuckDB, reading
    only the columns used. Returns a summary dict.
    """
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
        from matplotlib.patches import Patch
    except ImportError:
        raise QueryError("plots need matplotlib: pip install matplotlib") from None

    if spread not in SPREADS:
        raise QueryError(f"spread: expected one of {list(SPREADS)}, got {spread!r}")
    res = load(name_or_dir, root)
    cols = res.columns()
    rcols, ccols = cols["runs"], cols["curves"]
    if not rcols:
        raise QueryError(f"{res.name}: no finished chunks yet; nothing to plot")
    with _connect_folders([res.path]) as con:  # one snapshot for every query of the plot
        return _plot(res, con, rcols, ccols, x, y, out, hue, where, logx, logy, spread,
                     max_lines, FigureCanvasAgg, Figure, Patch, _cli)


def _plot(res, con, rcols, ccols, x, y, out, hue, where, logx, logy, spread, max_lines,
          FigureCanvasAgg, Figure, Patch, cli) -> dict:
    def o(name, value=None, quote=False):
        """An argument as the caller wrote it: ``--x step`` (CLI) or ``x='step'`` (Python)."""
        if value is None:
            return f"--{name}" if cli else name
        if cli:
            return f"--{name} {value!r}" if quote else f"--{name} {value}"
        return f"{name}={value!r}"

    types = _column_types(con)

    def where_is(c):
        return [t for t, cs in (("curves", ccols), ("runs", rcols)) if c in cs]

    for opt, c in (("x", x), ("y", y)):
        if not where_is(c):
            raise QueryError(f"{o(opt, c)}: no such column in {res.name}; curves columns: "
                             f"{', '.join(ccols)}; runs columns: {', '.join(rcols)}")
        if "[" in types.get(c, ""):
            raise QueryError(f"{o(opt, c)}: an array metric ({types[c]}); plot one of its "
                             f"elements with 'jaxdyn query' or the Python API")
    if hue is not None and hue not in rcols:
        raise QueryError(f"{o('hue', hue)}: no such runs column in {res.name}; runs columns: "
                         f"{', '.join(rcols)}")
    if x in ccols and y in ccols and x != "run_id":
        mode = "steps" if x == "step" else "trajectories"
    elif x in rcols and y in rcols:
        mode = "runs"
    elif x in rcols:
        raise QueryError(f"{o('x', x)} is a runs column but {o('y', y)} is a curves column; plot "
                         f"a runs column against it (final_{y}?), or use {o('x', 'step')}")
    else:
        raise QueryError(f"{o('x', x)} is a curves column but {o('y', y)} is a runs column; use "
                         f"a curves metric for {o('y')} (one of {', '.join(ccols[2:])})")

    X, Y = _sql_ident(x), _sql_ident(y)
    H = _sql_ident(hue) if hue else "NULL"
    pred = f"({where})" if where else "true"
    sel = f"SELECT run_id, {H} AS hue FROM runs WHERE {pred}"
    try:
        counts = con.df(f"SELECT hue, count(*) AS n FROM ({sel}) GROUP BY hue ORDER BY hue")
    except QueryError as e:
        raise QueryError(f"{o('where', where, True)}: {e}" if where else str(e)) from None
    n_runs = int(counts.n.sum())
    if n_runs == 0:
        raise QueryError(f"{res.name}: no runs match" + (f" {o('where', where, True)}" if where else ""))
    bins: dict[int, str] = {}
    if hue and pd.api.types.is_numeric_dtype(counts.hue) and len(counts) > MAX_HUE_LINES:
        # too many values for one line each: HUE_BINS bins (log-spaced over a positive range
        # of more than a decade), each line the mean and spread over the runs of its bin
        v = counts.hue.dropna().astype("float64").to_numpy()
        lo, hi = float(v.min()), float(v.max())
        edges = (np.geomspace(lo, hi, HUE_BINS + 1) if lo > 0 and hi / lo > 10 else
                 np.linspace(lo, hi, HUE_BINS + 1))
        H = (f"CASE WHEN {H} IS NULL THEN NULL " +
             " ".join(f"WHEN {H} < {float(e)!r} THEN {i}" for i, e in enumerate(edges[1:-1]))
             + f" ELSE {HUE_BINS - 1} END")
        bins = {i: f"{hue} ∈ [{edges[i]:.3g}, {edges[i + 1]:.3g}" +
                   ("]" if i == HUE_BINS - 1 else ")") for i in range(HUE_BINS)}
        sel = f"SELECT run_id, {H} AS hue FROM runs WHERE {pred}"
        counts = con.df(f"SELECT hue, count(*) AS n FROM ({sel}) GROUP BY hue ORDER BY hue")

    def hue_label(hv):
        if bins:
            return bins.get(_key(hv), str(hv))
        return f"{hue}={_fmt_v(hv)}"

    per_run = False
    if mode == "trajectories":
        if n_runs > max_lines:
            raise QueryError(f"{o('x', x)}: one line per run, but {n_runs} runs match; narrow "
                             f"them with {o('where')} (at most {max_lines})")
        per_run = True
    elif hue is None and mode == "steps" and n_runs <= 12:
        per_run = True  # a few runs: one line each

    fin = "isfinite(CAST(v.y AS DOUBLE))"
    if per_run:
        sql = (f"WITH sel AS ({sel}) SELECT sel.hue, c.run_id, c.{X} AS x, c.{Y} AS y "
               f"FROM curves c JOIN sel USING (run_id) ORDER BY c.run_id, c.step")
        data = con.df(sql)
        n_bad = int((~pd.Series(data["y"], dtype="float64").map(math.isfinite)).sum())
    else:
        if mode == "steps":
            src = (f"WITH sel AS ({sel}) SELECT sel.hue, c.{X} AS x, c.{Y} AS y FROM curves c "
                   f"JOIN sel USING (run_id)")
        else:
            src = f"SELECT {H} AS hue, {X} AS x, {Y} AS y FROM runs WHERE {pred}"
        sql = (f"SELECT hue, x, avg(y) AS mean, min(y) AS lo, max(y) AS hi, "
               f"stddev_samp(y) AS sd, count(*) AS n FROM ({src}) v WHERE {fin} "
               f"GROUP BY hue, x ORDER BY hue, x")
        data = con.df(sql)
        n_bad = int(con.df(f"SELECT count(*) AS n FROM ({src}) v WHERE NOT {fin} "
                              f"OR v.y IS NULL").n.iloc[0])

    n_xpos = 0
    if logx and pd.api.types.is_numeric_dtype(data["x"]):
        keep = data["x"] > 0  # e.g. step 0 has no place on a log axis
        n_xpos = int((~keep).sum())
        data = data[keep]

    fig = Figure(figsize=(7.5, 4.8), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    hues = list(counts.hue)
    nh = len(hues)
    numeric_hue = hue is not None and not bins and pd.api.types.is_numeric_dtype(counts.hue)
    many = nh > 10
    colors = _hue_colors(fig, ax, counts.hue, hue, many, numeric_hue)
    band = SPREADS[spread] if not many and not per_run else None
    drew_band = False
    lines = 0
    if per_run:
        for (hv, rid), g in data.groupby(["hue", "run_id"], dropna=False, sort=True):
            lab = None
            if not many:
                lab = hue_label(hv) if hue else str(rid)
            ax.plot(g.x.to_numpy(), g.y.to_numpy(dtype=float), color=colors(hv), lw=1.0,
                    alpha=0.85, label=lab)
            lines += 1
        if hue and not many:  # one legend entry per hue value
            hs, ls = ax.get_legend_handles_labels()
            seen = dict(zip(ls, hs))
            ax.legend(seen.values(), seen.keys(), fontsize=8)
        elif not many:
            ax.legend(fontsize=7, title="run_id", title_fontsize=7)
    else:
        for hv, g in data.groupby("hue", dropna=False, sort=True):
            lab = None
            if not many:  # n: runs averaged at each point (seeds, and any other column)
                k0, k1 = int(g.n.min()), int(g.n.max())
                lab = ((hue_label(hv) if hue else "all runs") +
                       (f" (n={k1})" if k0 == k1 else f" (n={k0}–{k1})"))
            c = colors(hv)
            xs = g.x.to_numpy()
            ax.plot(xs, g["mean"].to_numpy(dtype=float), color=c, lw=1.4, label=lab,
                    marker="o" if mode == "runs" and len(g) <= 30 else None, ms=3)
            lines += 1
            if band and (g.n > 1).any():
                if spread == "minmax":
                    lo, hi = g.lo.to_numpy(dtype=float), g.hi.to_numpy(dtype=float)
                else:
                    m, s = g["mean"].to_numpy(dtype=float), g.sd.fillna(0).to_numpy(float)
                    lo, hi = m - s, m + s
                ax.fill_between(xs, lo, hi, color=c, alpha=0.2, lw=0)
                drew_band = True
        if not many:
            hs, ls = ax.get_legend_handles_labels()
            if drew_band:
                hs.append(Patch(color="0.5", alpha=0.3))
                ls.append(f"shaded: {band} over runs")
            ax.legend(hs, ls, fontsize=8)
    if logx:
        ax.set_xscale("log")
    if logy:
        ax.set_yscale("log")
    ax.set_xlabel(x)
    agg = "" if per_run else "mean "
    ax.set_ylabel(f"{agg}{y}")
    title = f"{res.name}: {y} vs {x}"
    if where:
        title += f"  [{where}]"
    sub = f"{n_runs} runs"
    if many and not per_run:
        sub += f", {nh} {hue} values (spread not drawn)"
    if n_bad:
        sub += f", {n_bad} non-finite values left out"
    if n_xpos:
        sub += f", {x} ≤ 0 not shown on the log axis"
    ax.set_title(f"{title}\n{sub}", fontsize=9)
    ax.grid(True, alpha=0.3, which="both" if (logx or logy) else "major")
    fig.tight_layout()
    out = Path(out)
    try:
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. non-positive values on a log axis
            fig.savefig(out)
    except (OSError, ValueError) as e:
        raise QueryError(f"cannot write {out}: {e}") from None
    return {"path": str(out), "runs": n_runs, "lines": lines, "hue_values": nh, "mode": mode,
            "hue_bins": bins or None,
            "per_run": per_run, "spread": band if drew_band else None, "non_finite": n_bad,
            "data": data}


def _column_types(con: ReadOnlyConnection) -> dict[str, str]:
    out = {}
    for t in ("runs", "curves"):
        try:
            d = con.df(f"DESCRIBE {t}")
        except QueryError:
            continue
        out.update(zip(d.column_name, d.column_type))
    return out


def _fmt_v(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _hue_colors(fig, ax, values: pd.Series, hue, many: bool, numeric: bool):
    """hue value → color: tab10 for a few values, a colormap (with a colorbar) for many."""
    import matplotlib as mpl

    vals = list(values)
    if not many:
        cyc = mpl.colormaps["tab10"]
        idx = {(_key(v)): i for i, v in enumerate(vals)}
        return lambda v: cyc(idx.get(_key(v), 0) % 10)
    cmap = mpl.colormaps["viridis"]
    if numeric:
        arr = pd.Series(vals, dtype="float64")
        lo, hi = float(arr.min()), float(arr.max())
        if lo > 0 and hi / lo > 10:
            norm = mpl.colors.LogNorm(lo, hi)
        else:
            norm = mpl.colors.Normalize(lo, hi if hi > lo else lo + 1)
        fig.colorbar(mpl.cm.ScalarMappable(norm=norm, cmap=cmap), ax=ax, label=hue)
        return lambda v: cmap(norm(float(v)))
    idx = {(_key(v)): i for i, v in enumerate(vals)}
    return lambda v: cmap(idx.get(_key(v), 0) / max(len(vals) - 1, 1))


def _key(v):
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return None
    return v
