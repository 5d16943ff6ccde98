"""``jaxdyn run | check | list | query | status | plot | bench``.

``jaxdyn report | serve``: a sweep's explorer as one HTML file, a local web app of all sweeps.

Every user error ends in one message on stderr naming the file, the key and what was
expected, and exit status 2; nothing is written before a sweep file has been fully validated.
"""

from __future__ import annotations

import argparse

import numpy as np
import sys
from pathlib import Path

from jaxdyn.fmt import ago as _fmt_ago, duration, eta as _fmt_eta, rate

EXIT_USAGE = 2
_fmt_rate = rate


def _err(msg: str) -> int:
    print(f"jaxdyn: error: {msg}", file=sys.stderr)
    return EXIT_USAGE


def cmd_run(args) -> int:
    from jaxdyn.launch import run
    from jaxdyn.spec import JaxdynError, TooLarge
    from jaxdyn.store import DAMAGED

    if args.chunk_size is not None and args.chunk_size <= 0:
        return _err(f"--chunk-size: expected a positive integer, got {args.chunk_size}")
    if args.micro_batch is not None and args.micro_batch < 0:
        return _err(f"--micro-batch: expected an integer >= 0 (0 = all of a device's runs "
                    f"at once), got {args.micro_batch}")
    def go(yes):
        return run(args.file, out=args.out, overrides=args.set or [],
                   chunk_size=args.chunk_size, micro_batch=args.micro_batch, force=args.force,
                   quiet=args.quiet, yes=yes, distributed=args.distributed,
                   coordinator=args.coordinator, num_processes=args.num_processes,
                   process_id=args.process_id)

    try:
        try:
            s = go(args.yes)
        except TooLarge as e:
            # a huge sweep: asked at a terminal, refused without one (never started unasked)
            if not (e.confirmable and sys.stdin.isatty() and sys.stderr.isatty()):
                raise
            print(f"jaxdyn: {e}", file=sys.stderr)
            try:
                answer = input("run it anyway? [y/N] ")
            except EOFError:
                answer = ""
            if answer.strip().lower() not in ("y", "yes"):
                return _err("not started")
            s = go(True)
    except JaxdynError as e:
        return _err(str(e))
    except KeyboardInterrupt:
        print("\njaxdyn: interrupted; completed chunks are kept, run again to resume",
              file=sys.stderr)
        return 130
    st = s.stats
    who = f" (process {s.process_index} of {s.process_count})" if s.process_count > 1 else ""
    dup = (f", {s.duplicates} duplicate grid points' runs dropped" if s.duplicates else "")
    lines = [
        f"sweep      {s.name} ({s.experiment}){who}",
        f"runs       {s.runs_total} total, {s.runs_run} run now, "
        f"{s.runs_done_before} already done{dup}",
        f"diverged   {s.diverged} of the runs run now",
        f"wall time  {duration(s.wall_s)} (compile {duration(s.compile_s)}"
        + (", micro-batch " + "/".join(str(m) if m else "whole" for m in st["micro_batch"])
           if any(st["micro_batch"]) else "")
        + (f" measured in {duration(st['tune_s'])}" if st.get("tune_s") else "")
        + f"), {rate(st['run_steps_per_s'])} run·steps/s",
        f"writing    {duration(st.get('write_s', 0.0))} on the writer thread, overlapped "
        f"with compute; the sweep waited {duration(st.get('write_wait_s', 0.0))} for it",
        f"tables     {s.folder / 'runs'}  {s.folder / 'curves'}",
    ]
    if s.repaired:
        lines.insert(2, f"repaired   {len(s.repaired)} damaged part(s) moved to "
                        f"{s.folder / DAMAGED}, their runs run again: "
                        + "; ".join(f"{n}: {why}" for n, why in list(s.repaired.items())[:3])
                        + (" ..." if len(s.repaired) > 3 else ""))
    lines += _adaptive_lines(st)
    print("\n".join(lines))
    return 0


def cmd_check(args) -> int:
    from jaxdyn.fmt import nbytes
    from jaxdyn.launch import check
    from jaxdyn.spec import JaxdynError

    try:
        info = check(args.file, overrides=args.set or [], yes=args.yes)
    except JaxdynError as e:
        return _err(str(e))
    dup = f", {info['duplicates']} duplicate grid points' runs dropped" if info[
        "duplicates"] else ""
    print(f"{args.file}: ok: {info['runs']:,} runs in {info['groups']} compiled group(s)"
          f"{dup}; one run needs about {nbytes(info['run_bytes'])} of device memory")
    return 0


