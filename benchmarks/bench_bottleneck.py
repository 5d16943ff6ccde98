"""Benchmark: the bottleneck family at the thesis setting (seed 003; see
docs/science/bottleneck.md).

``bottleneck.three_layer`` with d = 10, width 1000, batch 32, n_train = 1e4, lr 5e-4,
float32, log every ``--log-every`` steps; ``--runs`` runs (1,024 by default: one data seed x
1,024 initialisation replicates, so the runs share one data set). Measured in one process:

1. the engine end to end: ``jaxdyn.run(...)`` on a generated sweep file, with a
   fresh empty compilation cache (compile and Parquet writing counted), once with the
   engine's automatic chunk size and once per ``--chunk-sizes`` value;
2. a per-run jitted loop: the same run function (``engine.make_run_fn``) jitted for ONE run
   and called run after run (``--b-runs`` runs);
3. a per-run Python loop around a jitted single SGD step (``--a-runs`` x ``--a-steps``);
4. optionally, a PyTorch per-run loop of the same model and SGD step (if torch imports);
5. FLOP/s: the flops of one vmapped SGD step from XLA's ``cost_analysis()`` times the
   measured run-steps/s, against a measured matmul peak (a large ``jnp.dot`` timed here);
6. memory: ``compiled.memory_analysis()`` of the engine's chunk program for 256 and 1,024
   runs at n_train = 1e4 and 1e5: the growth per run against the per-run state and
   activations, and against the size of the data (which must not be copied per run).

Steps are reduced with ``--steps`` (default 2,000) and run-steps/s extrapolated to 1e4 steps
(the programs are a loop: cost is linear in steps once compiled). No device-specific code.

    .venv/bin/python benchmarks/bench_bottleneck.py [--runs 1024] [--steps 2000]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

NAME = "bench_bottleneck"
#: micro-batch of the memory comparison (what the engine measured best here: 8 to 16)
MEMORY_MICRO = 16


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=1024)
    ap.add_argument("--steps", type=int, default=2000,
                    help="SGD steps per run (default 2000; rates extrapolate to 1e4 steps)")
    ap.add_argument("--log-every", type=int, default=500)
    ap.add_argument("--width", type=int, default=1000)
    ap.add_argument("--d", type=int, default=10)
    ap.add_argument("--n-train", type=int, default=10000)
    ap.add_argument("--chunk-sizes", default="64",
                    help="comma-separated --chunk-size values to time besides the automatic "
                         "choice (default 64)")
    ap.add_argument("--no-seed-split", dest="seed_split", action="store_false",
                    help="skip the 4 data seeds x runs/4 replicates cases with --chunk-sizes "
                         "(chunks never span seeds when data are shared)")
    ap.add_argument("--b-runs", type=int, default=16, help="runs of the per-run jitted loop")
    ap.add_argument("--a-runs", type=int, default=2, help="runs of the per-step Python loop")
    ap.add_argument("--a-steps", type=int, default=300, help="steps per run of (a)")
    ap.add_argument("--torch-runs", type=int, default=2)
    ap.add_argument("--torch-steps", type=int, default=500)
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results"))
    return ap.parse_args(argv)


def sweep_toml(args, seeds: int, replicates: int, name: str) -> str:
    return f"""\
