"""Benchmark: reading a sweep of >= 1e7 curve rows through jaxdyn's analysis side vs pandas.

On an ``eos.mean_model`` sweep (default 100,000 runs x 1,000 steps, a log point every 10
steps: 101 points per run, 10.1 million curve rows), times and peak memory of

  (a) SQL through ``jaxdyn.query`` (DuckDB over the Parquet parts):
      a1  average loss per lr at the last logged step (a GROUP BY over every run),
      a2  average loss and max sharpness per lr over *all* logged steps (all 1e7 rows);
  (b) a 20-run curve read for a plot: ``jaxdyn.load(...).curves(run_ids=<20 ids>,
      columns=["loss", "b"])`` (column projection + row-group pruning on run_id);
  (c) pandas reading the whole tables (``pd.read_parquet`` of curves and runs), then
      c1/c2 the same GROUP BYs (merge with runs, groupby lr) and c3 the same 20-run filter.

Each case runs in a fresh Python process (so one case's memory or page-cache state of the
Python heap does not leak into the next), ``--repeats`` times. Peak memory is the process's
peak resident set (VmHWM in /proc/self/status; ``ru_maxrss`` where /proc is missing), which
counts Arrow's and DuckDB's native buffers (tracemalloc would not). The baseline row is a
process that only imports the analysis side (pandas, pyarrow, duckdb, jaxdyn.query);
"peak - baseline" is what a case adds. Files are read from the OS page cache (the sweep was
just written or read): the numbers compare readers, not disks.

The sweep is generated once with ``jaxdyn run`` (in a subprocess) into ``--data`` (default
``results/``, git-ignored) and reused when it is already complete. No device-specific code.

    .venv/bin/python benchmarks/bench_query.py [--runs 100000] [--steps 1000]
                                               [--log-every 10] [--repeats 3]
                                               [--data results] [--out benchmarks/results]

Writes ``<out>/query.md`` (the table printed at the end) and ``<out>/query.json``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # runnable from a checkout without installing
    sys.path.insert(0, str(REPO))

NAME = "bench_query"
SEEDS = 4

SQL_LAST = ("SELECT r.lr, avg(c.loss) AS loss FROM curves c JOIN runs r USING (run_id) "
            "WHERE c.step = (SELECT max(step) FROM curves) GROUP BY r.lr ORDER BY r.lr")
SQL_ALL = ("SELECT r.lr, avg(c.loss) AS loss, max(c.sharpness) AS sharpness FROM curves c "
           "JOIN runs r USING (run_id) GROUP BY r.lr ORDER BY r.lr")

CASES = {
    "baseline": "imports only (pandas, pyarrow, duckdb, jaxdyn.query)",
    "a1_sql_last_step": "(a1) `jaxdyn.query`: avg loss per lr at the last step (GROUP BY)",
    "a2_sql_all_rows": "(a2) `jaxdyn.query`: avg loss, max sharpness per lr over all rows",
    "b_api_20_runs": "(b) `Results.curves(run_ids=20 ids, columns=[loss, b])`",
    "c1_pandas_last_step": "(c1) pandas: read whole curves + runs, merge, filter, groupby",
    "c2_pandas_all_rows": "(c2) pandas: read whole curves + runs, merge, groupby all rows",
    "c3_pandas_20_runs": "(c3) pandas: read whole curves, filter the 20 runs",
}


def sweep_text(runs: int, steps: int, log_every: int) -> str:
    n_lr = runs // SEEDS
    rows = runs * (steps // log_every + 1)
    return f"""# Query benchmark data (benchmarks/bench_query.py): {runs} runs of eos.mean_model,
