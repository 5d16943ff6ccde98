"""Edge-of-stability family benchmark (issue 3), all in one process.

1. Overhead of sharpness tracking: the same sweep with and without the generic sharpness
   probe (jaxdyn.probes), as a ratio of steady wall time (engine.run_sweep's wall_s minus
   its compile_s), and the cost of one probe call in gradient steps,
       (t_probe - t_none) / (probe calls per run) / (t_none / steps),
   and of one Lanczos iteration (that divided by the Krylov dimension). Models:
     - eos.threshold_relu (3 parameters; d = 200), dense eigvalsh and Lanczos, probe at every
       log point (every 10 steps);
     - eos.mean_model (3 parameters), likewise;
     - relu.teacher_student, population loss, n = 16 students in d = 64 (1,024 parameters,
       where Lanczos is what the probe runs), Lanczos with iters = 20, k = 2, probe (and log
       point) every 100 steps over 2,000 steps.
2. The 4,096-point η scan of eos.threshold_relu at d = 200 as in
   sweeps/eos_threshold_relu_scan.toml (its n_train, n_test, steps, log schedule, float32),
   through the engine, end to end and steady, against a per-run jitted loop of the same model
   (one run per call) that logs the same metrics at the same steps, and one that does not log.

    python benchmarks/bench_eos.py [--scan-steps N] [--scan-points 4096] [--out benchmarks/results]

Device-agnostic: nothing here names a device; runs unchanged on CPU, GPU or TPU.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCAN_FILE = ROOT / "sweeps" / "eos_threshold_relu_scan.toml"
_TMP = Path(tempfile.mkdtemp(prefix="jaxdyn-bench-eos-"))
# run_sweep is called directly (not through the CLI), so no persistent compilation cache is
# installed; a fresh empty directory makes sure of it should anything read the variable.
os.environ["JAXDYN_CACHE_DIR"] = str(_TMP / "cache")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from jaxdyn import engine, experiments, spec  # noqa: E402
from jaxdyn.store import SweepStore  # noqa: E402

TR = """
name = "{name}"
experiment = "eos.threshold_relu"
steps = {steps}
seeds = 1
log = {{ every = {every} }}
precision = "float32"
{probes}
[fixed]
d = 200
n_train = {n_train}
n_test = 200
lam = 5.0
[grid]
lr = {{ start = 1e-5, stop = 1e-2, num = {num}, spacing = "log" }}
"""
MM = """
name = "{name}"
experiment = "eos.mean_model"
steps = {steps}
seeds = 4
log = {{ every = {every} }}
precision = "float32"
{probes}
[fixed]
d = 100
[grid]
lr = {{ start = 2.5e-4, stop = 2.5e-2, num = {num}, spacing = "log" }}
"""
RELU = """
name = "{name}"
experiment = "relu.teacher_student"
steps = {steps}
seeds = {seeds}
log = {{ every = {every} }}
precision = "float32"
{probes}
[fixed]
mode = "population"
n = {n}
d = {d}
init_scale = 0.01
[grid]
lr = {{ start = 0.01, stop = 0.1, num = {num}, spacing = "log" }}
"""


def git_rev() -> str:
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, text=True,
                             capture_output=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=ROOT, text=True, capture_output=True).stdout.strip()
        return rev + (" (+ uncommitted changes)" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def load() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def run(sw: spec.Sweep) -> dict:
    """engine.run_sweep into a fresh store; the summary plus steady_s = wall_s - compile_s."""
    exp = experiments.get(sw.experiment)
    store = SweepStore(_TMP / "out", sw.name)
    store.open(sw)
    try:
        s = engine.run_sweep(sw, exp, store)
    finally:
        store.close()
    s["steady_s"] = s["wall_s"] - s["compile_s"]
    s["runs_x_steps"] = s["runs_run"] * sw.steps
    return s


def n_params(sw: spec.Sweep) -> int:
    """Parameter count of the first run (what the probe's Hessian is over)."""
    exp = experiments.get(sw.experiment)
    r = sw.runs()[0]
    static = {**{k: r.hp[k] for k in exp.static_names},
              "dtype": engine.DTYPES[sw.precision], "steps": sw.steps}
    hp = {k: jnp.asarray(r.hp[k], static["dtype"]) for k in exp.dynamic_names}

    def params():
        data = exp.make_data(jax.random.PRNGKey(0), static) if exp.make_data else None
        return exp.params_of_state(exp.init(jax.random.PRNGKey(0), static, hp, data))

    return int(sum(np.prod(x.shape) for x in jax.tree.leaves(jax.eval_shape(params))))


def overhead(label: str, tpl: str, fmt: dict, variants: list[tuple[str, dict | None]]) -> list:
    """One row per variant; the first must be the no-probe sweep."""
    rows, base = [], None
    for variant, opts in variants:
        probes = ""
        if opts:
            probes = "probes = { sharpness = { " + ", ".join(
                f"{k} = {json.dumps(v)}" for k, v in opts.items()) + " } }"
        sw = spec.parse(tpl.format(name=f"{label}_{variant}", probes=probes, **fmt),
                        experiments.params_of)
        npar = n_params(sw)
        s = run(sw)
        row = {"model": label, "probe": variant, "params": npar, "runs": s["runs_run"],
               "steps": sw.steps, "log_points": len(sw.log.steps(sw.steps)),
               "compile_s": s["compile_s"], "wall_s": s["wall_s"], "steady_s": s["steady_s"],
               "write_s": s["write_s"], "write_wait_s": s["write_wait_s"],
               "chunks": s["chunks"], "diverged": s["diverged"], "opts": opts}
        if base is None:
            base = row
            row.update(ratio_to_none=1.0, probe_calls=0)
        else:
            calls = int(engine.probe_schedule(sw.log.steps(sw.steps), int(opts["every"])).sum())
            step_s = base["steady_s"] / base["steps"]  # one gradient step of the whole batch
            per_call = (s["steady_s"] - base["steady_s"]) / calls / step_s
            row.update(ratio_to_none=s["steady_s"] / base["steady_s"], probe_calls=calls,
                       probe_call_grad_steps=per_call)
            if opts.get("method") == "lanczos":  # Krylov dimension as in probes.sharpness_topk
                m = min(max(int(opts["iters"]), 2 * int(opts.get("k", 1))), npar)
                row.update(lanczos_m=m, lanczos_iter_grad_steps=per_call / m)
        rows.append(row)
        print(f"  {label}/{variant}: steady {row['steady_s']:.2f} s, ratio "
              f"{row['ratio_to_none']:.2f}", file=sys.stderr, flush=True)
    return rows


def per_run_loop(sw: spec.Sweep, n_runs: int) -> dict:
    """A jitted function of one run (init, then the steps as a fori_loop per log segment,
    exp.measure at every logged step of the sweep, curves copied to the host), called once
    per run for ``n_runs`` runs spread over the sweep's grid; and the same without logging
    (one fori_loop over all steps, the final metrics only). No divergence check or freeze, no
    Parquet. Same hyperparameters, data key and init key as the engine's runs."""
    exp = experiments.get(sw.experiment)
    runs = sw.runs()
    pick = [runs[i] for i in np.unique(np.linspace(0, len(runs) - 1, n_runs).astype(int))]
    r0 = pick[0]
    static = {**{k: r0.hp[k] for k in exp.static_names},
              "dtype": engine.DTYPES[sw.precision], "steps": sw.steps}
    dt = static["dtype"]
    log_steps = np.asarray(sw.log.steps(sw.steps), np.int64)
    starts = np.concatenate([[0], log_steps[:-1]])
    lengths = log_steps - starts
    data = exp.make_data(jax.random.fold_in(jax.random.PRNGKey(r0.seed), 2), static) \
        if exp.make_data else None

    def begin(dyn, seed):
        hp = {k: jnp.asarray(v).astype(dt) for k, v in dyn.items()}
        key = jax.random.PRNGKey(seed)
        return hp, exp.init(jax.random.fold_in(key, 0), static, hp, data), \
            jax.random.fold_in(key, 1)

    def body(hp, k_step):
        return lambda i, s: exp.step(s, jax.random.fold_in(k_step, i), static, hp, data)

    @jax.jit
    def logged(dyn, seed):
        hp, st, k_step = begin(dyn, seed)

        def seg(st, sl):
            start, n = sl
            st = jax.lax.fori_loop(start, start + n, body(hp, k_step), st)
            return st, exp.measure(st, static, hp, data)

        return jax.lax.scan(seg, st, (starts, lengths))[1]

    @jax.jit
    def unlogged(dyn, seed):
        hp, st, k_step = begin(dyn, seed)
        st = jax.lax.fori_loop(0, sw.steps, body(hp, k_step), st)
        return exp.measure(st, static, hp, data)

    out = {"runs": len(pick), "steps": sw.steps, "log_points": len(log_steps)}
    for name, fn in (("logged", logged), ("unlogged", unlogged)):
        args = [({k: np.float64(r.hp[k]) for k in exp.dynamic_names}, np.uint32(r.seed))
                for r in pick]
        t = time.perf_counter()
        jax.device_get(fn(*args[0]))  # trace + compile + one run
        first = time.perf_counter() - t
        t = time.perf_counter()
        for a in args:
            jax.device_get(fn(*a))
        per_run = (time.perf_counter() - t) / len(args)
        out[name] = {"per_run_s": per_run, "compile_s": max(first - per_run, 0.0),
                     "steady_run_steps_per_s": sw.steps / per_run}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tr-runs", type=int, default=512, help="overhead: threshold_relu runs")
    ap.add_argument("--tr-steps", type=int, default=200, help="overhead: threshold_relu steps")
    ap.add_argument("--mm-lrs", type=int, default=4096, help="overhead: mean model lr values "
                    "(x 4 seeds)")
    ap.add_argument("--mm-steps", type=int, default=2000)
    ap.add_argument("--relu-n", type=int, default=16)
    ap.add_argument("--relu-d", type=int, default=64)
    ap.add_argument("--relu-lrs", type=int, default=16)
    ap.add_argument("--relu-seeds", type=int, default=16)
    ap.add_argument("--relu-steps", type=int, default=2000)
    ap.add_argument("--probe-every", type=int, default=100,
                    help="relu: probe and log every this many steps")
    ap.add_argument("--iters", type=int, default=20, help="relu: Lanczos iterations")
    ap.add_argument("--k", type=int, default=2, help="relu: eigenvalues")
    ap.add_argument("--scan-points", type=int, default=None,
                    help="default: the scan file's (4096)")
    ap.add_argument("--scan-steps", type=int, default=None,
                    help="default: the scan file's (2000)")
    ap.add_argument("--n-train", type=int, default=None,
                    help="threshold_relu n_train (default: the scan file's, 200)")
    ap.add_argument("--loop-runs", type=int, default=16)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    a = ap.parse_args()
    t_start = time.perf_counter()
    res = {"device": engine.device_description(), "jax": jax.__version__,
           "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "git_rev": git_rev(),
           "argv": sys.argv[1:], "load_start": load()}

    # the scan sweep: the file as it is, with only what the command line overrides
    ov = ["name=scan"]
    if a.scan_steps is not None:
        ov.append(f"steps={a.scan_steps}")
    if a.scan_points is not None:
        ov.append(f"grid.lr.num={a.scan_points}")
    if a.n_train is not None:
        ov.append(f"fixed.n_train={a.n_train}")
    scan_sw = spec.parse(SCAN_FILE.read_text(), experiments.params_of, file=SCAN_FILE,
                         overrides=ov)
    n_train = scan_sw.runs()[0].hp["n_train"]

    # 1. sharpness overhead
    print("sharpness overhead", file=sys.stderr, flush=True)
    small = [("none", None), ("dense", {"every": 10, "method": "dense"}),
             ("lanczos", {"every": 10, "method": "lanczos", "iters": 3})]
    rows = overhead("eos.threshold_relu", TR, {"steps": a.tr_steps, "every": 10,
                                               "n_train": n_train, "num": a.tr_runs}, small)
    rows += overhead("eos.mean_model", MM, {"steps": a.mm_steps, "every": 10,
                                            "num": a.mm_lrs}, small)
    rows += overhead("relu.teacher_student", RELU,
                     {"steps": a.relu_steps, "every": a.probe_every, "seeds": a.relu_seeds,
                      "n": a.relu_n, "d": a.relu_d, "num": a.relu_lrs},
                     [("none", None), ("lanczos", {"every": a.probe_every, "k": a.k,
                                                   "method": "lanczos", "iters": a.iters})])
    res["sharpness_overhead"] = rows

    # 2. the scan against a per-run jitted loop
    print(f"scan: {scan_sw.n_runs()} runs x {scan_sw.steps} steps", file=sys.stderr, flush=True)
    s = run(scan_sw)
    loop = per_run_loop(scan_sw, a.loop_runs)
    R, T = s["runs_run"], scan_sw.steps
    sc = {"runs": R, "steps": T, "n_train": n_train, "d": scan_sw.runs()[0].hp["d"],
          "n_test": scan_sw.runs()[0].hp["n_test"], "log_points": loop["log_points"],
          "file": str(SCAN_FILE.relative_to(ROOT)), "overrides": ov[1:],
          "wall_s": s["wall_s"], "compile_s": s["compile_s"], "steady_s": s["steady_s"],
          "write_s": s["write_s"], "write_wait_s": s["write_wait_s"], "chunks": s["chunks"],
          "diverged": s["diverged"],
          "engine_run_steps_per_s": R * T / s["wall_s"],
          "engine_steady_run_steps_per_s": R * T / s["steady_s"], "loop": loop}
    for name in ("logged", "unlogged"):
        lp = loop[name]
        # end to end: one compile, then every run of the scan at the measured per-run time
        lp["e2e_s_extrapolated"] = lp["compile_s"] + R * lp["per_run_s"]
        lp["e2e_run_steps_per_s"] = R * T / lp["e2e_s_extrapolated"]
        sc[f"ratio_e2e_{name}"] = sc["engine_run_steps_per_s"] / lp["e2e_run_steps_per_s"]
        sc[f"ratio_steady_{name}"] = (sc["engine_steady_run_steps_per_s"]
                                      / lp["steady_run_steps_per_s"])
    res["scan"] = sc
    res["load_end"] = load()
    res["total_s"] = time.perf_counter() - t_start

    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "eos.json").write_text(json.dumps(res, indent=2, default=float))
    (out / "eos.md").write_text(report(res))
    print(report(res))