name = "{name}"
experiment = "bottleneck.three_layer"
steps = {args.steps}
seeds = {seeds}
log = {{ every = {args.log_every} }}
precision = "float32"
[fixed]
d = {args.d}
width = {args.width}
batch = 32
n_train = {args.n_train}
n_val = 1024
n_eval = 1024
lr = 5e-4
nu = 0.5
[grid]
replicate = {{ start = 0, stop = {replicates - 1}, num = {replicates} }}
"""


def bench_engine(args, tmp: Path, seeds: int, chunk: int | None, tag: str,
                 micro: int | None = None) -> dict:
    import jaxdyn

    reps = max(1, args.runs // seeds)
    f = tmp / f"{tag}.toml"
    f.write_text(sweep_toml(args, seeds, reps, tag))
    cache = tmp / f"cache_{tag}"
    cache.mkdir()
    os.environ["JAXDYN_CACHE_DIR"] = str(cache)
    t = time.perf_counter()
    summary = jaxdyn.run(f, out=tmp / "results", quiet=True, chunk_size=chunk or None,
                         micro_batch=micro)
    wall = time.perf_counter() - t
    st = summary.stats
    compile_s, tune_s = summary.compile_s, st.get("tune_s", 0.0)
    micro_used = "/".join(str(m) if m else "whole" for m in st["micro_batch"]) or "whole"
    runs = seeds * reps
    return {"case": tag, "seeds": seeds, "runs": runs, "chunk": chunk or "auto",
            "micro": micro_used, "wall_s": wall, "compile_s": compile_s, "tune_s": tune_s,
            "run_steps_per_s": runs * args.steps / wall,
            "run_steps_per_s_no_compile": runs * args.steps
            / max(wall - compile_s - tune_s, 1e-9),
            "extrapolated_1e4_steps_s": compile_s + tune_s
            + (wall - compile_s - tune_s) * 1e4 / args.steps}


def setup(args, steps=None):
    import jax
    import jax.numpy as jnp

    from jaxdyn.experiments import bottleneck as bn

    static = dict(d=args.d, width=args.width, k=1, n_train=args.n_train, n_val=1024,
                  n_eval=1024, batch=32, init="lecun", control="none", reduction="mean",
                  dtype=jnp.float32, steps=steps or args.steps)
    data = jax.jit(lambda k: bn.make_data(k, static))(jax.random.PRNGKey(2))
    return static, data


def hp_of(rep):
    import jax.numpy as jnp
    return {"nu": jnp.float32(0.5), "lr": jnp.float32(5e-4), "cos0": jnp.float32(0.5),
            "pretrain_steps": jnp.float32(0), "replicate": jnp.float32(rep)}


def bench_per_run_jit(args) -> dict:
    """The engine's own run function, jitted for one run, called run after run."""
    import jax
    import numpy as np

    from jaxdyn import engine
    from jaxdyn.experiments import bottleneck as bn
    from jaxdyn.spec import LogSchedule

    static, data = setup(args)
    run = engine.make_run_fn(bn.three_layer, static,
                             LogSchedule(every=args.log_every).steps(args.steps))
    f = jax.jit(run)
    dyn = lambda r: {k: np.float64(v) for k, v in hp_of(r).items()}  # noqa: E731
    t = time.perf_counter()
    c = f.lower(dyn(0), np.uint32(0), data).compile()
    compile_s = time.perf_counter() - t
    jax.block_until_ready(c(dyn(0), np.uint32(0), data))  # warm-up
    t = time.perf_counter()
    for r in range(args.b_runs):
        jax.block_until_ready(c(dyn(r + 1), np.uint32(0), data))
    wall = time.perf_counter() - t
    return {"case": "per-run jitted loop (engine run fn, 1 run per call)", "runs": args.b_runs,
            "wall_s": wall, "compile_s": compile_s,
            "run_steps_per_s": args.b_runs * args.steps / wall}


def bench_python_loop(args) -> dict:
    """A Python loop per run around a jitted single SGD step (logging as the engine does)."""
    import jax

    from jaxdyn.experiments import bottleneck as bn

    static, data = setup(args, steps=args.a_steps)
    step = jax.jit(lambda s, hp: bn.step(s, None, static, hp, data))
    meas = jax.jit(lambda s, hp: bn.measure(s, static, hp, data))
    s = bn.init(jax.random.PRNGKey(0), static, hp_of(0), data)
    jax.block_until_ready(meas(step(s, hp_of(0)), hp_of(0)))
    t = time.perf_counter()
    for r in range(args.a_runs):
        hp = hp_of(r)
        s = bn.init(jax.random.PRNGKey(0), static, hp, data)
        for i in range(args.a_steps):
            s = step(s, hp)
            if (i + 1) % args.log_every == 0:
                jax.device_get(meas(s, hp))
        jax.block_until_ready(s)
    wall = time.perf_counter() - t
    return {"case": "per-run Python loop, jitted step", "runs": args.a_runs,
            "steps": args.a_steps, "wall_s": wall,
            "run_steps_per_s": args.a_runs * args.a_steps / wall}