def cmd_list(args) -> int:
    from jaxdyn import experiments

    refs = args.refs or experiments.names()
    shown = []
    try:
        for ref in refs:
            if ref.endswith(".py") and ":" not in ref:  # every Experiment in a file
                shown += [(f"{ref}:{n}", e) for n, e in _file_experiments(ref)]
            else:
                shown.append((ref, experiments.get(ref, Path.cwd())))
    except KeyError as e:
        return _err(str(e))
    if not args.refs:
        print("Your own experiments: experiment = \"path/to/file.py:NAME\" in a sweep file "
              "(jaxdyn list FILE.py shows a file's) or \"package.module:NAME\". Any sweep may "
              "name an optax optimizer (optimizer = \"adamw\") and a schedule; their "
              "arguments are hyperparameters.\n")
    for name, exp in shown:
        print(f"{name}\n    {exp.doc}")
        print("    hyperparameters:")
        for p in exp.params:
            kind = "static" if p.static else "dynamic"
            ch = f" one of {list(p.choices)}" if p.choices else ""
            print(f"      {p.name:<14} {p.type.__name__:<6} {kind:<8} default {p.default!r:<10}"
                  f"{ch}  {p.doc}")
        print("    metrics:")
        for m in exp.metrics:
            shape = f" {m.shape}" if m.shape else ""
            print(f"      {m.name:<14}{shape} {m.doc}")
        print()
    return 0


def _file_experiments(path: str):
    """``(variable, Experiment)`` of every Experiment a Python file defines."""
    from jaxdyn import experiments
    from jaxdyn.experiments import Experiment

    p = Path(path)
    if not p.is_file():
        raise experiments.ExperimentLoadError(f"{path}: no such file", [])
    import ast

    tree = ast.parse(p.read_text(), str(p))
    names = [t.id for node in tree.body if isinstance(node, (ast.Assign, ast.AnnAssign))
             for t in (node.targets if isinstance(node, ast.Assign) else [node.target])
             if isinstance(t, ast.Name)]
    out = []
    for n in names:
        try:
            exp = experiments.get(f"{p.resolve()}:{n}")
        except KeyError as e:
            if "is a" in str(e) and "not a jaxdyn.Experiment" in str(e):
                continue
            raise
        if isinstance(exp, Experiment):
            out.append((n, exp))
    return out


def cmd_query(args) -> int:
    import warnings

    from jaxdyn.results import QueryError, query
    from jaxdyn.results.files import DamagedPartsWarning

    if not args.sql:
        return _err("query: give the SQL as the last argument")
    if args.max_rows < 1:
        return _err(f"--max-rows: expected a positive integer, got {args.max_rows}")
    *names, sql = args.sql
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", DamagedPartsWarning)
            df = query(sql, sweeps=names or None, root=args.out)
    except QueryError as e:
        return _err(str(e))
    for w in caught:
        print(f"jaxdyn: warning: {w.message}", file=sys.stderr)
    fmt = args.format
    try:
        if fmt == "parquet":
            if not args.output:
                return _err("--format parquet needs --output FILE")
            df.to_parquet(args.output, index=False)
            return 0
        if fmt == "table":
            import pandas as pd

            if df.empty:
                text = "  ".join(df.columns) + "\n(0 rows)"
            else:
                with pd.option_context("display.max_columns", None, "display.width", 200,
                                       "display.max_colwidth", 60):
                    text = df.to_string(index=False, max_rows=args.max_rows)
                if len(df) > args.max_rows:
                    text += (f"\n({len(df)} rows, {args.max_rows} shown: --max-rows N, or "
                             f"--format csv)")
        elif fmt == "csv":
            text = df.to_csv(index=False)
        else:  # json lines
            text = _json_lines(df)
        if args.output:
            Path(args.output).write_text(text if text.endswith("\n") else text + "\n")
        else:
            print(text.rstrip("\n"))
    except OSError as e:
        return _err(f"cannot write {args.output}: {e.strerror or e}")
    return 0


