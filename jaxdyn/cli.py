"""``jaxdyn run | list | query | status``.

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
    try:
        sweep = spec.load(args.file, experiments.params_of, overrides=args.set or [])
    except spec.SpecError as e:
        return _err(str(e))
    n = sweep.n_runs()
    if n > spec.MAX_RUNS_UNCONFIRMED and not args.yes:
        return _err(f"{args.file}: the sweep has {n:,} runs (more than "
                    f"{spec.MAX_RUNS_UNCONFIRMED:,}); pass --yes to run it anyway")

    import jax

    from jaxdyn import engine

    _setup_compilation_cache()
    exp = experiments.get(sweep.experiment)
    try:
        probes = engine.resolve_probes(sweep, exp)
    except spec.SpecError as e:
        return _err(str(e))
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
                                   progress=progress, probes=probes, process_index=pi,
                                   process_count=pc)
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
        f"wall time  {_fmt_s(s['wall_s'])} (compile {_fmt_s(s['compile_s'])}), "
        f"{_fmt_rate(s['run_steps_per_s'])} run·steps/s",
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
    if fmt == "table":
        import pandas as pd

        with pd.option_context("display.max_rows", args.max_rows, "display.max_columns", None,
                               "display.width", 200):
            text = df.to_string(index=False)
    elif fmt == "csv":
        text = df.to_csv(index=False)
    elif fmt == "json":
        text = df.to_json(orient="records", lines=True)
    else:  # parquet
        if not args.output:
            return _err("--format parquet needs --output FILE")
        df.to_parquet(args.output, index=False)
        return 0
    if args.output:
        Path(args.output).write_text(text if text.endswith("\n") else text + "\n")
    else:
        print(text)
    return 0


def cmd_status(args) -> int:
    import pyarrow.parquet as pq

    from jaxdyn.query import QueryError, resolve, sweep_names

    names = args.names or sweep_names(args.out)
    if not names:
        print(f"no sweeps under {args.out}")
        return 0
    for n in names:
        try:
            folder = resolve(n, args.out)
        except QueryError as e:
            return _err(str(e))
        import json

        man = json.loads((folder / "manifest.json").read_text())
        parts = sorted((folder / "runs").glob("part-*.parquet"))
        done = diverged = 0
        for p in parts:
            t = pq.read_table(p, columns=["status"])
            done += t.num_rows
            diverged += sum(1 for s in t.column(0).to_pylist() if s != "ok")
        total = man.get("runs_total", 0)
        print(f"{n}: {done}/{total} runs done ({len(parts)} parts), {diverged} diverged, "
              f"experiment {man.get('experiment')}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="jaxdyn", description="Training-dynamics sweeps in JAX.")
    sub = ap.add_subparsers(dest="cmd", required=True)

    r = sub.add_parser("run", help="run a sweep file (resumes if interrupted)")
    r.add_argument("file", help="sweep file (TOML)")
    r.add_argument("--out", default="results", help="output root (default: results)")
    r.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override a key of the sweep file, e.g. steps=500 or lr=0.01")
    r.add_argument("--chunk-size", type=int, default=None, help="runs per compiled chunk")
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

    q = sub.add_parser("query", help='SQL over views runs and curves: query [NAME ...] "SQL"')
    q.add_argument("sql", nargs="+", metavar="[NAME ...] SQL")
    q.add_argument("--out", default="results", help="results root (default: results)")
    q.add_argument("--format", choices=["table", "csv", "json", "parquet"], default="table")
    q.add_argument("--output", default=None, help="write to FILE instead of stdout")
    q.add_argument("--max-rows", type=int, default=200)
    q.set_defaults(fn=cmd_query)

    s = sub.add_parser("status", help="progress of sweeps under the results root")
    s.add_argument("names", nargs="*")
    s.add_argument("--out", default="results")
    s.set_defaults(fn=cmd_status)
    return ap


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())