def bench_torch(args) -> dict | None:
    try:
        import torch
    except Exception:  # noqa: BLE001 - optional
        return None
    import numpy as np

    static, data = setup(args, steps=args.torch_steps)
    x = torch.from_numpy(np.array(data["x"]))
    zs = torch.from_numpy(np.array(data["z_star"]))
    order = torch.from_numpy(np.asarray(data["order"]).astype(np.int64))
    m, d = args.width, args.d
    g = torch.Generator().manual_seed(0)
    t = time.perf_counter()
    for r in range(args.torch_runs):
        w = (torch.randn(d, generator=g) / d**0.5).requires_grad_()
        u = torch.randn(m, generator=g).requires_grad_()
        b = torch.randn(m, generator=g).requires_grad_()
        v = (torch.randn(m, generator=g) / m**0.5).requires_grad_()
        opt = torch.optim.SGD([w, u, b, v], lr=5e-4)
        for i in range(args.torch_steps):
            idx = order[i]
            xb, yb = x[idx], torch.sin(0.5 * torch.pi * zs[idx])
            f = torch.relu((xb @ w)[:, None] * u + b) @ v
            loss = 0.5 * ((yb - f) ** 2).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if (i + 1) % args.log_every == 0:
                with torch.no_grad():
                    xe, ye = x[:1024], torch.sin(0.5 * torch.pi * zs[:1024])
                    float(((ye - torch.relu((xe @ w)[:, None] * u + b) @ v) ** 2).mean())
    wall = time.perf_counter() - t
    return {"case": f"PyTorch {torch.__version__} per-run loop ({torch.get_num_threads()} "
                    f"threads)", "runs": args.torch_runs, "steps": args.torch_steps,
            "wall_s": wall, "run_steps_per_s": args.torch_runs * args.torch_steps / wall}


def bench_steady(args, sizes=(1, 8, 16, 64, 256), micro_sizes=(8, 16), steps=1000,
                 repeats=3) -> dict:
    """Steady state, compile excluded: the engine's run function jitted for one run (R = 1)
    and jit(vmap)-ed over R runs, timed interleaved, best of ``repeats`` (robust to the
    load of a shared machine)."""
    import jax
    import numpy as np

    from jaxdyn import engine
    from jaxdyn.experiments import bottleneck as bn
    from jaxdyn.spec import LogSchedule

    static, data = setup(args, steps=steps)
    log_steps = LogSchedule(every=args.log_every).steps(steps)
    run = engine.make_run_fn(bn.three_layer, static, log_steps)
    # vmapped as the engine does: with the run axis named, the segment's divergence check is
    # one branch for the batch (without it, vmap turns the cond into a select and the
    # guarded re-run is paid on every segment)
    vrun = jax.vmap(engine.make_run_fn(bn.three_layer, static, log_steps,
                                       axis_name=engine.RUN_AXIS),
                    in_axes=(0, 0, None), axis_name=engine.RUN_AXIS)

    def dyn(n):
        return {k: np.full(n, float(v)) for k, v in hp_of(0).items()} | \
            {"replicate": np.arange(n, dtype=float)}

    calls = {}
    for n in sizes:
        if n == 1:
            a = ({k: v[0] for k, v in dyn(1).items()}, np.uint32(0), data)
            calls[str(n)] = (jax.jit(run).lower(*a).compile(), a, n)
        else:
            a = (dyn(n), np.zeros(n, np.uint32), data)
            calls[str(n)] = (jax.jit(vrun).lower(*a).compile(), a, n)
    for micro in micro_sizes:  # the engine's micro-batches: 256 runs, `micro` at a time
        n = 256
        a = (dyn(n), np.zeros(n, np.uint32), data)
        f = jax.jit(lambda d, s, x, m=micro: engine.micro_batched(vrun, m, (d, s), x))
        calls[f"{n} in micro-batches of {micro}"] = (f.lower(*a).compile(), a, n)
    best = {k: 0.0 for k in calls}
    for _ in range(repeats):
        for k, (f, a, n) in calls.items():
            t = time.perf_counter()
            jax.block_until_ready(f(*a))
            best[k] = max(best[k], n * steps / (time.perf_counter() - t))
    return {"steps": steps, "run_steps_per_s": best, "device": "one CPU device"}


