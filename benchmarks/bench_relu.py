"""Throughput of relu.teacher_student (float64, population loss) in the engine, in one process.

Cases (unit: run-steps/s = runs x steps / wall seconds):

  engine    ``jaxdyn.run(...)`` on a generated sweep: n, d fixed, lr x init_scale
            = 2 x 4 = 8 runs per seed, ``--seeds`` seeds, chunk_size 8 (the experiment has
            make_data, so the engine chunks per seed). Whole call, compile and Parquet included,
            cold (fresh JAXDYN_CACHE_DIR); its own compile-free rate is reported too.
  per-run   ``jax.jit`` of the engine's own one-run function (``engine.make_run_fn``: the scan
            over log points of a fori_loop over steps, divergence freezing, every metric), called
            once per run in a Python loop; compile excluded.
  batched   ``jax.jit(jax.vmap(...))`` of the same one-run function over *all* runs of the sweep
            at once, across seeds: each run draws its teacher from its own data key, which gives
            the same teacher as the engine's per-seed data. This is what the engine would run if
            it batched population-mode groups across seeds; compile excluded. Its final losses
            are checked equal to the engine's.

Device-agnostic: nothing here names a device. Timings on a shared machine are noisy; the load
average is recorded next to them.

    python benchmarks/bench_relu.py [--n 2] [--d 10] [--seeds 64] [--steps 20000]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

SWEEP = """
name = "bench_relu"
experiment = "relu.teacher_student"
steps = {steps}
seeds = {seeds}
chunk_size = 8
log = {{ points = {points}, spacing = "log" }}
precision = "float64"
[fixed]
mode = "population"
n = {n}
d = {d}
[grid]
lr = [0.1, 0.2]
init_scale = [0.001, 0.003, 0.01, 0.03]
"""


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=2)
    ap.add_argument("--d", type=int, default=10)
    ap.add_argument("--seeds", type=int, default=64)
    ap.add_argument("--steps", type=int, default=20000)
    ap.add_argument("--points", type=int, default=100)
    ap.add_argument("--loop-runs", type=int, default=16)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    ap.add_argument("--tag", default="relu")
    args = ap.parse_args(argv)

    tmp = Path(tempfile.mkdtemp(prefix="bench_relu-"))
    os.environ["JAXDYN_CACHE_DIR"] = str(tmp / "xla-cache")  # cold: nothing cached
    import jax
    jax.config.update("jax_enable_x64", True)  # the float64 baselines below need x64 mode
    import jax.numpy as jnp
    import numpy as np

    import jaxdyn
    from jaxdyn import engine, experiments, spec

    sweep_file = tmp / "bench_relu.toml"
    sweep_file.write_text(SWEEP.format(steps=args.steps, seeds=args.seeds, points=args.points,
                                       n=args.n, d=args.d))
    sweep = spec.load(sweep_file, experiments.params_of)
    runs = sweep.runs()
    n_runs = len(runs)
    exp = experiments.get("relu.teacher_student")
    load0 = os.getloadavg()

    # ---- engine, end to end -----------------------------------------------------------
    t0 = time.perf_counter()
    summary = jaxdyn.run(sweep_file, out=tmp / "out", quiet=True)
    t_engine = time.perf_counter() - t0
    compile_s = summary.compile_s
    res = jaxdyn.load(tmp / "out" / "bench_relu")
    eng_final = res.runs.set_index("run_id").final_loss

    # ---- the engine's one-run function ---------------------------------------------------
    static = {"n": args.n, "d": args.d, "mode": "population", "n_train": 1000,
              "dtype": jnp.float64, "steps": args.steps}
    log_steps = sweep.log.steps(args.steps)
    run = engine.make_run_fn(exp, static, log_steps)
    dyn_names = exp.dynamic_names

    def dyn_of(rs):
        return {k: jnp.asarray([r.hp[k] for r in rs], jnp.float64) for k in dyn_names}

    # per-run loop
    one = jax.jit(lambda dyn, seed: run(dyn, seed, None))
    sample = runs[:: max(1, n_runs // args.loop_runs)][: args.loop_runs]
    args1 = [({k: jnp.float64(r.hp[k]) for k in dyn_names}, jnp.uint32(r.seed)) for r in sample]
    tc = time.perf_counter()
    jax.block_until_ready(one(*args1[0]))
    t_loop_compile = time.perf_counter() - tc
    t0 = time.perf_counter()
    for a in args1:
        jax.block_until_ready(one(*a))
    t_loop = time.perf_counter() - t0

    # batched across seeds (per-run teachers from each run's own data key)
    batched = jax.jit(jax.vmap(run, in_axes=(0, 0, None)))
    dyn = dyn_of(runs)
    seeds = jnp.asarray([r.seed for r in runs], jnp.uint32)
    tc = time.perf_counter()
    compiled = batched.lower(dyn, seeds, None).compile()
    t_b_compile = time.perf_counter() - tc
    t0 = time.perf_counter()
    out = jax.block_until_ready(compiled(dyn, seeds, None))
    t_batched = time.perf_counter() - t0
    b_final = np.asarray(out[1]["loss"])
    e_final = eng_final.loc[[r.run_id for r in runs]].to_numpy()
    max_rel = float(np.max(np.abs(b_final - e_final) / np.abs(e_final)))

    rs = lambda runs_, t: runs_ * args.steps / t  # noqa: E731
    r_engine = rs(n_runs, t_engine)
    r_engine_nc = rs(n_runs, t_engine - compile_s)
    r_loop = rs(len(sample), t_loop)
    r_batched = rs(n_runs, t_batched)
    load1 = os.getloadavg()
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                             capture_output=True, text=True).stdout.strip()
    except OSError:
        rev = ""
    info = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "git_rev": rev, "jax": jax.__version__, "devices": [str(d) for d in jax.devices()],
        "loadavg_before": load0, "loadavg_after": load1,
        "n": args.n, "d": args.d, "seeds": args.seeds, "runs": n_runs, "steps": args.steps,
        "log_points": len(log_steps), "precision": "float64",
        "engine": {"wall_s": t_engine, "compile_s": compile_s, "run_steps_per_s": r_engine,
                   "run_steps_per_s_without_compile": r_engine_nc,
                   "chunks": args.seeds, "runs_per_chunk": n_runs // args.seeds,
                   "stats": summary.stats},
        "per_run": {"runs": len(sample), "wall_s": t_loop, "compile_s": t_loop_compile,
                    "run_steps_per_s": r_loop},
        "batched": {"runs": n_runs, "wall_s": t_batched, "compile_s": t_b_compile,
                    "run_steps_per_s": r_batched,
                    "max_rel_diff_final_loss_vs_engine": max_rel},
        "ratios": {"engine/per_run": r_engine / r_loop,
                   "engine_without_compile/per_run": r_engine_nc / r_loop,
                   "batched/per_run": r_batched / r_loop,
                   "batched/engine_without_compile": r_batched / r_engine_nc},
    }
    md = f"""# relu.teacher_student throughput (float64, population loss)