def _json_value(v):
    """A JSON value: exact floats (repr round-trips), null for NaN/inf/NA, lists for arrays."""
    if isinstance(v, np.ndarray):
        return [_json_value(x) for x in v.tolist()]
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float):
        return v if np.isfinite(v) else None
    if isinstance(v, (list, tuple)):
        return [_json_value(x) for x in v]
    if v is None or isinstance(v, (bool, int, str)):
        return v
    try:
        import pandas as pd

        if pd.isna(v):
            return None
    except (TypeError, ValueError):
        pass
    return str(v)


def _json_lines(df) -> str:
    """One JSON object per row."""
    import json

    cols = [str(c) for c in df.columns]
    return "\n".join(json.dumps(dict(zip(cols, map(_json_value, row))), allow_nan=False)
                     for row in df.itertuples(index=False, name=None))


def cmd_status(args) -> int:
    import json

    from jaxdyn.results import QueryError, resolve, sweep_names, sweep_status
    from jaxdyn.store import DAMAGED

    names = args.names or sweep_names(args.out)
    if not names:
        print(f"no sweeps under {args.out}")
        return 0
    if args.names:
        try:
            for n in names:
                resolve(n, args.out)  # an unknown name fails before anything is printed
        except QueryError as e:
            return _err(str(e))
    infos, failed = [], 0
    for n in names:  # one unreadable sweep does not hide the others
        try:
            infos.append(sweep_status(n, args.out))
        except QueryError as e:
            if args.names:  # named: an error (after the others are shown)
                failed += 1
                print(f"jaxdyn: error: {e}", file=sys.stderr)
            else:
                infos.append({"name": str(n), "state": "unreadable", "error": str(e)})
    if args.json:
        print(json.dumps(infos, indent=2, default=str))
        return EXIT_USAGE if failed else 0
    blocks = []
    for s in infos:
        if s["state"] == "unreadable":
            blocks.append(f"{s['name']}  unreadable\n  error     {s['error']}")
            continue
        total = s["runs_total"]
        pct = f" ({100 * s['runs_done'] / total:.1f}%)" if total else ""
        of = f"of {total:,} " if not s.get("refine") else ""
        if s.get("refine"):  # rounds add runs: the grid's count is round 0's
            pct = f" ({total:,} in the grid)"
        lines = [f"{s['name']}  ({s['experiment']})  {s['state']}",
                 f"  runs      {s['runs_done']:,} {of}done{pct}, "
                 f"{s['diverged']:,} diverged, {s['parts']:,} parts"]
        bad = {**s["damaged_parts"], **s["orphan_parts"]}
        if bad:
            lines.append(f"  damaged   {len(bad)} part(s): " + "; ".join(
                f"{n}: {why}" for n, why in list(bad.items())[:3]) + (" ..." if len(bad) > 3
                                                                     else ""))
            lines.append(f"  repair    {s['resume']}  (moves them to damaged/ and runs their "
                         f"runs again)")
        if s["moved_to_damaged"]:
            lines.append(f"  repaired  {len(s['moved_to_damaged'])} damaged part(s) were "
                         f"moved to {Path(s['folder']) / DAMAGED} and their runs run again")
        if s["processes"] or s["writer_pids"]:
            ch = f"chunks {s['chunks_done']:,} of {s['chunks_total']:,} (this launch)"
            if s["state"] == "running":
                pids = sorted({p["pid"] for p in s["processes"] if p["state"] == "running"}
                              | set(s["writer_pids"]))
                bits = [ch]
                if s["run_steps_per_s"]:
                    bits.append(f"{_fmt_rate(s['run_steps_per_s'])} run·steps/s")
                    if s["eta_s"] is not None:
                        bits.append(f"ETA {_fmt_eta(s['eta_s'])}")
                else:
                    bits.append("compiling or on its first chunk")
                ups = [p["updated_ago_s"] for p in s["processes"]]
                if ups:
                    bits.append(f"updated {_fmt_ago(min(ups))}")
                who = f"pid {', '.join(map(str, pids))}" if pids else "pid unknown"
                lines.append(f"  running   {who}: " + ", ".join(bits))
            elif s["state"] in ("stopped", "stalled", "incomplete"):
                why = {"stopped": "stopped (its process is gone)",
                       "stalled": "stalled (no progress record update for "
                                  f"{_fmt_eta(min(p['updated_ago_s'] for p in s['processes']))}"
                                  "; its process may have stopped)",
                       "incomplete": "not running"}[s["state"]]
                lines.append(f"  progress  {why}; {ch}")
            else:
                fin = [p for p in s["processes"] if p["run_steps_per_s"]]
                if fin:
                    lines.append(f"  last run  {ch}, "
                                 f"{_fmt_rate(sum(p['run_steps_per_s'] for p in fin))} "
                                 f"run·steps/s average")
        if s["state"] in ("stopped", "stalled", "incomplete"):
            lines.append(f"  resume    {s['resume']}")
        if s.get("refine"):
            lines.append(f"  refine    {_refine_line(s['refine'])}")
        lines.append(f"  file      {s['file']['text']}")
        blocks.append("\n".join(lines))
    if blocks:
        print("\n\n".join(blocks))
    return EXIT_USAGE if failed else 0


