"""Differential-capability family benchmark (issue 4), all in one process.

1. The engine end to end — ``jaxdyn.run(...)``, cold compile (a fresh
   ``JAXDYN_CACHE_DIR``) and Parquet writing included — on a seeded random sample of
   ``sweeps/dc_paper.toml``: the same grid, seeds, steps and settings with a smaller sample
   fraction (default 0.0025 = 10 % of the paper sweep's 359,370 runs: 35,940 runs × 16,500
   steps). The full sweep's time is extrapolated from it: compile + (wall − compile) × (full
   run-steps / sample run-steps).
2. A per-run jitted loop of the same math (dc.neuron's own init/step/measure, the same data
   set and minibatch order; one compiled ``fori_loop`` over all steps, called once per run),
   on grid points of the same sample. The ratio engine / per-run loop is reported.

    python benchmarks/bench_dc.py [--fraction 0.0025] [--steps 16500] [--loop-runs 8]
                                  [--out benchmarks/results]

Device-agnostic: runs unchanged on CPU, GPU or TPU. Timings on a shared machine are noisy;
the host load average is recorded before and after.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAPER = ROOT / "sweeps" / "dc_paper.toml"
FULL_RUNS = 359_370
PAPER_CHUNK = 11_979


def engine_run(fraction: float, steps: int, out: Path) -> dict:
    import jaxdyn
    from jaxdyn import experiments, spec

    overrides = [f"sample.fraction={fraction}", f"steps={steps}", "name=dc_bench"]
    if steps != 16500:
        overrides.append("epochs=0")
    sw = spec.parse(PAPER.read_text(), experiments.params_of, file=PAPER, overrides=overrides)
    per_seed = sw.n_points()
    # the paper's chunking: chunks of at most PAPER_CHUNK runs, balanced within each seed
    chunk = math.ceil(per_seed / math.ceil(per_seed / PAPER_CHUNK))
    t = time.perf_counter()
    try:
        s = jaxdyn.run(PAPER, out=out, overrides=overrides, chunk_size=chunk)
    except jaxdyn.JaxdynError as err:
        raise SystemExit(f"jaxdyn.run failed: {err}") from None
    wall = time.perf_counter() - t
    return {"runs": sw.n_runs(), "steps": steps, "seeds": len(sw.seeds), "chunk_size": chunk,
            "wall_s": wall, "compile_s": s.compile_s, "summary": repr(s), "stats": s.stats,
            "diverged": s.diverged, "runs_x_steps": sw.n_runs() * steps, "sweep": sw}


def per_run_loop(sw, n: int) -> tuple[float, float]:
    """(run-steps/s, compile seconds) of one jitted whole-run function called once per run."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from jaxdyn import engine, experiments

    exp = experiments.get(sw.experiment)
    runs = sw.runs()
    seed = runs[0].seed
    pick = [r for r in runs if r.seed == seed]
    pick = [pick[i] for i in np.linspace(0, len(pick) - 1, n).astype(int)]
    static = {**{k: pick[0].hp[k] for k in exp.static_names},
              "dtype": engine.DTYPES[sw.precision], "steps": sw.steps}
    dt = static["dtype"]
    key = jax.random.PRNGKey(seed)
    data = jax.jit(lambda k: exp.make_data(k, static))(jax.random.fold_in(key, 2))

    @jax.jit
    def one(hp):
        st = exp.init(jax.random.fold_in(key, 0), static, hp, data)
        ks = jax.random.fold_in(key, 1)
        st = jax.lax.fori_loop(
            0, sw.steps, lambda i, s: exp.step(s, jax.random.fold_in(ks, i), static, hp, data), st)
        return exp.measure(st, static, hp, data)

    def hp_of(r):
        return {k: jnp.asarray(r.hp[k], dt) for k in exp.dynamic_names}

    t = time.perf_counter()
    jax.block_until_ready(one(hp_of(pick[0])))
    compile_s = time.perf_counter() - t
    t = time.perf_counter()
    for r in pick:
        jax.block_until_ready(one(hp_of(r)))
    return n * sw.steps / (time.perf_counter() - t), compile_s