# {steps} steps with a log point every {log_every} steps -> {rows:,} curve rows.
name = "{NAME}"
experiment = "eos.mean_model"
steps = {steps}
seeds = {SEEDS}
log = {{ every = {log_every} }}
precision = "float32"
[fixed]
d = 100
init_scale = 0.01
[grid]
lr = {{ start = 2.5e-4, stop = 2.5e-2, num = {n_lr}, spacing = "log" }}
"""


# ---- measuring (inside the per-case subprocess) ----------------------------------------------
def _status_kb(field: str) -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return float(line.split()[1])
    except OSError:
        pass
    return None


def peak_mb() -> float:
    kb = _status_kb("VmHWM")
    if kb is None:  # no /proc: ru_maxrss is KB on Linux, bytes on macOS
        r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        kb = r / 1024 if sys.platform == "darwin" else r
    return kb / 1024


def rss_mb() -> float:
    kb = _status_kb("VmRSS")
    return kb / 1024 if kb is not None else float("nan")


def run_case(case: str, data: Path, ids_file: Path) -> dict:
    import duckdb  # noqa: F401 - the baseline counts every analysis import
    import pandas as pd
    import pyarrow  # noqa: F401

    import jaxdyn

    ids = json.loads(ids_file.read_text())
    folder = data / NAME
    rss0 = rss_mb()
    t0 = time.perf_counter()
    out: dict = {}
    if case == "baseline":
        pass
    elif case == "a1_sql_last_step":
        df = jaxdyn.query(SQL_LAST, sweeps=[NAME], root=data)
        out = {"rows": len(df), "checksum": float(df.loss.sum())}
    elif case == "a2_sql_all_rows":
        df = jaxdyn.query(SQL_ALL, sweeps=[NAME], root=data)
        out = {"rows": len(df), "checksum": float(df.loss.sum())}
    elif case == "b_api_20_runs":
        df = jaxdyn.load(NAME, root=data).curves(run_ids=ids, columns=["loss", "b"])
        out = {"rows": len(df), "columns": list(df.columns),
               "checksum": float(df.loss.astype("float64").sum())}
    elif case in ("c1_pandas_last_step", "c2_pandas_all_rows"):
        curves = pd.read_parquet(folder / "curves")
        runs = pd.read_parquet(folder / "runs")
        if case == "c1_pandas_last_step":
            curves = curves[curves.step == curves.step.max()]
        m = curves.merge(runs[["run_id", "lr"]], on="run_id")
        m["loss"] = m["loss"].astype("float64")  # DuckDB averages in double precision
        g = m.groupby("lr").loss.mean()
        out = {"rows": len(g), "checksum": float(g.sum()),
               "curves_frame_mb": float(curves.memory_usage(deep=True).sum() / 2**20)}
    elif case == "c3_pandas_20_runs":
        curves = pd.read_parquet(folder / "curves")
        df = curves[curves.run_id.isin(ids)][["run_id", "step", "loss", "b"]]
        out = {"rows": len(df), "checksum": float(df.loss.astype("float64").sum())}
    else:
        raise SystemExit(f"unknown case {case}")
    wall = time.perf_counter() - t0
    return {"case": case, "wall_s": wall, "peak_mb": peak_mb(), "rss_before_mb": rss0, **out}


# ---- driving ---------------------------------------------------------------------------------
def ensure_data(args) -> dict:
    """Generate the sweep (or reuse a complete one with the same settings)."""
    from jaxdyn.results import QueryError, sweep_status

    data = Path(args.data)
    data.mkdir(parents=True, exist_ok=True)
    text = sweep_text(args.runs, args.steps, args.log_every)
    f = data / f"{NAME}.toml"
    try:
        man = json.loads((data / NAME / "manifest.json").read_text())
        st = sweep_status(NAME, data)
        reuse = (man.get("source") == text and st["state"] == "complete")
    except (OSError, ValueError, QueryError):
        reuse = False
    gen_s = None
    if not reuse:
        f.write_text(text)
        print(f"[bench_query] generating {args.runs:,} runs x {args.steps} steps into "
              f"{data / NAME} ...", file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        r = subprocess.run([sys.executable, "-m", "jaxdyn", "run", str(f), "--out", str(data),
                            "--quiet", "--yes", "--force"], cwd=REPO, capture_output=True,
                           text=True)
        gen_s = time.perf_counter() - t0
        if r.returncode != 0:
            raise SystemExit(f"generating the sweep failed:\n{r.stderr}")
        print(r.stdout, file=sys.stderr)
    else:
        print(f"[bench_query] reusing {data / NAME}", file=sys.stderr)
    folder = data / NAME
    import pyarrow.parquet as pq

    cparts = sorted((folder / "curves").glob("part-*.parquet"))
    rparts = sorted((folder / "runs").glob("part-*.parquet"))
    rows = sum(pq.read_metadata(p).num_rows for p in cparts)
    rgs = sum(pq.read_metadata(p).num_row_groups for p in cparts)
    return {"folder": str(folder), "generate_s": gen_s, "reused": reuse,
            "curve_rows": rows, "runs": sum(pq.read_metadata(p).num_rows for p in rparts),
            "curves_parts": len(cparts), "curves_row_groups": rgs,
            "curves_bytes": sum(p.stat().st_size for p in cparts),
            "runs_bytes": sum(p.stat().st_size for p in rparts),
            "curves_columns": pq.read_schema(cparts[0]).names}


def pick_ids(folder: Path, n: int = 20) -> list[str]:
    """n run_ids spread over the whole sweep (different parts and row groups)."""
    import pyarrow.dataset as ds

    ids = sorted(ds.dataset(str(folder / "runs"), format="parquet")
                 .to_table(columns=["run_id"]).column(0).to_pylist())
    step = len(ids) // n
    return [ids[i * step + step // 2] for i in range(n)]


def git_rev() -> str | None:
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO,
                             capture_output=True, text=True, timeout=5).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=REPO, capture_output=True, text=True, timeout=5).stdout
        return rev + ("-dirty" if dirty.strip() else "") if rev else None
    except Exception:  # noqa: BLE001 - no git is not an error
        return None


def loadavg():
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def report(res: dict) -> str:
    d = res["data"]
    base = res["summary"]["baseline"]["peak_mb_median"]
    lines = [
        "# jaxdyn query benchmark: SQL, the Python API and pandas on one sweep",
        "",
        f"- date: {res['date']}; host: {res['host']} ({res['cpus']} CPUs, python "
        f"{res['python']}), git: {res['git']}",
        f"- versions: duckdb {res['versions']['duckdb']}, pyarrow {res['versions']['pyarrow']}"
        f", pandas {res['versions']['pandas']}",
        f"- host load average (1/5/15 min) at start {res['load_start']}, at end "
        f"{res['load_end']}: the machine is shared with other processes, so the times are "
        f"noisy; the memory numbers are not",
        f"- data: `{NAME}`, eos.mean_model, {d['runs']:,} runs x {res['steps']} steps, a log "
        f"point every {res['log_every']} steps: **{d['curve_rows']:,} curve rows** "
        f"({len(d['curves_columns'])} columns: {', '.join(d['curves_columns'])}) in "
        f"{d['curves_parts']} parts / {d['curves_row_groups']} row groups, "
        f"{d['curves_bytes'] / 2**20:.0f} MiB zstd on disk (runs: {d['runs_bytes'] / 2**20:.1f}"
        f" MiB)" + (f"; generated by `jaxdyn run` in {d['generate_s']:.0f} s"
                    if d["generate_s"] else "; reused from an earlier run"),
        f"- each case: a fresh Python process, {res['repeats']} times; wall = the case's own "
        f"work after imports (median, min); peak = the process's peak resident set (VmHWM, "
        f"median over repeats), baseline = a process that only imports the analysis side",
        "",
        "| case | wall median (s) | wall min (s) | peak RSS (MiB) | peak - baseline (MiB) "
        "| result rows |",
        "|---|---|---|---|---|---|",
    ]
    for case, desc in CASES.items():
        s = res["summary"][case]
        lines.append(f"| {desc} | {s['wall_median']:.3f} | {s['wall_min']:.3f} | "
                     f"{s['peak_mb_median']:.0f} | {s['peak_mb_median'] - base:.0f} | "
                     f"{s.get('rows', '')} |")
    r = res["ratios"]
    lines += [
        "",
        f"- GROUP BY at the last step: pandas (c1) / SQL (a1): {r['c1/a1_time']:.1f}x the "
        f"time, {r['c1/a1_mem']:.1f}x the added memory",
        f"- GROUP BY over all rows: pandas (c2) / SQL (a2): {r['c2/a2_time']:.1f}x the time, "
        f"{r['c2/a2_mem']:.1f}x the added memory",
        f"- 20-run curve read: pandas (c3) / API (b): {r['c3/b_time']:.1f}x the time, "
        f"{r['c3/b_mem']:.1f}x the added memory",
        f"- results agree: SQL vs pandas checksums, last step {r['agree_last']}, all rows "
        f"{r['agree_all']}, 20 runs {r['agree_20']}",
        f"- the pandas frame of the whole curves table: "
        f"{res['summary']['c2_pandas_all_rows'].get('curves_frame_mb', float('nan')):.0f} "
        f"MiB in memory",
        f"- benchmark total time: {res['total_s']:.0f} s",
    ]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=100_000, help="runs (default 100,000)")
    ap.add_argument("--steps", type=int, default=1000, help="steps per run (default 1000)")
    ap.add_argument("--log-every", type=int, default=10, help="log interval (default 10)")
    ap.add_argument("--repeats", type=int, default=3, help="fresh processes per case")
    ap.add_argument("--data", default=str(REPO / "results"),
                    help="results root for the generated sweep (default results/)")
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results"),
                    help="where query.md and query.json go")
    ap.add_argument("--case", default=None, help=argparse.SUPPRESS)  # internal: one case
    ap.add_argument("--ids", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.case:
        print(json.dumps(run_case(args.case, Path(args.data), Path(args.ids))))
        return 0

    t_start = time.perf_counter()
    load_start = loadavg()
    data = ensure_data(args)
    if data["curve_rows"] < 10_000_000:
        print(f"[bench_query] note: {data['curve_rows']:,} curve rows (< 1e7)", file=sys.stderr)
    ids_file = Path(args.data) / NAME / "bench_ids.json"
    ids_file.write_text(json.dumps(pick_ids(Path(data["folder"]))))
    # warm the page cache once (every reader then reads from memory)
    for p in sorted(Path(data["folder"]).rglob("part-*.parquet")):
        p.read_bytes()

    raw: dict[str, list] = {c: [] for c in CASES}
    for rep in range(args.repeats):
        for case in CASES:  # interleaved, so slow phases of the host hit every case
            r = subprocess.run([sys.executable, __file__, "--case", case, "--data", args.data,
                                "--ids", str(ids_file)], capture_output=True, text=True,
                               cwd=REPO)
            if r.returncode != 0:
                raise SystemExit(f"case {case} failed:\n{r.stderr}")
            m = json.loads(r.stdout.strip().splitlines()[-1])
            raw[case].append(m)
            print(f"[bench_query] {rep + 1}/{args.repeats} {case}: {m['wall_s']:.3f} s, "
                  f"peak {m['peak_mb']:.0f} MiB", file=sys.stderr, flush=True)

    summary = {}
    for case, ms in raw.items():
        walls = [m["wall_s"] for m in ms]
        s = {"wall_median": statistics.median(walls), "wall_min": min(walls),
             "peak_mb_median": statistics.median(m["peak_mb"] for m in ms),
             "peak_mb_max": max(m["peak_mb"] for m in ms)}
        for k in ("rows", "checksum", "curves_frame_mb"):
            if k in ms[0]:
                s[k] = ms[0][k]
        summary[case] = s
    base = summary["baseline"]["peak_mb_median"]

    def ratio(a, b, key):
        if key == "time":
            return summary[a]["wall_median"] / summary[b]["wall_median"]
        return (summary[a]["peak_mb_median"] - base) / max(summary[b]["peak_mb_median"] - base,
                                                            1.0)

    def agree(a, b):
        x, y = summary[a]["checksum"], summary[b]["checksum"]
        return f"{abs(x - y) / max(abs(y), 1e-300):.1e} relative difference"

    import duckdb
    import pandas
    import pyarrow

    res = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "host": platform.node(), "cpus": os.cpu_count(), "python": platform.python_version(),
        "git": git_rev(), "load_start": load_start, "load_end": loadavg(),
        "versions": {"duckdb": duckdb.__version__, "pyarrow": pyarrow.__version__,
                     "pandas": pandas.__version__},
        "steps": args.steps, "log_every": args.log_every, "repeats": args.repeats,
        "data": data, "sql": {"a1": SQL_LAST, "a2": SQL_ALL}, "cases": CASES,
        "summary": summary, "raw": raw,
        "ratios": {
            "c1/a1_time": ratio("c1_pandas_last_step", "a1_sql_last_step", "time"),
            "c1/a1_mem": ratio("c1_pandas_last_step", "a1_sql_last_step", "mem"),
            "c2/a2_time": ratio("c2_pandas_all_rows", "a2_sql_all_rows", "time"),
            "c2/a2_mem": ratio("c2_pandas_all_rows", "a2_sql_all_rows", "mem"),
            "c3/b_time": ratio("c3_pandas_20_runs", "b_api_20_runs", "time"),
            "c3/b_mem": ratio("c3_pandas_20_runs", "b_api_20_runs", "mem"),
            "agree_last": agree("a1_sql_last_step", "c1_pandas_last_step"),
            "agree_all": agree("a2_sql_all_rows", "c2_pandas_all_rows"),
            "agree_20": agree("b_api_20_runs", "c3_pandas_20_runs"),
        },
    }
    res["total_s"] = time.perf_counter() - t_start
    text = report(res)
    print(text)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "query.md").write_text(text)
    (out / "query.json").write_text(json.dumps(res, indent=2, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