def cmd_plot(args) -> int:
    from jaxdyn.results import QueryError, plot

    out = Path(args.output)
    if out.suffix.lower() not in (".png", ".pdf", ".svg"):
        return _err(f"-o {out}: expected a .png, .pdf or .svg file name")
    try:
        info = plot(args.name, args.x, args.y, out, hue=args.hue, where=args.where,
                    logx=args.logx, logy=args.logy, spread=args.spread, root=args.out,
                    _cli=True)
    except QueryError as e:
        return _err(str(e))
    what = "one line per run" if info["per_run"] else (
        f"mean over runs, shaded {info['spread']}" if info["spread"] else "mean over runs")
    print(f"wrote {info['path']}: {info['runs']} runs, {info['lines']} lines ({what})")
    if info["non_finite"]:
        print(f"note: {info['non_finite']} non-finite values (diverged runs) left out",
              file=sys.stderr)
    return 0


def cmd_report(args) -> int:
    from jaxdyn.explore import report
    from jaxdyn.results import QueryError

    try:
        info = report(args.name, args.output, root=args.out)
    except QueryError as e:
        return _err(str(e))
    print(f"wrote {info['path']}: {info['bytes'] / 1e6:.1f} MB, {info['runs']:,} runs in "
          f"{info['points']:,} grid points, built in {duration(info['build_s'])}; "
          f"open it in a browser (works offline)")
    return 0


def cmd_serve(args) -> int:
    from jaxdyn.explore import serve
    from jaxdyn.results import QueryError

    if not 0 <= args.port <= 65535:
        return _err(f"--port: expected a port number 0..65535 (0: any free port), got "
                    f"{args.port}")
    try:
        serve(args.out, host=args.host, port=args.port)
    except QueryError as e:
        return _err(str(e))
    return 0


def cmd_export(args) -> int:
    from jaxdyn.explore import export
    from jaxdyn.results import QueryError

    try:
        info = export(args.name, args.to, args.dest, root=args.out, where=args.where)
    except QueryError as e:
        return _err(str(e))
    print(f"exported {info['runs']:,} runs to {args.to} in {info['dest']} "
          f"({info['metrics']:,} metric values, {duration(info['export_s'])})"
          + (f"; {info['skipped']:,} already there, skipped" if info["skipped"] else ""))
    return 0