def git_rev() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                              capture_output=True, text=True).stdout.strip()
    except OSError:
        return "?"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--fraction", type=float, default=0.0025,
                    help="sample fraction of the paper grid (the paper sweep uses 0.025)")
    ap.add_argument("--steps", type=int, default=16500)
    ap.add_argument("--loop-runs", type=int, default=8)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results"))
    a = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="jaxdyn-bench-dc-"))
    os.environ["JAXDYN_CACHE_DIR"] = str(tmp / "cache")   # cold: compile is timed

    import jax

    # x64 on, as inside jaxdyn.run: the per-run loop runs the engine's math (lambertw0, counters)
    jax.config.update("jax_enable_x64", True)

    from jaxdyn import engine

    load0 = os.getloadavg()
    e = engine_run(a.fraction, a.steps, tmp / "results")
    loop, loop_compile = per_run_loop(e.pop("sweep"), a.loop_runs)
    load1 = os.getloadavg()

    eng = e["runs_x_steps"] / e["wall_s"]
    steady = e["runs_x_steps"] / (e["wall_s"] - e["compile_s"])
    full_x = FULL_RUNS * 16500
    full_s = e["compile_s"] + full_x / steady
    res = {"device": engine.device_description(), "jax": jax.__version__, "git": git_rev(),
           "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "cpus": os.cpu_count(),
           "load_before": load0, "load_after": load1, "engine": e,
           "engine_run_steps_per_s": eng, "engine_steady_run_steps_per_s": steady,
           "per_run_loop_run_steps_per_s": loop, "per_run_loop_compile_s": loop_compile,
           "loop_runs": a.loop_runs, "ratio_engine_to_loop": eng / loop,
           "full_sweep_run_steps": full_x, "full_sweep_extrapolated_s": full_s,
           "sample_share_of_full": e["runs_x_steps"] / full_x}
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "dc.json").write_text(json.dumps(res, indent=2, default=float))
    L = ["# Differential-capability family benchmark (dc.neuron, sweeps/dc_paper.toml)", "",
         f"- {res['date']}, jax {res['jax']}, {res['device']}, {res['cpus']} CPUs, git "
         f"{res['git']}",
         f"- host load average before {tuple(round(x, 2) for x in load0)}, after "
         f"{tuple(round(x, 2) for x in load1)} (a shared machine: other processes skew the "
         "numbers)", "",
         f"## Engine end to end on a {100 * res['sample_share_of_full']:.0f} % sample of "
         "dc_paper", "",
         f"- {e['runs']:,} runs ({e['seeds']} seeds) × {e['steps']:,} steps, float32, "
         f"chunks of {e['chunk_size']:,} runs; {e['diverged']:,} runs diverged (nll, lr 0.01)",
         f"- `jaxdyn.run(...)`: wall {e['wall_s']:.1f} s, of which compile "
         f"{e['compile_s']:.1f} s (cold cache); Parquet writing included",
         f"- **{eng:.3g} run-steps/s** end to end; {steady:.3g} run-steps/s without compile",
         "", "## Per-run jitted loop (same math, same data, one call per run)", "",
         f"- {a.loop_runs} runs × {a.steps:,} steps: **{loop:.3g} run-steps/s** (compile "
         f"{loop_compile:.1f} s excluded)",
         f"- ratio engine / per-run loop: **{eng / loop:.3g}×**", "",
         "## Full dc_paper sweep (359,370 runs × 16,500 steps = "
         f"{full_x:.3g} run-steps), extrapolated", "",
         f"- compile + run-steps / steady rate = **{full_s / 60:.1f} min** (target ≤ 20 min); "
         f"extrapolated from the {100 * res['sample_share_of_full']:.0f} % sample above, not "
         "run in full here"]
    (out / "dc.md").write_text("\n".join(L) + "\n")
    print("\n".join(L))
    print()
    print(e["summary"])


if __name__ == "__main__":
    main()
