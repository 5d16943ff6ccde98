"""The data of a sweep's explorer page, aggregated by DuckDB before it goes into the page.

Owns: which columns are grid axes and final metrics, the per-grid-point aggregates over seeds
(median, mean, min, max, counts of runs and diverged runs), the bounded runs table and the
bounded sample of curves embedded in the page, and the header facts.

Must not: write anything, import JAX, or know a file name the store does not define (it reads
through ``jaxdyn.results``: one committed snapshot per page).
"""

from __future__ import annotations

import base64
import math
import time
from pathlib import Path

import numpy as np

from jaxdyn.results.files import _sql_ident, _sql_list, read_manifest
from jaxdyn.results.sql import _connect_folders
from jaxdyn.results.status import sweep_status

AGGS = ("median", "mean", "min", "max")
#: runs embedded in the runs table (beyond it: a sample of runs per grid point, said so)
MAX_TABLE_RUNS = 10_000
#: float values embedded in the page in all (float32 base64: about 5.3 bytes each): the grid
#: points' aggregates and the runs table first, the curves get the rest (at least
#: MIN_CURVE_VALUES); with Plotly's 4.8 MB this keeps a page under 10 MB
MAX_PAGE_FLOATS = 650_000
MIN_CURVE_VALUES = 50_000
#: runs per grid point whose curves are embedded
CURVE_RUNS_PER_POINT = 4
#: fewest logged steps kept per curve when steps are thinned to fit the budget
MIN_CURVE_STEPS = 24

_NUMERIC = ("TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "UTINYINT", "USMALLINT",
            "UINTEGER", "UBIGINT", "FLOAT", "DOUBLE", "DECIMAL", "REAL")


def _is_numeric(t: str) -> bool:
    return t.upper().startswith(_NUMERIC) and "[" not in t


def _grid_axes(man: dict) -> list[str]:
    sweep = man.get("sweep") or {}
    grid = sweep.get("grid") or {}
    blocks = grid if isinstance(grid, list) else [grid]
    names: list[str] = []
    for b in blocks:
        for k in (b or {}):
            if k not in names:
                names.append(k)
    for k in (sweep.get("zip") or {}):
        if k not in names:
            names.append(k)
    return names


def _log_spaced(values: list) -> bool:
    """Positive numbers spanning at least 1.5 decades, or geometrically spaced (3+ values
    whose successive ratios agree better than their differences)."""
    v = [float(x) for x in values if isinstance(x, (int, float)) and not isinstance(x, bool)]
    if len(v) < 3 or len(v) != len(values) or min(v) <= 0:
        return False
    v = sorted(v)
    if v[-1] / v[0] >= 10 ** 1.5:
        return True
    d, r = np.diff(v), np.diff(np.log(v))
    return bool(np.std(r) / max(np.mean(r), 1e-300) < 0.5 * np.std(d) / max(np.mean(d), 1e-300))


def _json_num(x):
    if x is None:
        return None
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (bool, np.bool_)):
        return bool(x)
    if isinstance(x, (float, np.floating)):
        x = float(x)
        return x if math.isfinite(x) else None
    return x


def _col(values) -> list:
    return [_json_num(v) for v in (values.tolist() if hasattr(values, "tolist") else values)]


def _b64(a: np.ndarray, dtype) -> str:
    return base64.b64encode(np.ascontiguousarray(a, dtype=dtype).tobytes()).decode("ascii")


def _floats(values, sql_type: str) -> dict:
    """A float column, little-endian and base64-encoded in the precision of the column it
    comes from (FLOAT: float32, exact for float32 metrics; else float64); NaN for null.
    The page decodes it (``col()``) to numbers and nulls."""
    v = values
    if hasattr(v, "mask"):
        v = np.where(np.ma.getmaskarray(v), np.nan, np.ma.getdata(v).astype(np.float64))
    v = np.asarray(v, dtype=np.float64)
    if sql_type.upper() in ("FLOAT", "REAL"):
        return {"f32": _b64(v, "<f4")}
    return {"f64": _b64(v, "<f8")}


def _column(values, sql_type: str):
    t = sql_type.upper()
    if t in ("FLOAT", "REAL", "DOUBLE"):
        return _floats(values, t)
    return _col(values)