def step_flops(args, n=64) -> float:
    """FLOPs of one SGD step per run, from XLA's cost analysis of the vmapped step (the
    analysis of a loop counts its body once, so the step is analysed on its own)."""
    import jax
    import jax.numpy as jnp

    from jaxdyn.experiments import bottleneck as bn

    static, data = setup(args)
    reps = jnp.arange(n, dtype=jnp.float32)
    states = jax.vmap(lambda r: bn.init(jax.random.PRNGKey(0), static, hp_of(r), data))(reps)
    f = jax.jit(lambda s, r: jax.vmap(lambda st, rr: bn.step(st, None, static, hp_of(rr),
                                                             data))(s, r))
    ca = f.lower(states, reps).compile().cost_analysis()
    ca = ca[0] if isinstance(ca, (list, tuple)) else ca
    return float(ca["flops"]) / n, float(ca.get("bytes accessed", 0.0)) / n


def matmul_peak() -> float:
    """The matmul ceiling of ``jaxdyn bench``: the best float32 product over n = 256, 512, ...
    with every device running its own at the same time (their total FLOP/s)."""
    from jaxdyn.bench import measure_ceilings

    return measure_ceilings()["flop_per_s"]


def memory(args) -> list[dict]:
    from jaxdyn import engine, experiments, spec

    out = []
    for n_train in (10000, 100000):
        text = sweep_toml(argparse.Namespace(**{**vars(args), "n_train": n_train}), 1, 4, "mem")
        sw = spec.parse(text, experiments.params_of)
        exp = experiments.get(sw.experiment)
        g = engine.plan_groups(sw, exp, sw.runs())[0]
        row = {"n_train": n_train}
        for micro in (None, MEMORY_MICRO):
            runner = engine.ChunkRunner(exp, sw, g, ())
            runner.micro = micro  # (the engine measures it; fixed here to compare programs)
            for n in (256, 1024):
                ma = runner.compiled(n).memory_analysis()
                row[f"micro{micro}_{n}"] = {
                    "argument": ma.argument_size_in_bytes, "output": ma.output_size_in_bytes,
                    "temp": ma.temp_size_in_bytes,
                    "total": ma.argument_size_in_bytes + ma.output_size_in_bytes
                    + ma.temp_size_in_bytes}
            row[f"growth_micro{micro}"] = (row[f"micro{micro}_1024"]["total"]
                                          - row[f"micro{micro}_256"]["total"]) / 768
        row[256], row[1024] = row[f"micro{MEMORY_MICRO}_256"], row[f"micro{MEMORY_MICRO}_1024"]
        m, d, B = args.width, args.d, 32
        n_log = len(sw.log.steps(sw.steps))
        row["per_run_growth"] = row[f"growth_micro{MEMORY_MICRO}"]
        row["per_run_growth_whole"] = row["growth_microNone"]
        # params + t + init key (SGD has no optimiser state)
        row["state_bytes_per_run"] = 4 * (d + 3 * m) + 4 + 8
        row["activation_bytes_per_run"] = 4 * B * m  # one (batch, width) float32 array
        row["curves_bytes_per_run"] = 4 * n_log * 5 + 4 * 5 + 8
        row["data_bytes"] = 4 * ((n_train + 1024) * d + n_train + 1024 + d) \
            + 4 * args.steps * B
        row["temp_1024_minus_256_over_data"] = (row[1024]["temp"] - row[256]["temp"]) / \
            row["data_bytes"]
        out.append(row)
    return out