{info['date']}, git {rev}, jax {jax.__version__}, devices {info['devices']}.
Load average before/after: {load0[0]:.2f}/{load1[0]:.2f} (a shared machine: other jobs
run at the same time, so these numbers are noisy; compare ratios from one run).

Sweep: n = {args.n}, d = {args.d}, {args.seeds} seeds x (lr in {{0.1, 0.2}} x init_scale in
{{1e-3, 3e-3, 1e-2, 3e-2}}) = {n_runs} runs x {args.steps} steps, {len(log_steps)} log-spaced
log points, every metric logged.

| case | runs | wall s | compile s | run-steps/s |
|---|---|---|---|---|
| engine (`jaxdyn run`, cold, per-seed chunks of {n_runs // args.seeds}) | {n_runs} | {t_engine:.2f} | {compile_s:.2f} | {r_engine:.3g} |
| engine, compile time subtracted | {n_runs} | {t_engine - compile_s:.2f} | | {r_engine_nc:.3g} |
| per-run jitted loop (engine's run function, one run per call) | {len(sample)} | {t_loop:.2f} | {t_loop_compile:.2f} | {r_loop:.3g} |
| batched across seeds (jit of vmap over all runs) | {n_runs} | {t_batched:.2f} | {t_b_compile:.2f} | {r_batched:.3g} |

Ratios: engine / per-run loop = **{r_engine / r_loop:.1f}x** (compile included),
{r_engine_nc / r_loop:.1f}x without compile; batched / per-run = {r_batched / r_loop:.1f}x;
batched / engine without compile = {r_batched / r_engine_nc:.1f}x. The engine chunks every
group of an experiment with `make_data` per seed ({n_runs // args.seeds} runs per chunk here);
"batched" is what it would run if population-mode groups were batched across seeds (the
teacher is d numbers each run can draw itself). The batched program's final losses equal the
engine's to {max_rel:.1e} relative.
"""
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{args.tag}.json").write_text(json.dumps(info, indent=2))
    (out_dir / f"{args.tag}.md").write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