def report(res: dict) -> str:
    f = lambda x, p=".2f": "–" if x is None else format(x, p)  # noqa: E731
    L = ["# EoS family benchmark (benchmarks/bench_eos.py)", "",
         f"- {res['date']}, git {res['git_rev']}, jax {res['jax']}, device {res['device']}",
         f"- load average (1, 5, 15 min) at start {res['load_start']}, at end "
         f"{res['load_end']}; whole script {res['total_s']:.0f} s; arguments: "
         f"`{' '.join(res['argv']) or '(defaults)'}`",
         "- every engine number is one cold `engine.run_sweep` call in this process (float32, "
         "fresh store, no persistent compilation cache); *wall* is its `wall_s` (planning, "
         "compile, compute, waiting for the Parquet writer), *compile* its `compile_s`, "
         "*steady* = wall − compile (it still includes *write wait*, `write_wait_s`: the time "
         "the sweep loop stood waiting for the writer thread)", "",
         "## Sharpness tracking overhead", "",
         "Same sweep with and without `probes.sharpness`; ratio = steady(probe) / steady(none). "
         "One probe call in gradient steps = (steady(probe) − steady(none)) / (probe calls per "
         "run) / (steady(none) / steps), i.e. in units of one whole step of the sweep "
         "(gradient, update, divergence check); per Lanczos iteration = that / m, m the Krylov "
         "dimension (min(max(iters, 2k), parameters)); an iteration is one forward-over-reverse "
         "HVP plus the full reorthogonalisation (O(m·n)). The 3-parameter models probe at every "
         "log point (every 10 steps); relu.teacher_student (population loss) at every log "
         "point, every `probe-every` steps.", "",
         "| model | params | probe | runs × steps | probe calls / run | compile (s) | wall (s) "
         "| write wait (s) | steady (s) | ratio to none | 1 probe call (grad steps) | m "
         "| 1 Lanczos iter (grad steps) |",
         "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in res["sharpness_overhead"]:
        o = r["opts"] or {}
        probe = r["probe"] if not o else (
            f"{o['method']}" + (f" iters={o['iters']}" if "iters" in o else "")
            + (f" k={o['k']}" if "k" in o else "") + f" every={o['every']}")
        L.append(f"| {r['model']} | {r['params']} | {probe} | {r['runs']} × {r['steps']} | "
                 f"{r['probe_calls']} | {f(r['compile_s'], '.1f')} | {f(r['wall_s'])} | "
                 f"{f(r['write_wait_s'])} | {f(r['steady_s'])} | {f(r['ratio_to_none'])} | "
                 f"{f(r.get('probe_call_grad_steps'), '.1f')} | {r.get('lanczos_m', '–')} | "
                 f"{f(r.get('lanczos_iter_grad_steps'), '.2f')} |")
    div = [f"{r['model']}/{r['probe']}: {r['diverged']}" for r in res["sharpness_overhead"]
           if r["diverged"]]
    if div:
        L += ["", f"Diverged runs (frozen, flagged): {', '.join(div)}."]
    sc, lp = res["scan"], res["scan"]["loop"]
    L += ["", f"## {sc['runs']}-point η scan, eos.threshold_relu, d = {sc['d']}, n_train = "
              f"{sc['n_train']}, n_test = {sc['n_test']}, {sc['steps']} GD steps", "",
          f"Sweep: `{sc['file']}`" + (f" with {', '.join(sc['overrides'])}"
                                      if sc["overrides"] else " as it is")
          + f" ({sc['log_points']} log points, every metric incl. the exact 3×3 Hessian's "
            f"top eigenvalue at each). Unit: run·steps/s = runs × steps / seconds.", "",
          "| case | what is timed | seconds | run·steps/s | engine / this |",
          "|---|---|---|---|---|",
          f"| engine, end to end | `run_sweep` wall: compile {sc['compile_s']:.1f} s, "
          f"chunks: {sc['chunks']}, Parquet (write wait {sc['write_wait_s']:.2f} s, writer busy "
          f"{sc['write_s']:.2f} s), {sc['diverged']} runs diverged | {sc['wall_s']:.1f} | "
          f"{sc['engine_run_steps_per_s']:.3g} | |",
          f"| engine, steady | wall − compile | {sc['steady_s']:.1f} | "
          f"{sc['engine_steady_run_steps_per_s']:.3g} | |"]
    for name, what in (("logged", f"logs every metric at the same {sc['log_points']} steps "
                                  "and copies the curves to the host (as the engine logs; no "
                                  "Parquet, no divergence check)"),
                       ("unlogged", "no logging: the final state's metrics only")):
        p = lp[name]
        L += [f"| per-run loop ({name}), steady | one jitted call per run, {lp['runs']} runs "
              f"spread over the scan's η, {what}; compile excluded | "
              f"{p['per_run_s'] * sc['runs']:.1f} (extrapolated) | "
              f"{p['steady_run_steps_per_s']:.3g} | **{sc[f'ratio_steady_{name}']:.2f}** |",
              f"| per-run loop ({name}), end to end | its compile ({p['compile_s']:.2f} s) + "
              f"{sc['runs']} × the measured per-run time | {p['e2e_s_extrapolated']:.1f} "
              f"(extrapolated) | {p['e2e_run_steps_per_s']:.3g} | "
              f"**{sc[f'ratio_e2e_{name}']:.2f}** |"]
    return "\n".join(L) + "\n"


if __name__ == "__main__":
    main()