def cmd_bench(args) -> int:
    """``jaxdyn bench``: the benchmark suite (jaxdyn/bench/)."""
    from jaxdyn import bench, engine

    engine.use_cpu_cores()  # as `jaxdyn run` does; groups that call LAPACK keep one device
    engine.reuse_freed_memory()  # as `jaxdyn run` does (the baselines run with it too)
    return bench.main_from_args(args)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="jaxdyn", description="Training-dynamics sweeps in JAX.")
    sub = ap.add_subparsers(dest="cmd", required=True)

    r = sub.add_parser("run", help="run a sweep file (resumes if interrupted)")
    r.add_argument("file", help="sweep file (TOML)")
    r.add_argument("--out", default="results", help="output root (default: results)")
    r.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override a key of the sweep file, e.g. steps=500 or lr=0.01")
    r.add_argument("--chunk-size", type=int, default=None, help="runs per compiled chunk")
    r.add_argument("--micro-batch", type=int, default=None,
                   help="runs vmapped together on one device inside a chunk (default: "
                        "measured on a CPU where a chunk's temporaries outgrow the cache; "
                        "0 = all of them); changes results at most by float rounding")
    r.add_argument("--force", action="store_true",
                   help="replace results of a different sweep with the same name "
                        "(they are moved aside, not deleted)")
    r.add_argument("--yes", action="store_true", help="run huge sweeps without asking")
    r.add_argument("--quiet", action="store_true", help="no progress output")
    r.add_argument("--distributed", action="store_true",
                   help="join a multi-process run (jax.distributed.initialize; auto-detected "
                        "on SLURM and TPU pods): each process runs its own chunks")
    r.add_argument("--coordinator", default=None, help="coordinator host:port (explicit launch)")
    r.add_argument("--num-processes", type=int, default=None)
    r.add_argument("--process-id", type=int, default=None)
    r.set_defaults(fn=cmd_run)

    ck = sub.add_parser("check", help="every check 'run' makes before compute, nothing "
                                      "compiled or written")
    ck.add_argument("file", help="sweep file (TOML)")
    ck.add_argument("--set", action="append", metavar="KEY=VALUE",
                    help="override a key of the sweep file, as for run")
    ck.add_argument("--yes", action="store_true", help="accept huge sweeps, as for run")
    ck.set_defaults(fn=cmd_check)

    ls = sub.add_parser("list", help="experiments, their hyperparameters and metrics")
    ls.add_argument("refs", nargs="*", metavar="EXPERIMENT",
                    help="only these: a name, FILE.py (every experiment in it), FILE.py:NAME "
                         "or package.module:NAME")
    ls.set_defaults(fn=cmd_list)

    q = sub.add_parser("query", help='SQL over views runs and curves: query [NAME ...] "SQL"',
                       description="One read-only SQL statement (DuckDB) over the views runs "
                                   "and curves of the named sweeps (all sweeps under --out "
                                   "when none is named); each view has a 'sweep' column.")
    q.add_argument("sql", nargs="+", metavar="[NAME ...] SQL")
    q.add_argument("--out", default="results", help="results root (default: results)")
    q.add_argument("--format", choices=["table", "csv", "json", "parquet"], default="table",
                   help="table (aligned, default), csv, json (one object per line), parquet")
    q.add_argument("--output", default=None, help="write to FILE instead of stdout")
    q.add_argument("--max-rows", type=int, default=200, help="rows shown by --format table")
    q.set_defaults(fn=cmd_query)

    s = sub.add_parser("status", help="progress of sweeps under the results root",
                       description="Per sweep: runs done of total, diverged runs, chunks, "
                                   "throughput and ETA while it runs, and whether its sweep "
                                   "file changed since. Safe while a sweep is being written.")
    s.add_argument("names", nargs="*", metavar="NAME")
    s.add_argument("--out", default="results", help="results root (default: results)")
    s.add_argument("--json", action="store_true", help="machine-readable output")
    s.set_defaults(fn=cmd_status)

    pl = sub.add_parser("plot", help="a quick figure: plot NAME --x step --y loss -o FILE.png",
                        description="Mean (and shaded spread over the runs that share a --hue "
                                    "value, e.g. seeds) of a curves metric against step, or of "
                                    "a runs column against another (--x lr --y final_b).")
    pl.add_argument("name", metavar="NAME")
    pl.add_argument("--x", required=True, help="curves column (step, a metric) or runs column")
    pl.add_argument("--y", required=True, help="curves metric, or runs column if --x is one")
    pl.add_argument("--hue", default=None, help="runs column: one line per value")
    pl.add_argument("--where", default=None, help="SQL predicate on runs, e.g. \"d = 100\"")
    pl.add_argument("--logx", action="store_true")
    pl.add_argument("--logy", action="store_true")
    pl.add_argument("--spread", choices=["minmax", "std", "none"], default="minmax",
                    help="shaded band over the runs of a line: min-max (default), ±1 std")
    pl.add_argument("-o", "--output", required=True, help="figure file (.png, .pdf, .svg)")
    pl.add_argument("--out", default="results", help="results root (default: results)")
    pl.set_defaults(fn=cmd_plot)

    rp = sub.add_parser("report", help="a sweep's explorer as one HTML file: report NAME -o "
                                       "FILE.html",
                        description="One self-contained HTML page (opens offline): heatmaps, "
                                    "lines and parallel coordinates of the final metrics "
                                    "aggregated over seeds per grid point, curves of a sample "
                                    "of runs per point on click, and a runs table.")
    rp.add_argument("name", metavar="NAME")
    rp.add_argument("-o", "--output", required=True, help="the page to write (.html)")
    rp.add_argument("--out", default="results", help="results root (default: results)")
    rp.set_defaults(fn=cmd_report)

    sv = sub.add_parser("serve", help="a local web app: every sweep's progress and explorer",
                        description="Serves the sweeps under --out read-only: their progress, "
                                    "ETA and diverged count (refreshed live) and each sweep's "
                                    "explorer from its current tables. Ctrl-C stops it.")
    sv.add_argument("--out", default="results", help="results root (default: results)")
    sv.add_argument("--port", type=int, default=8765, help="port (default: 8765; 0: any free)")
    sv.add_argument("--host", default="127.0.0.1",
                    help="address to bind (default: 127.0.0.1, this machine only; 0.0.0.0 "
                         "opens it to the network)")
    sv.set_defaults(fn=cmd_serve)

    ex = sub.add_parser("export", help="one MLflow or TensorBoard run per jaxdyn run: "
                                       "export NAME --to mlflow|tensorboard DIR")
    ex.add_argument("name", help="sweep name (or its folder)")
    ex.add_argument("dest", help="the tracker's folder (MLflow: or a tracking URI)")
    ex.add_argument("--to", required=True, choices=["mlflow", "tensorboard"])
    ex.add_argument("--out", default="results", help="results root (default: results)")
    ex.add_argument("--where", default=None, help="SQL predicate on runs: export only those")
    ex.set_defaults(fn=cmd_export)

    bn = sub.add_parser("bench", help="benchmark the engine on this device: throughput, "
                                      "compile, FLOP/s and bytes/s against measured ceilings",
                        description="Runs every available experiment family at a small and a "
                                    "large run count end to end through the engine, measures "
                                    "the device's matmul and copy ceilings and baselines "
                                    "(per-run loops, a hand-written vmapped kernel, PyTorch if "
                                    "installed) in the same process; writes bench.parquet, "
                                    "bench.md and bench.json.")
    bn.add_argument("--suite", choices=["quick", "full", "tiny"], default="quick",
                    metavar="{quick,full}",
                    help="quick (a few minutes on a laptop CPU, default) or full (larger runs)")
    bn.add_argument("--out", default=None,
                    help="output folder (default: benchmarks/results/bench-<date>)")
    bn.add_argument("--only", default=None, metavar="EXP[,EXP...]",
                    help="only these experiments, e.g. eos.mean_model,dc.neuron")
    bn.add_argument("--no-torch", action="store_true", help="skip the PyTorch baselines")
    bn.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    bn.set_defaults(fn=cmd_bench)
    return ap