def fmt(x, unit=""):
    return f"{x:.3g}{unit}"


def main(argv=None) -> int:
    args = parse_args(argv)
    from jaxdyn import engine

    engine.use_cpu_cores()  # as `jaxdyn run` does: one CPU device per core
    import jax

    # the baselines run the engine's own run function: in x64 mode, as jaxdyn.run runs it
    # (and as every baseline ran when importing jaxdyn still switched x64 on globally)
    jax.config.update("jax_enable_x64", True)
    results = {"date": datetime.datetime.now().isoformat(timespec="seconds"),
               "jax": jax.__version__, "devices": [str(d) for d in jax.devices()],
               "platform": platform.platform(), "args": vars(args)}
    try:
        results["git_rev"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO,
                                            capture_output=True, text=True).stdout.strip()
    except OSError:
        pass
    results["loadavg_before"] = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmpd:
        return _main(args, results, Path(tmpd))


def _main(args, results, tmp: Path) -> int:
    eng = [bench_engine(args, tmp, 1, None, "engine_auto"),
           bench_engine(args, tmp, 1, None, "engine_auto_whole", micro=0)]
    chunks = [int(c) for c in args.chunk_sizes.split(",") if c]
    for c in chunks:
        eng.append(bench_engine(args, tmp, 1, c, f"engine_chunk{c}", micro=0))
    if args.seed_split:  # (automatic chunks would pad every per-seed chunk to the group's batch)
        for c in chunks:
            eng.append(bench_engine(args, tmp, 4, c, f"engine_4seeds_chunk{c}"))
    results["engine"] = eng
    results["per_run_jit"] = bench_per_run_jit(args)
    results["steady"] = bench_steady(args)
    results["python_loop"] = bench_python_loop(args)
    results["torch"] = bench_torch(args)
    flops, bytes_ = step_flops(args)
    results["step_flops_per_run"] = flops
    results["step_bytes_per_run"] = bytes_
    results["matmul_peak_flops"] = matmul_peak()
    results["memory"] = memory(args)
    results["loadavg_after"] = os.getloadavg()

    best = max(eng, key=lambda e: e["run_steps_per_s"])
    pr = results["per_run_jit"]["run_steps_per_s"]
    lines = [f"# bottleneck.three_layer benchmark ({results['date']}, jax {results['jax']}, "
             f"{', '.join(results['devices'])}, git {results.get('git_rev', '?')})", "",
             f"Setting: d = {args.d}, width {args.width}, batch 32, n_train = {args.n_train}, "
             f"lr 5e-4, float32, log every {args.log_every}; {args.steps} steps per run "
             f"(extrapolated to 1e4). Host load average before/after: "
             f"{results['loadavg_before'][0]:.2f} / {results['loadavg_after'][0]:.2f} "
             f"(shared machine: timings are noisy, up to ~2x between runs).", "",
             "| case | runs | chunk | wall s | compile s | run-steps/s | est. s for 1e4 steps |",
             "|---|---|---|---|---|---|---|"]
    for e in eng:
        micro = (f"micro-batch {e['micro']}"
                 + (f" (measured in {e['tune_s']:.1f} s)" if e["tune_s"] else ""))
        lines.append(f"| engine ({e['seeds']} seed(s)), {micro} | {e['runs']} | {e['chunk']} | "
                     f"{e['wall_s']:.1f} | {e['compile_s']:.1f} | {fmt(e['run_steps_per_s'])} | "
                     f"{e['extrapolated_1e4_steps_s']:.0f} |")
    for key in ("per_run_jit", "python_loop", "torch"):
        r = results[key]
        if r is None:
            lines.append("| PyTorch per-run loop | - | - | - | - | skipped (torch not "
                         "importable) | - |")
            continue
        steps = r.get("steps", args.steps)
        lines.append(f"| {r['case']} | {r['runs']} x {steps} steps | 1 | {r['wall_s']:.1f} | "
                     f"{r.get('compile_s', 0):.1f} | {fmt(r['run_steps_per_s'])} | "
                     f"{args.runs * 1e4 / r['run_steps_per_s']:.0f} (1024 runs) |")
    lines += ["", f"Best engine / per-run jitted loop: **{best['run_steps_per_s'] / pr:.1f}x** "
                  f"(end to end, compile included); / per-step Python loop: "
                  f"{best['run_steps_per_s'] / results['python_loop']['run_steps_per_s']:.0f}x"
              + (f"; / PyTorch per-run loop: "
                 f"{best['run_steps_per_s'] / results['torch']['run_steps_per_s']:.0f}x"
                 if results["torch"] else "") + ".", ""]
    st = results["steady"]["run_steps_per_s"]
    lines += [f"Steady state (compile excluded, interleaved, best of 3, "
              f"{results['steady']['steps']} steps): run-steps/s of the run function jitted "
              f"for one run vs jit(vmap) over R runs: "
              + ", ".join(f"R = {n}: {fmt(v)}" for n, v in st.items())
              + f" (best vmapped / one run: "
              f"{max(v for n, v in st.items() if n != '1') / st['1']:.2f}x;"
              f" on one CPU device: the engine runs one such program per core).",
              ""]
    ach = flops * best["run_steps_per_s_no_compile"]
    lines += [f"FLOPs per run-step (XLA cost analysis of one vmapped SGD step): {fmt(flops)}; "
              f"bytes accessed per run-step: {fmt(bytes_)}.",
              f"Achieved by the best engine case (without compile): {fmt(ach / 1e9)} GFLOP/s; "
              f"measured matmul ceiling (`jaxdyn bench`'s: the best float32 product over "
              f"n = 256, 512, ..., every device its own at once): "
              f"{fmt(results['matmul_peak_flops'] / 1e9)} GFLOP/s; ratio "
              f"{ach / results['matmul_peak_flops']:.1%}. The step is outer products, ReLU "
              f"masks and matrix-vector reductions over (batch, width) per run — bandwidth-, not "
              f"matmul-bound.", "",
              f"Memory (XLA memory analysis of the engine's chunk program, micro-batches of "
              f"{MEMORY_MICRO} runs per device, bytes):", "",
              "| n_train | runs | argument | output | temp | total |", "|---|---|---|---|---|---|"]
    for row in results["memory"]:
        for n in (256, 1024):
            r = row[n]
            lines.append(f"| {row['n_train']} | {n} | {r['argument']:,} | {r['output']:,} | "
                         f"{r['temp']:,} | {r['total']:,} |")
    for row in results["memory"]:
        lines.append("")
        lines.append(f"n_train = {row['n_train']}: growth per run {row['per_run_growth']:,.0f} "
                     f"B = {row['per_run_growth'] / row['activation_bytes_per_run']:.2f} x one "
                     f"(batch, width) activation ({row['activation_bytes_per_run']:,} B) — "
                     f"state {row['state_bytes_per_run']:,} B, curves "
                     f"{row['curves_bytes_per_run']:,} B; the shared data are "
                     f"{row['data_bytes']:,} B, so a per-run copy would add that much per run. "
                     f"Without micro-batches (all of a device's runs vmapped at once) the "
                     f"growth is {row['per_run_growth_whole']:,.0f} B per run "
                     f"({row['per_run_growth_whole'] / row['activation_bytes_per_run']:.2f} "
                     f"activations).")
    text = "\n".join(lines) + "\n"
    print(text)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "bottleneck.md").write_text(text)
    (out / "bottleneck.json").write_text(json.dumps(results, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