def explorer_data(folder: str | Path, *, max_table_runs: int = MAX_TABLE_RUNS,
                  max_curve_values: int | None = None,
                  curve_runs_per_point: int = CURVE_RUNS_PER_POINT) -> dict:
    """Everything the explorer page shows of one sweep folder, as a JSON-able dict.

    One committed snapshot (runs and curves of the same chunks) is read through a read-only
    DuckDB connection; per grid point the final metrics are aggregated over its runs
    (seeds); the runs table and the curves are bounded (``max_table_runs`` rows,
    ``max_curve_values`` floats, by default what ``MAX_PAGE_FLOATS`` leaves) and the dict
    says what was left out."""
    folder = Path(folder)
    t0 = time.perf_counter()
    man = read_manifest(folder)
    status = sweep_status(folder)
    with _connect_folders([folder]) as con:
        rtypes = dict(con.execute("SELECT column_name, column_type FROM (DESCRIBE runs)")
                      .fetchall())
        ctypes = dict(con.execute("SELECT column_name, column_type FROM (DESCRIBE curves)")
                      .fetchall())
        if "status" not in rtypes:  # no committed chunk yet
            return _empty(folder, man, status)
        axes = [a for a in _grid_axes(man) if a in rtypes]
        metrics = [c for c, t in rtypes.items() if c.startswith("final_") and _is_numeric(t)]
        cmetrics = [c for c, t in ctypes.items()
                    if c not in ("sweep", "run_id", "step") and _is_numeric(t)]
        n_runs = con.execute("SELECT count(*) FROM runs").fetchone()[0]

        # ---- grid points: aggregates over seeds ---------------------------------------
        ax_sql = ", ".join(_sql_ident(a) for a in axes)
        group = f"GROUP BY {ax_sql} ORDER BY {ax_sql}" if axes else ""
        sel = [f"{_sql_ident(a)}" for a in axes] + [
            "count(*) AS n", "count(*) FILTER (WHERE status <> 'ok') AS diverged"]
        for m in metrics:
            q = _sql_ident(m)
            fin = f"FILTER (WHERE isfinite({q}::DOUBLE))"
            sel += [f"median({q}::DOUBLE) {fin}", f"avg({q}::DOUBLE) {fin}",
                    f"min({q}::DOUBLE) {fin}", f"max({q}::DOUBLE) {fin}"]
        pts = con.execute(f"SELECT {', '.join(sel)} FROM runs {group}").fetchnumpy()
        keys = list(pts)
        n_pts = len(pts[keys[0]]) if keys else 0
        points = {"axes": {a: _col(pts[a]) for a in axes},  # exact: JSON numbers
                  "n": _col(pts["n"]), "diverged": _col(pts["diverged"]), "m": {}}
        for j, m in enumerate(metrics):
            base = len(axes) + 2 + 4 * j
            # aggregates in the metric's own precision: a float32 metric has no more digits
            points["m"][m] = {agg: _floats(pts[keys[base + k]], rtypes[m])
                              for k, agg in enumerate(AGGS)}
        axis_info = []
        for a in axes:
            vals = sorted({v for v in points["axes"][a] if v is not None},
                          key=lambda v: (isinstance(v, str), v))
            axis_info.append({"name": a, "values": vals, "type": rtypes[a],
                              "numeric": _is_numeric(rtypes[a]),  # else: categories
                              "log": _is_numeric(rtypes[a]) and _log_spaced(vals)})

        # the runs, each with its grid point's index
        on = " AND ".join(f"r.{_sql_ident(a)} IS NOT DISTINCT FROM p.{_sql_ident(a)}"
                          for a in axes) or "true"
        pidx = (f"(SELECT row_number() OVER (ORDER BY {ax_sql}) - 1 AS point, {ax_sql} "
                f"FROM (SELECT DISTINCT {ax_sql} FROM runs))" if axes
                else "(SELECT 0 AS point)")
        ranked = (f"SELECT r.*, p.point, row_number() OVER (PARTITION BY p.point ORDER BY "
                  f"r.seed, r.run_id) - 1 AS k FROM runs r JOIN {pidx} p ON {on}")

        # ---- runs table (bounded) -----------------------------------------------------
        per_point_table = max(1, max_table_runs // max(n_pts, 1))
        tcols = ["run_id", "seed", *axes, "status", "diverged_step", *metrics]
        tcols = [c for c in tcols if c in rtypes]
        where = "" if n_runs <= max_table_runs else f"WHERE k < {per_point_table}"
        tr = con.execute(f"SELECT point, {', '.join(_sql_ident(c) for c in tcols)} FROM "
                         f"({ranked}) {where} ORDER BY point, seed, run_id "
                         f"LIMIT {int(max_table_runs)}").fetchnumpy()
        # the axis columns are not embedded twice: the page takes them from the run's point
        runs_tbl = {"columns": tcols, "point": _col(tr["point"]),
                    "data": {c: _column(tr[c], rtypes[c]) for c in tcols if c not in axes}}
        n_table = len(runs_tbl["point"])
        if max_curve_values is None:
            max_curve_values = max(MIN_CURVE_VALUES, MAX_PAGE_FLOATS - len(metrics) * (
                len(AGGS) * n_pts + n_table))

        # ---- curves: a bounded sample per grid point ----------------------------------
        steps_all = [int(s) for s, in con.execute(
            "SELECT DISTINCT step FROM curves ORDER BY step").fetchall()]
        n_c = max(len(cmetrics), 1)
        k = max(1, min(curve_runs_per_point,
                       max_curve_values // max(n_pts * len(steps_all) * n_c, 1)))
        steps = steps_all
        per_run = max(max_curve_values // max(n_pts * k * n_c, 1), 1)
        if len(steps_all) > per_run:  # thin the logged steps, keeping the first and last
            keep = max(per_run, min(MIN_CURVE_STEPS, len(steps_all)))
            idx = np.unique(np.round(np.linspace(0, len(steps_all) - 1, keep)).astype(int))
            steps = [steps_all[i] for i in idx]
        point_stride = max(1, math.ceil(n_pts * k * len(steps) * n_c / max_curve_values))
        cur = con.execute(
            f"SELECT s.point, c.run_id, c.step, "
            f"{', '.join('c.' + _sql_ident(m) for m in cmetrics) or 'NULL AS none'} FROM "
            f"curves c JOIN (SELECT run_id, point, seed, status FROM ({ranked}) WHERE k < {k} "
            f"AND point % {point_stride} = 0) s USING (run_id) WHERE c.step IN (SELECT "
            f"unnest({_sql_list(steps)}::BIGINT[])) ORDER BY s.point, s.seed, c.run_id, "
            f"c.step").fetchnumpy() if steps_all else {}
        curves = {"metrics": cmetrics, "runs": [], "point": [], "offsets": [0],
                  "steps": "", "values": {}}
        if cur and len(cur["run_id"]):
            rid = cur["run_id"]
            change = np.flatnonzero(rid[1:] != rid[:-1]) + 1
            starts = np.concatenate([[0], change])
            curves["runs"] = [str(rid[i]) for i in starts]
            curves["point"] = [int(cur["point"][i]) for i in starts]
            curves["offsets"] = [int(i) for i in starts] + [len(rid)]
            curves["steps"] = _b64(cur["step"], "<i4")
            for m in cmetrics:
                v = np.asarray(cur[m], dtype=np.float64)
                if hasattr(cur[m], "mask"):
                    v = np.where(np.ma.getmaskarray(cur[m]), np.nan, np.ma.getdata(cur[m]))
                curves["values"][m] = _b64(v, "<f4")
        sample = {"runs_per_point": k, "steps": len(steps), "steps_total": len(steps_all),
                  "points": len(range(0, n_pts, point_stride)), "points_total": n_pts,
                  "runs": len(curves["runs"])}

    meta = _meta(folder, man, status)
    meta.update(runs_in_table=n_table, runs=n_runs, build_s=time.perf_counter() - t0)
    return {"meta": meta, "axes": axis_info, "metrics": metrics, "aggs": list(AGGS),
            "points": points, "runs": runs_tbl, "curves": curves, "curve_sample": sample}


def _meta(folder: Path, man: dict, status: dict) -> dict:
    procs = status.get("processes") or []
    now = time.time()
    # wall time of the launches (started → finished, or → last update while running)
    wall = sum(((p.get("finished") or now - (p.get("updated_ago_s") or 0.0)) - p["started"])
               for p in procs) if procs else None
    compile_s = [p.get("compile_s") for p in procs]
    compile_s = sum(compile_s) if compile_s and None not in compile_s else None
    return {
        "name": folder.name, "experiment": man.get("experiment"),
        "sweep_file": man.get("source_file"), "created": man.get("created"),
        "host": man.get("host"), "device": man.get("device"),
        "jaxdyn_version": man.get("jaxdyn_version"), "jax_version": man.get("jax_version"),
        "git_rev": man.get("git_rev"), "steps": (man.get("sweep") or {}).get("steps"),
        "seeds": len((man.get("sweep") or {}).get("seeds") or []),
        "state": status["state"], "runs_done": status["runs_done"],
        "runs_total": status["runs_total"], "diverged": status["diverged"],
        "eta_s": status.get("eta_s"), "wall_s": wall, "compile_s": compile_s,
    }


def _empty(folder: Path, man: dict, status: dict) -> dict:
    meta = _meta(folder, man, status)
    meta.update(runs_in_table=0, runs=0, build_s=0.0)
    return {"meta": meta, "axes": [], "metrics": [], "aggs": list(AGGS),
            "points": {"axes": {}, "n": [], "diverged": [], "m": {}},
            "runs": {"columns": [], "point": [], "data": {}},
            "curves": {"metrics": [], "runs": [], "point": [], "offsets": [0], "steps": "",
                       "values": {}},
            "curve_sample": {"runs_per_point": 0, "steps": 0, "steps_total": 0, "points": 0,
                             "points_total": 0, "runs": 0}}


def sweep_summary(folder: Path) -> dict:
    """One row of the served sweep list: progress, ETA, diverged count."""
    s = sweep_status(folder)
    return {k: s[k] for k in ("name", "experiment", "state", "runs_done", "runs_total",
                              "diverged", "eta_s", "run_steps_per_s")}
