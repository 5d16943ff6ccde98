"""``jaxdyn run | list | query | status | plot``.

Every user error ends in one message on stderr naming the file, the key and what was
expected, and exit status 2; nothing is written before a sweep file has been fully validated.
"""

from __future__ import annotations

import argparse
import os

import numpy as np
import sys
import time
from pathlib import Path

EXIT_USAGE = 2


def _err(msg: str) -> int:
    print(f"jaxdyn: error: {msg}", file=sys.stderr)
    return EXIT_USAGE


def _fmt_rate(x: float) -> str:
    return f"{x:.3g}"


def _fmt_s(s: float) -> str:
    if s < 10:
        return f"{s:.2f}s"
    if s < 120:
        return f"{s:.1f}s"
    return f"{s / 60:.1f}min"


class _Progress:
    """A tqdm bar on a terminal; plain progress lines otherwise (logs, CI)."""

    def __init__(self, sweep, quiet: bool):
        self.sweep, self.quiet = sweep, quiet
        self.tty = sys.stderr.isatty()
        self.bar = None
        self.t0 = time.perf_counter()
        self.done = 0
        self.total = 0
        self.n_chunks = 0

    def __call__(self, event: str, **kw):
        if self.quiet:
            return
        if event == "start":
            self.total, self.n_chunks = kw["total_runs"], kw["total_chunks"]
            if self.tty:
                from tqdm import tqdm

                self.bar = tqdm(total=self.total, unit="run", desc=self.sweep.name,
                                dynamic_ncols=True)
            else:
                print(f"[jaxdyn] {self.sweep.name}: {self.total} runs to do in "
                      f"{self.n_chunks} chunks", file=sys.stderr, flush=True)
        elif event == "chunk":
            self.done += kw["runs"]
            el = time.perf_counter() - self.t0
            rate = self.done / max(el, 1e-9)
            eta = (self.total - self.done) / max(rate, 1e-9)
            rs = rate * self.sweep.steps
            if self.bar is not None:
                self.bar.set_postfix_str(f"chunk {kw['index'] + 1}/{self.n_chunks}, "
                                         f"{_fmt_rate(rs)} run·steps/s")
                self.bar.update(kw["runs"])
            else:
                print(f"[jaxdyn] chunk {kw['index'] + 1}/{self.n_chunks}: "
                      f"{self.done}/{self.total} runs, {rate:.1f} runs/s "
                      f"({_fmt_rate(rs)} run·steps/s), ETA {_fmt_s(eta)}",
                      file=sys.stderr, flush=True)

    def close(self):
        if self.bar is not None:
            self.bar.close()


def _setup_compilation_cache() -> None:
    import jax

    cache = os.environ.get("JAXDYN_CACHE_DIR",
                           str(Path.home() / ".cache" / "jaxdyn" / "xla"))
    try:
        Path(cache).mkdir(parents=True, exist_ok=True)
        jax.config.update("jax_compilation_cache_dir", cache)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
    except Exception:  # noqa: BLE001 - a cache is an optimisation, never a failure
        pass


def cmd_run(args) -> int:
    from jaxdyn import experiments, spec
    from jaxdyn.store import StoreError, SweepStore

    if args.chunk_size is not None and args.chunk_size <= 0:
        return _err(f"--chunk-size: expected a positive integer, got {args.chunk_size}")
    if args.micro_batch is not None and args.micro_batch < 0:
        return _err(f"--micro-batch: expected an integer >= 0 (0 = all of a device's runs "
                    f"at once), got {args.micro_batch}")
    try:
        # the run count is checked from the counts, before seeds or ranges are expanded:
        # over MAX_RUNS_UNCONFIRMED needs --yes, over MAX_RUNS is always refused
        sweep = spec.load(args.file, experiments.params_of, overrides=args.set or [],
                          max_runs=None if args.yes else spec.MAX_RUNS_UNCONFIRMED)
    except spec.SpecError as e:
        return _err(str(e))

    import jax

    from jaxdyn import engine

    _setup_compilation_cache()
    engine.reuse_freed_memory()
    exp = experiments.get(sweep.experiment)
    try:
        probes = engine.resolve_probes(sweep, exp)
    except spec.SpecError as e:
        return _err(str(e))
    # one CPU device per core, unless a group calls LAPACK (traced only if it matters)
    if engine.cpu_devices_wanted() and not engine.uses_lapack(sweep, exp, probes):
        engine.use_cpu_cores()
    pi, pc = 0, 1
    if args.distributed:
        try:
            pi, pc = _init_distributed(args)
        except Exception as e:  # noqa: BLE001 - the runtime's own message says what failed
            return _err(f"--distributed: jax.distributed.initialize failed: {e}")
    store = SweepStore(args.out, sweep.name)
    extra = {"jaxdyn_version": _version(), "jax_version": jax.__version__,
             "device": engine.device_description(), "process_count": pc}
    opened, msg = True, ""
    if pi == 0:
        try:
            store.open(sweep, extra, force=args.force)
        except StoreError as e:
            opened, msg = False, str(e)
    if pc > 1:  # the others join only once process 0 has checked and cleaned the folder
        from jax.experimental import multihost_utils

        ok = multihost_utils.broadcast_one_to_all(np.int32(opened))
        if pi > 0:
            if not int(ok):
                return _err(f"process 0 could not open {store.dir}; see its message")
            try:
                store.join(sweep, pi)
            except StoreError as e:
                opened, msg = False, str(e)
    if not opened:
        return _err(msg)
    if store.moved_aside:
        print(f"[jaxdyn] previous results moved to {store.moved_aside}", file=sys.stderr)
    progress = _Progress(sweep, args.quiet)
    try:
        summary = engine.run_sweep(sweep, exp, store, chunk_size=args.chunk_size,
                                   micro_batch=args.micro_batch, progress=progress,
                                   probes=probes, process_index=pi, process_count=pc)
        if pc > 1:
            from jax.experimental import multihost_utils

            multihost_utils.sync_global_devices(f"jaxdyn-{sweep.name}-done")
    except StoreError as e:
        return _err(str(e))
    except KeyboardInterrupt:
        print("\njaxdyn: interrupted; completed chunks are kept, run again to resume",
              file=sys.stderr)
        return 130
    finally:
        progress.close()
        store.close()
    s = summary
    who = f" (process {pi} of {pc})" if pc > 1 else ""
    lines = [
        f"sweep      {sweep.name} ({sweep.experiment}){who}",
        f"runs       {s['runs_total']} total, {s['runs_run']} run now, "
        f"{s['runs_done_before']} already done",
        f"diverged   {s['diverged']} of the runs run now",
        f"wall time  {_fmt_s(s['wall_s'])} (compile {_fmt_s(s['compile_s'])}"
        + (", micro-batch " + "/".join(str(m) if m else "whole" for m in s["micro_batch"])
           if any(s["micro_batch"]) else "")
        + (f" measured in {_fmt_s(s['tune_s'])}" if s.get("tune_s") else "")
        + f"), {_fmt_rate(s['run_steps_per_s'])} run·steps/s",
        f"writing    {_fmt_s(s.get('write_s', 0.0))} on the writer thread, overlapped with "
        f"compute; the sweep waited {_fmt_s(s.get('write_wait_s', 0.0))} for it",
        f"tables     {store.dir / 'runs'}  {store.dir / 'curves'}",
    ]
    print("\n".join(lines))
    return 0


