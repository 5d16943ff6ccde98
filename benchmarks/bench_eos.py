"""Edge-of-stability family benchmark (issue: EoS family), all in one process.

1. Overhead of sharpness tracking: the same eos.threshold_relu sweep with and without the
   sharpness probe (every log point), dense Hessian and Lanczos on HVPs, as a ratio of the
   steady-state (compile excluded) wall time; and on the mean model.
2. A 4,096-point log-spaced η scan of eos.threshold_relu at d = 200, end to end through the
   engine, against a per-run jitted loop of the same model (one run per call).

    python benchmarks/bench_eos.py [--steps 200] [--n-train 200] [--out benchmarks/results]

Device-agnostic: runs unchanged on CPU, GPU or TPU.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from jaxdyn import engine, experiments, spec
from jaxdyn.experiments import eos
from jaxdyn.store import SweepStore

TR = """
name = "{name}"
experiment = "eos.threshold_relu"
steps = {steps}
seeds = 1
log = {{ every = {every} }}
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
{probes}
[fixed]
d = 100
[grid]
lr = {{ start = 2.5e-4, stop = 2.5e-2, num = {num}, spacing = "log" }}
"""


def run(text: str, root: Path) -> dict:
    sw = spec.parse(text, experiments.params_of)
    exp = experiments.get(sw.experiment)
    store = SweepStore(root, sw.name)
    store.open(sw)
    try:
        s = engine.run_sweep(sw, exp, store)
    finally:
        store.close()
    s["steady_s"] = s["wall_s"] - s["compile_s"]
    s["runs_x_steps"] = s["runs_run"] * sw.steps
    return s


def per_run_loop(lrs, steps: int, n_train: int) -> float:
    """run-steps/s of a jitted full-run function called once per run (same math)."""
    static = {"d": 200, "n_train": n_train, "n_test": 200, "batch": 0, "dtype": jnp.float32,
              "steps": steps}
    data = eos._tr_make_data(jax.random.PRNGKey(2), static)

    @jax.jit
    def one(lr):
        hp = {"lr": lr, "lam": jnp.float32(5), "init_scale": jnp.float32(0.01),
              "b0": jnp.float32(0)}
        st = eos._tr_init(jax.random.PRNGKey(0), static, hp, data)
        st = jax.lax.fori_loop(0, steps, lambda i, s: eos._tr_step(s, None, static, hp, data),
                               st)
        return st["params"]["b"]

    jax.block_until_ready(one(jnp.float32(lrs[0])))  # compile
    t = time.perf_counter()
    for lr in lrs:
        jax.block_until_ready(one(jnp.float32(lr)))
    return len(lrs) * steps / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--n-train", type=int, default=200)
    ap.add_argument("--scan-points", type=int, default=4096)
    ap.add_argument("--loop-runs", type=int, default=16)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results"))
    a = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="jaxdyn-bench-eos-"))
    os.environ.setdefault("JAXDYN_CACHE_DIR", str(tmp / "cache"))
    res = {"device": engine.device_description(), "jax": jax.__version__,
           "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "load": os.getloadavg()}

    # 1. sharpness overhead (probe at every log point, every 10 steps)
    ov = {}
    for label, tpl, num, steps in (("threshold_relu", TR, 512, a.steps),
                                   ("mean_model", MM, 4096, 2000)):
        base = None
        for variant, probes in (("none", ""),
                                ("dense", 'probes = { sharpness = { every = 10, method = "dense" } }'),
                                ("lanczos", 'probes = { sharpness = { every = 10, method = "lanczos", iters = 3 } }')):
            s = run(tpl.format(name=f"{label}_{variant}", steps=steps, every=10, probes=probes,
                               n_train=a.n_train, num=num), tmp)
            ov[f"{label}/{variant}"] = {"steady_s": s["steady_s"], "compile_s": s["compile_s"],
                                        "runs": s["runs_run"], "steps": steps}
            if variant == "none":
                base = s["steady_s"]
            ov[f"{label}/{variant}"]["ratio_to_none"] = s["steady_s"] / base
    res["sharpness_overhead"] = ov

    # 2. the 4096-point scan against a per-run jitted loop
    s = run(TR.format(name="scan", steps=a.steps, every=max(1, a.steps // 4), probes="",
                      n_train=a.n_train, num=a.scan_points), tmp)
    eng = s["runs_x_steps"] / s["wall_s"]
    lrs = np.geomspace(1e-5, 1e-2, a.loop_runs)
    loop = per_run_loop(lrs, a.steps, a.n_train)
    res["scan"] = {"runs": s["runs_run"], "steps": a.steps, "n_train": a.n_train, "d": 200,
                   "wall_s": s["wall_s"], "compile_s": s["compile_s"],
                   "engine_run_steps_per_s": eng,
                   "engine_steady_run_steps_per_s": s["runs_x_steps"] / s["steady_s"],
                   "per_run_loop_run_steps_per_s": loop, "ratio": eng / loop}

    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "eos.json").write_text(json.dumps(res, indent=2, default=float))
    L = [f"# EoS family benchmark", "",
         f"- {res['date']}, jax {res['jax']}, {res['device']}, load average {res['load']}", "",
         "## Sharpness tracking overhead (probe at every log point = every 10 steps)", "",
         "| model | probe | runs x steps | steady wall (s) | ratio to no probe |",
         "|---|---|---|---|---|"]
    for k, v in ov.items():
        m, p = k.split("/")
        L.append(f"| {m} | {p} | {v['runs']} x {v['steps']} | {v['steady_s']:.2f} | "
                 f"{v['ratio_to_none']:.2f} |")
    sc = res["scan"]
    L += ["", f"## {sc['runs']}-point η scan, eos.threshold_relu, d = 200, n_train = "
              f"{sc['n_train']}, {sc['steps']} GD steps", "",
          f"- engine end to end (compile {sc['compile_s']:.1f} s and Parquet included): "
          f"{sc['engine_run_steps_per_s']:.3g} run-steps/s "
          f"(steady {sc['engine_steady_run_steps_per_s']:.3g})",
          f"- per-run jitted loop ({a.loop_runs} runs, one call each, compile excluded, "
          f"no logging; the engine logs all metrics incl. the exact 3x3 Hessian every "
          f"{max(1, a.steps // 4)} steps): "
          f"{sc['per_run_loop_run_steps_per_s']:.3g} run-steps/s",
          f"- ratio engine / per-run loop: **{sc['ratio']:.2f}**"]
    (out / "eos.md").write_text("\n".join(L) + "\n")
    print("\n".join(L))


if __name__ == "__main__":
    main()