def main(argv=None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:
        # options may come anywhere on a query line (jaxdyn query NAME --out DIR "SQL"):
        # argparse stops a nargs="+" positional at the first option; the rest joins it
        if args.cmd == "query" and not any(a.startswith("-") for a in extra):
            args.sql += extra
        else:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())


def _refine_line(r: dict) -> str:
    """Rounds, runs per round and bracket widths of a ``[refine]`` sweep."""
    per = r.get("runs_per_round") or {}
    w = (f", relative width max {r['rel_width_max']:.3g}, median {r['rel_width_median']:.3g}"
         if r.get("brackets") else "")
    return (f"{r['brackets']} brackets after round {max(per, default=0)} of {r['rounds']} "
            f"(runs per round {', '.join(str(n) for n in per.values())}){w}")


def _adaptive_lines(st: dict) -> list[str]:
    out = []
    if st.get("refine"):
        out.append(f"refine     {_refine_line(st['refine'])}")
    if st.get("halving"):
        h = st["halving"]
        out.append(f"halving    runs per stage {', '.join(map(str, h['runs_per_stage']))} "
                   f"(rungs {', '.join(map(str, h['rungs']))}); {h['run_steps']:,} run·steps "
                   f"computed (schedule {h['run_steps_schedule']:,}, full grid "
                   f"{h['run_steps_full']:,}: {1 - h['run_steps'] / h['run_steps_full']:.1%} "
                   f"saved)")
    if st.get("search"):
        t = st["search"]
        failed = f", {t['failed']} failed" if t["failed"] else ""
        out.append(f"search     {t['trials']} trials in {t['batches']} batches{failed}; best "
                   f"{t['best_value']!r} (trial {t['best_trial']}: {t['best_params']})")
    if st.get("stop"):
        t = st["stop"]
        out.append(f"stop       {t['stopped']} runs reached the goal; {t['run_steps']:,} of "
                   f"{t['run_steps_full']:,} run·steps computed ({t['saved']:.1%} saved)")
    return out