def _init_distributed(args) -> tuple[int, int]:
    """JAX's multi-controller runtime: auto-detected on SLURM and TPU pods, or explicit."""
    import jax

    kw = {}
    if args.coordinator:
        kw["coordinator_address"] = args.coordinator
    if args.num_processes is not None:
        kw["num_processes"] = args.num_processes
    if args.process_id is not None:
        kw["process_id"] = args.process_id
    jax.distributed.initialize(**kw)
    return jax.process_index(), jax.process_count()


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("jaxdyn")
    except PackageNotFoundError:
        return "unknown"


def cmd_list(args) -> int:
    from jaxdyn import experiments

    for name in experiments.names():
        exp = experiments.get(name)
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


def cmd_query(args) -> int:
    from jaxdyn.query import QueryError, query

    if not args.sql:
        return _err("query: give the SQL as the last argument")
    *names, sql = args.sql
    try:
        df = query(sql, sweeps=names or None, root=args.out)
    except QueryError as e:
        return _err(str(e))
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


def _fmt_ago(s: float) -> str:
    if s < 120:
        return f"{s:.0f}s ago"
    if s < 7200:
        return f"{s / 60:.0f}min ago"
    return f"{s / 3600:.1f}h ago"


def _fmt_eta(s: float) -> str:
    if s < 120:
        return f"{s:.0f}s"
    if s < 7200:
        return f"{s / 60:.1f}min"
    return f"{s / 3600:.1f}h"


def cmd_status(args) -> int:
    import json

    from jaxdyn.query import QueryError, resolve, sweep_names, sweep_status

    names = args.names or sweep_names(args.out)
    if not names:
        print(f"no sweeps under {args.out}")
        return 0
    try:
        for n in names:
            resolve(n, args.out)  # an unknown name fails before anything is printed
        infos = [sweep_status(n, args.out) for n in names]
    except QueryError as e:
        return _err(str(e))
    if args.json:
        print(json.dumps(infos, indent=2, default=str))
        return 0
    blocks = []
    for s in infos:
        total = s["runs_total"]
        pct = f" ({100 * s['runs_done'] / total:.1f}%)" if total else ""
        lines = [f"{s['name']}  ({s['experiment']})  {s['state']}",
                 f"  runs      {s['runs_done']:,} of {total:,} done{pct}, "
                 f"{s['diverged']:,} diverged, {s['parts']:,} parts"]
        if s["damaged_parts"]:
            lines.append(f"  damaged   {len(s['damaged_parts'])} unreadable runs parts: "
                         f"{', '.join(s['damaged_parts'][:3])}")
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
        lines.append(f"  file      {s['file']['text']}")
        blocks.append("\n".join(lines))
    print("\n\n".join(blocks))
    return 0


def cmd_plot(args) -> int:
    from jaxdyn.query import QueryError, plot

    out = Path(args.output)
    if out.suffix.lower() not in (".png", ".pdf", ".svg"):
        return _err(f"-o {out}: expected a .png, .pdf or .svg file name")
    try:
        info = plot(args.name, args.x, args.y, out, hue=args.hue, where=args.where,
                    logx=args.logx, logy=args.logy, spread=args.spread, root=args.out)
    except QueryError as e:
        return _err(str(e))
    what = "one line per run" if info["per_run"] else (
        f"mean over runs, shaded {info['spread']}" if info["spread"] else "mean over runs")
    print(f"wrote {info['path']}: {info['runs']} runs, {info['lines']} lines ({what})")
    if info["non_finite"]:
        print(f"note: {info['non_finite']} non-finite values (diverged runs) left out",
              file=sys.stderr)
    return 0


def cmd_bench(args) -> int:
    """``jaxdyn bench``: the benchmark suite (jaxdyn/bench.py)."""
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

    ls = sub.add_parser("list", help="experiments, their hyperparameters and metrics")
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
    args = build_parser().parse_args(argv)
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())
