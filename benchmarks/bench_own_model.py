"""Benchmark: a user's own model through ``jaxdyn.supervised`` against hand-written ensembles.

The model is what a user would bring: an MLP 32 -> 128 -> 128 -> 1 with ReLU, He-normal
weights and zero biases, mean-squared error, minibatches of 64 drawn with replacement from
4,096 shared samples (a fixed synthetic teacher-student regression set), ``adamw``, float32.
A sweep is lr x weight_decay (log-spaced, lr over [1e-4, 1e-2], weight_decay over
[1e-4, 1e-1]) x 4 seeds: 256 and 1,024 runs, 500 and 5,000 steps each, ``train_loss`` (the
loss on all 4,096 samples) logged at 5 evenly spaced steps (0, T/4, ..., T). Every program
below computes the same thing per step and logs the same 5 losses per run: at step i a run
of seed s draws ``idx = randint(fold_in(fold_in(PRNGKey(s), 1), i), (64,), 0, 4096)``
(torch: its own generator, one draw per seed), takes ``grad`` of the minibatch loss and
applies adamw (decoupled weight decay: ``p <- p - lr * (adam(g) + wd * p)``). Measured in
one process, case by case (each case's programs one right after the other, since the host's
load drifts):

1. jaxdyn end to end: ``jaxdyn.run(sweep_dict, experiment=jaxdyn.supervised(...))`` with
   ``JAXDYN_CACHE_DIR`` set to a fresh, empty directory at start, so every case compiles
   cold (and the first measures its micro-batch); the wall time around the whole call is the
   end-to-end figure (tracing, the contract checks, compile, the micro-batch tuner, compute,
   Parquet). "Steady" is the same rate with the call's own ``compile_s`` and ``tune_s``
   taken out; for the 500-step cases the sweep also runs a second time into a new folder
   (compilation cached, the tuner's result stored) as a check of that figure.
2. (a) the same run as ONE jitted ``lax.scan`` over the steps (optax.adamw, the 5 losses by a
   ``lax.cond`` at the log steps), called run after run for ``--a-runs`` runs (the fastest
   of 2 passes); its compile is timed apart and not counted in its rate (the strict reading
   for jaxdyn, whose compile is counted).
3. (b) ``torch.func``: the N models' parameters stacked (``stack_module_state``),
   ``vmap(grad(functional_call))`` over them with each model's own (64, 32) minibatch
   (gathered per model every step), adamw written as in-place tensor ops on the stacked
   tensors (lr and weight_decay differ per model), the 5 full-data losses vmapped in blocks
   of 32 models. All N runs are timed over ``min(steps, --b-steps)`` steps; a longer case is
   extrapolated from that per-step time plus the timed loss evaluations (torch compiles
   nothing, so its per-step cost does not depend on the run length).
4. (c) a plain PyTorch loop per run: ``nn.Sequential``, ``torch.optim.AdamW``, ``--c-runs``
   runs of the case's step count (the fastest of 2 passes), extrapolated to the sweep.
5. The float32 matmul ceiling (``jaxdyn.bench.measure_ceilings``: the best large product on
   every CPU device at once, measured after the first case and at the end; the higher
   counts) and the model's FLOPs: forward per sample 2 (32*128 + 128*128 + 128*1) = 41,216,
   a training step 3x forward x 64 samples = 7.9 MFLOP (the figure the target is read
   against); each logged loss adds 4,096 forward passes (169 MFLOP, ~21 steps' worth; shown
   apart).
6. Where jaxdyn's time goes: the micro-batch the tuner picked and the rates it measured (its
   file beside the compilation cache, read after every case), and the step alone as
   ``jit(vmap)`` over one micro-batch per device, in five variants (``bench_breakdown``):
   the engine's step with the per-step "non-finite" flag of its fast path, without it, with
   a fixed batch (no randint/gather), with SGD instead of adamw, and randint + gather alone.

Threads: torch.set_num_threads(= CPU count); jaxdyn gives JAX one CPU device per core (it
runs first in the process). The throughput unit is run-steps/s = runs x steps / wall seconds.

    .venv/bin/python benchmarks/bench_own_model.py            # full: ~20 min on 2 CPU cores
    .venv/bin/python benchmarks/bench_own_model.py --quick    # smoke version, ~1 min

Writes ``<out>/own_model.md`` (the table printed at the end) and ``<out>/own_model.json``.
"""

from __future__ import annotations

import argparse
import datetime
import functools
import itertools
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # runnable from a checkout without installing
    sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

import jaxdyn  # noqa: E402 - imports no JAX
from jaxdyn.spec import LogSchedule  # noqa: E402

NAME = "own_model"
DIMS = (32, 128, 128, 1)
N_DATA = 4096
BATCH = 64
SEEDS = 4
LOG_POINTS = 5
LR_RANGE = (1e-4, 1e-2)
WD_RANGE = (1e-4, 1e-1)
B1, B2, EPS = 0.9, 0.999, 1e-8  # optax.adamw's defaults (torch's too, but for eps)
FWD_FLOPS = 2 * sum(a * b for a, b in zip(DIMS[:-1], DIMS[1:]))  # per sample: 41,216
STEP_FLOPS = 3 * FWD_FLOPS * BATCH  # forward + backward of one minibatch
EVAL_FLOPS = FWD_FLOPS * N_DATA  # one logged train_loss

# Targets (the issue): jaxdyn end to end >= 1.5x (a), steady >= 50 % of the matmul ceiling,
# ahead of (b) and (c).
TARGET_A = 1.5
TARGET_CEIL = 0.5


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", default="256,1024", help="comma-separated run counts "
                                                       "(multiples of 4 seeds)")
    ap.add_argument("--steps", default="500,5000", help="comma-separated step counts")
    ap.add_argument("--a-runs", type=int, default=8, help="runs timed for (a) per step count")
    ap.add_argument("--b-steps", type=int, default=500,
                    help="steps timed for (b) per run count; longer cases extrapolated")
    ap.add_argument("--c-runs", type=int, default=2, help="runs timed for (c) per step count")
    ap.add_argument("--warm-max-steps", type=int, default=500,
                    help="run the jaxdyn sweep a second time (cached) when steps <= this")
    ap.add_argument("--breakdown-steps", type=int, default=200,
                    help="loop length difference of the step breakdown's timings")
    ap.add_argument("--torch-threads", type=int, default=os.cpu_count() or 1,
                    help="torch.set_num_threads (default: the CPU count)")
    ap.add_argument("--quick", action="store_true",
                    help="smoke version: 32 runs x 100 steps, few baseline runs")
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results"),
                    help="where the .md and .json go (default benchmarks/results)")
    args = ap.parse_args(argv)
    if args.quick:
        args.runs, args.steps = "32", "100"
        args.a_runs, args.c_runs, args.b_steps = 2, 1, 100
        args.breakdown_steps = 50
        if args.out == str(REPO / "benchmarks" / "results"):
            args.out = str(Path(tempfile.gettempdir()) / "jaxdyn-own-model-quick")
    args.runs = [int(x) for x in str(args.runs).split(",")]
    args.steps = [int(x) for x in str(args.steps).split(",")]
    return args


# ---- the problem ----------------------------------------------------------------------------
def make_data():
    """4,096 samples of a fixed teacher: y = tanh(x W1) w2 + noise, x ~ N(0, I_32)."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((N_DATA, DIMS[0])).astype(np.float32)
    w1 = rng.standard_normal((DIMS[0], 16)) / np.sqrt(DIMS[0])
    w2 = rng.standard_normal((16, 1)) / 4
    y = np.tanh(x @ w1) @ w2 + 0.05 * rng.standard_normal((N_DATA, 1))
    return x, y.astype(np.float32)


def grid(runs: int) -> tuple[list[float], list[float]]:
    """lr and weight_decay values, as square as the run count allows."""
    points = runs // SEEDS
    if points * SEEDS != runs:
        raise SystemExit(f"--runs: {runs} is not a multiple of {SEEDS} seeds")
    n_lr = max(1, round(math.sqrt(points)))
    while points % n_lr:
        n_lr -= 1
    lrs = [float(f"{v:.4g}") for v in np.geomspace(*LR_RANGE, n_lr)]
    wds = [float(f"{v:.4g}") for v in np.geomspace(*WD_RANGE, points // n_lr)]
    return lrs, wds


def run_list(runs: int) -> list[tuple[float, float, int]]:
    """(lr, wd, seed) of every run, lr-major (the baselines' subsets take the first ones)."""
    lrs, wds = grid(runs)
    return [(lr, wd, s) for lr, wd in itertools.product(lrs, wds) for s in range(SEEDS)]


def log_steps(steps: int) -> np.ndarray:
    return LogSchedule(points=LOG_POINTS).steps(steps)  # the engine's own rule


# ---- the model in JAX (the experiment and baseline (a) share it) ----------------------------
def mlp_init(key):
    import jax
    import jax.numpy as jnp

    keys = jax.random.split(key, len(DIMS) - 1)
    return [{"w": jax.random.normal(k, (a, b), jnp.float32) * np.float32(np.sqrt(2.0 / a)),
             "b": jnp.zeros((b,), jnp.float32)}
            for k, a, b in zip(keys, DIMS[:-1], DIMS[1:])]


def mlp_apply(params, x):
    import jax

    for layer in params[:-1]:
        x = jax.nn.relu(x @ layer["w"] + layer["b"])
    return x @ params[-1]["w"] + params[-1]["b"]


def mse(params, x, y):
    import jax.numpy as jnp

    return jnp.mean((mlp_apply(params, x) - y) ** 2)


# ---- 1. jaxdyn end to end -------------------------------------------------------------------
def sweep_dict(runs: int, steps: int) -> dict:
    lrs, wds = grid(runs)
    return {"name": f"own_mlp_{runs}x{steps}", "experiment": "own_mlp", "steps": steps,
            "seeds": SEEDS, "log": {"points": LOG_POINTS}, "precision": "float32",
            "optimizer": "adamw", "grid": {"lr": lrs, "weight_decay": wds}}


def bench_jaxdyn(exp, runs: int, steps: int, out: Path, label: str) -> dict:
    t0 = time.perf_counter()
    s = jaxdyn.run(sweep_dict(runs, steps), experiment=exp, out=out / label, quiet=True)
    wall = time.perf_counter() - t0
    st = dict(s.stats)
    fixed = (s.compile_s or 0.0) + st.get("tune_s", 0.0)
    rs = s.load().runs  # read back: every run is in the table
    final = rs["final_train_loss"].median()
    return {"label": label, "runs": runs, "steps": steps, "wall_s": wall,
            "engine_wall_s": s.wall_s, "compile_s": s.compile_s,
            "tune_s": st.get("tune_s"), "write_s": st.get("write_s"),
            "write_wait_s": st.get("write_wait_s"), "micro_batch": st.get("micro_batch"),
            "chunks": st.get("chunks"), "compiled_programs": st.get("compiled_programs"),
            "diverged": s.diverged, "runs_in_table": len(rs),
            "final_train_loss_median": float(final),
            "run_steps_per_s": runs * steps / wall,
            "steady_run_steps_per_s": runs * steps / max(wall - fixed, 1e-9),
            "stats": {k: v for k, v in st.items() if isinstance(v, (int, float, str, list))}}


def tuner_table() -> dict:
    """The micro-batch tuner's measurements (run-steps/s per runs-per-device), from its file
    beside the compilation cache."""
    f = Path(os.environ["JAXDYN_CACHE_DIR"]) / "jaxdyn-micro-batch.json"
    try:
        table = json.loads(f.read_text())
    except (OSError, ValueError):
        return {}
    return {k: v for k, v in table.items() if k.startswith("own_mlp|")}


# ---- 2. baseline (a): one jitted lax.scan per run ------------------------------------------
def bench_a(x, y, steps: int, n_runs: int, compiled_by_steps: dict, repeats: int = 2
            ) -> dict:
    """``n_runs`` runs, one call each, of a run compiled once per step count (kept in
    ``compiled_by_steps`` with its compile time); the fastest of ``repeats`` passes."""
    import jax
    import jax.numpy as jnp
    import optax

    logged = log_steps(steps)
    is_log = np.zeros(steps, bool)
    is_log[logged[logged > 0] - 1] = True
    pick = np.nonzero(is_log)[0]

    def run(lr, wd, seed, X, Y):
        key = jax.random.PRNGKey(seed)
        params = mlp_init(jax.random.fold_in(key, 0))
        k_step = jax.random.fold_in(key, 1)
        opt = optax.adamw(lr, weight_decay=wd)

        def step(carry, xs):
            i, log_here = xs
            p, s = carry
            idx = jax.random.randint(jax.random.fold_in(k_step, i), (BATCH,), 0, N_DATA)
            g = jax.grad(mse)(p, X[idx], Y[idx])
            u, s = opt.update(g, s, p)
            p = optax.apply_updates(p, u)
            loss = jax.lax.cond(log_here, lambda: mse(p, X, Y), lambda: jnp.float32(jnp.nan))
            return (p, s), loss

        loss0 = mse(params, X, Y)
        _, losses = jax.lax.scan(step, (params, opt.init(params)),
                                 (jnp.arange(steps), jnp.asarray(is_log)))
        return jnp.concatenate([loss0[None], losses[pick]])

    X, Y = jax.device_put(x), jax.device_put(y)
    todo = run_list(SEEDS * max(1, -(-n_runs // SEEDS)))[:n_runs]
    f32 = np.float32
    if steps not in compiled_by_steps:
        t0 = time.perf_counter()
        compiled = jax.jit(run).lower(f32(1e-3), f32(1e-4), np.uint32(0), X, Y).compile()
        compiled_by_steps[steps] = compiled, time.perf_counter() - t0
    compiled, compile_s = compiled_by_steps[steps]
    jax.device_get(compiled(f32(1e-3), f32(1e-4), np.uint32(0), X, Y))  # warm-up call
    walls = []
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        finals = []
        for lr, wd, seed in todo:
            finals.append(float(jax.device_get(compiled(f32(lr), f32(wd), np.uint32(seed), X,
                                                        Y))[-1]))
        walls.append(time.perf_counter() - t0)
    wall = min(walls)
    return {"runs": n_runs, "steps": steps, "wall_s": wall, "walls_s": walls,
            "compile_s": compile_s, "final_train_loss": finals,
            "run_steps_per_s": n_runs * steps / wall}


# ---- where jaxdyn's time goes: the step alone, jit(vmap) over one micro-batch per device -----
BREAKDOWN = ("step + finite flag", "step", "fixed batch", "fixed batch, SGD",
             "randint + gather")


def bench_breakdown(x, y, micro: int, k_steps: int) -> dict:
    """Run-steps/s of five variants of the step, each a ``fori_loop`` vmapped over ``micro``
    runs per device, on every device at once (sharded along the runs), timed as the
    difference of a loop of 1 + k_steps steps and of 1 step (fastest of 3 each):

    - step + finite flag: randint, gather, grad, optax.adamw, and the flag "the state left
      the finite region" that jaxdyn's fast path keeps every step (an ``abs(x) < inf`` test
      of every leaf of the new state, and-ed; it is what the engine runs);
    - step: the same without the flag;
    - fixed batch: a fixed per-run (64, 32) batch instead of randint + gather;
    - fixed batch, SGD: that with ``p - lr g`` instead of adamw (forward + backward alone);
    - randint + gather: the minibatch draw alone (summed into a bias so that it is kept).
    """
    import jax
    import jax.numpy as jnp
    import optax
    from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

    devs = jax.local_devices()
    nd = len(devs)
    R = micro * nd
    sh = NamedSharding(Mesh(np.array(devs), ("runs",)), P("runs"))
    X, Y = jnp.asarray(x), jnp.asarray(y)

    def finite(tree):  # jaxdyn's check: |x| < inf for every float leaf, and-ed
        return functools.reduce(jnp.logical_and, [
            jnp.all(jnp.abs(v) < float("inf")) for v in jax.tree.leaves(tree)
            if jnp.issubdtype(v.dtype, jnp.inexact)])

    def draw(i, key):
        idx = jax.random.randint(jax.random.fold_in(key, i), (BATCH,), 0, N_DATA)
        return X[idx], Y[idx]

    def adamw_step(st, batch, lr, wd):
        g = jax.grad(mse)(st["params"], *batch)
        u, o = optax.adamw(lr, weight_decay=wd).update(g, st["opt"], st["params"])
        return {"params": optax.apply_updates(st["params"], u), "opt": o}

    def step_flag(i, st, bad, lr, wd, xb, yb, key):
        new = adamw_step(st, draw(i, key), lr, wd)
        return new, bad | ~finite(new)

    def step(i, st, bad, lr, wd, xb, yb, key):
        return adamw_step(st, draw(i, key), lr, wd), bad

    def fixed(i, st, bad, lr, wd, xb, yb, key):
        return adamw_step(st, (xb, yb), lr, wd), bad

    def fixed_sgd(i, st, bad, lr, wd, xb, yb, key):
        g = jax.grad(mse)(st["params"], xb, yb)
        return {**st, "params": jax.tree.map(lambda p, g: p - lr * g, st["params"], g)}, bad

    def gather(i, st, bad, lr, wd, xb, yb, key):
        xg, yg = draw(i, key)
        return st, bad | (xg.sum() + yg.sum() > 1e30)

    def make(body):
        def one(st, lr, wd, xb, yb, key, n):
            return jax.lax.fori_loop(0, n, lambda i, c: body(i, *c, lr, wd, xb, yb, key),
                                     (st, jnp.bool_(False)))
        return jax.jit(jax.vmap(one, in_axes=(0, 0, 0, 0, 0, 0, None)),
                       in_shardings=(sh,) * 6 + (None,), out_shardings=sh)

    keys = jax.random.split(jax.random.PRNGKey(1), R)
    p = jax.vmap(mlp_init)(keys)
    st = {"params": p, "opt": jax.vmap(optax.adamw(1e-3).init)(p)}
    idx = np.random.default_rng(1).integers(0, N_DATA, (R, BATCH))
    args = jax.device_put((st, jnp.full((R,), 1e-3, jnp.float32),
                           jnp.full((R,), 1e-4, jnp.float32), x[idx], y[idx], keys), sh)
    out = {"micro": micro, "devices": nd, "runs": R, "k_steps": k_steps}
    for name, body in zip(BREAKDOWN, (step_flag, step, fixed, fixed_sgd, gather)):
        f = make(body)

        def timed(n, f=f):
            t = time.perf_counter()
            jax.block_until_ready(f(*args, n))
            return time.perf_counter() - t

        timed(1)
        timed(1 + k_steps)
        base = min(timed(1) for _ in range(3))
        long = min(timed(1 + k_steps) for _ in range(3))
        out[name] = R * k_steps / max(long - base, 1e-9)
    return out


# ---- 3. baseline (b): torch.func ensembles ---------------------------------------------------
def torch_mlp(torch):
    from torch import nn

    m = nn.Sequential(nn.Linear(DIMS[0], DIMS[1]), nn.ReLU(), nn.Linear(DIMS[1], DIMS[2]),
                      nn.ReLU(), nn.Linear(DIMS[2], DIMS[3]))
    for layer in m:
        if isinstance(layer, nn.Linear):  # He-normal (fan_in), zero bias: as the JAX init
            nn.init.kaiming_normal_(layer.weight, nonlinearity="relu")
            nn.init.zeros_(layer.bias)
    return m


def bench_b(torch, x, y, runs: int, steps: int, b_steps: int) -> dict:
    """All ``runs`` models at once for ``min(steps, b_steps)`` steps; rate extrapolated to
    ``steps`` from the per-step time plus the timed loss evaluations."""
    import copy

    from torch.func import functional_call, grad, stack_module_state, vmap

    X, Y = torch.from_numpy(x), torch.from_numpy(y)
    todo = run_list(runs)
    seed_of = torch.tensor([s for _, _, s in todo])
    inits = []
    for s in range(SEEDS):  # runs of one seed share their init (as in jaxdyn)
        torch.manual_seed(s)
        inits.append(torch_mlp(torch))
    params, _ = stack_module_state([inits[s] for _, _, s in todo])
    params = {k: v.detach().clone() for k, v in params.items()}
    base = copy.deepcopy(inits[0]).to("meta")
    lr = torch.tensor([r[0] for r in todo], dtype=torch.float32)
    wd = torch.tensor([r[1] for r in todo], dtype=torch.float32)
    m = {k: torch.zeros_like(v) for k, v in params.items()}
    v2 = {k: torch.zeros_like(v) for k, v in params.items()}

    def loss(p, xb, yb):
        return ((functional_call(base, p, (xb,)) - yb) ** 2).mean()

    grads = vmap(grad(loss))
    full_loss = vmap(loss, in_dims=(0, None, None))
    gen = torch.Generator().manual_seed(0)
    n = min(steps, b_steps)
    logged = set(int(s) for s in log_steps(n))

    def evaluate():
        with torch.no_grad():
            return torch.cat([full_loss({k: v[i:i + 32] for k, v in params.items()}, X, Y)
                              for i in range(0, runs, 32)])

    def step(t):  # t = 1, 2, ...
        idx = torch.randint(0, N_DATA, (SEEDS, BATCH), generator=gen)[seed_of]  # (runs, 64)
        g = grads(params, X[idx], Y[idx])
        with torch.no_grad():
            c1, c2 = 1 - B1 ** t, 1 - B2 ** t
            for k, p in params.items():
                shape = (runs,) + (1,) * (p.dim() - 1)
                m[k].mul_(B1).add_(g[k], alpha=1 - B1)
                v2[k].mul_(B2).addcmul_(g[k], g[k], value=1 - B2)
                p.mul_(1 - (lr * wd).view(shape))
                p.sub_((lr / c1).view(shape) * m[k] / (v2[k] / c2).sqrt_().add_(EPS))

    t_eval = 0.0
    t0 = time.perf_counter()
    t = time.perf_counter()
    losses = [evaluate()]
    t_eval += time.perf_counter() - t
    for i in range(1, n + 1):
        step(i)
        if i in logged:
            t = time.perf_counter()
            losses.append(evaluate())
            t_eval += time.perf_counter() - t
    wall_timed = time.perf_counter() - t0
    per_step = (wall_timed - t_eval) / n
    wall = per_step * steps + t_eval  # the same 5 evaluations at any length
    final = losses[-1].numpy()
    return {"runs": runs, "steps": steps, "steps_timed": n, "wall_timed_s": wall_timed,
            "eval_s": t_eval, "wall_s": wall, "extrapolated": n < steps,
            "final_train_loss_median": float(np.median(final)),
            "run_steps_per_s": runs * steps / wall}


# ---- 4. baseline (c): a PyTorch loop per run -------------------------------------------------
def bench_c(torch, x, y, steps: int, n_runs: int, repeats: int = 2) -> dict:
    """``n_runs`` runs one after the other; the fastest of ``repeats`` passes."""
    walls = []
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        finals = _c_runs(torch, x, y, steps, n_runs)
        walls.append(time.perf_counter() - t0)
    wall = min(walls)
    return {"runs": n_runs, "steps": steps, "wall_s": wall, "walls_s": walls,
            "final_train_loss": finals, "run_steps_per_s": n_runs * steps / wall}


def _c_runs(torch, x, y, steps: int, n_runs: int) -> list[float]:
    X, Y = torch.from_numpy(x), torch.from_numpy(y)
    logged = set(int(s) for s in log_steps(steps))
    todo = run_list(SEEDS * max(1, -(-n_runs // SEEDS)))[:n_runs]
    finals = []
    for lr, wd, seed in todo:
        torch.manual_seed(seed)
        model = torch_mlp(torch)
        opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=wd, eps=EPS)
        gen = torch.Generator().manual_seed(seed)
        losses = []
        with torch.no_grad():
            losses.append(float(((model(X) - Y) ** 2).mean()))
        for i in range(1, steps + 1):
            idx = torch.randint(0, N_DATA, (BATCH,), generator=gen)
            loss = ((model(X[idx]) - Y[idx]) ** 2).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if i in logged:
                with torch.no_grad():
                    losses.append(float(((model(X) - Y) ** 2).mean()))
        finals.append(losses[-1])
    return finals


# ---- report ---------------------------------------------------------------------------------
def git_rev() -> str | None:
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True,
                             text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=REPO, capture_output=True, text=True).stdout.strip()
        return rev + (" (working tree modified)" if dirty else "")
    except Exception:  # noqa: BLE001 - no git is not an error
        return None


def load_average():
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def fmt(v: float) -> str:
    return f"{v:.3g}"


def _met(ok: bool) -> str:
    return "met" if ok else "NOT met"


def report(res: dict) -> str:
    cfg, ceil = res["config"], res["ceilings"]
    lines = [
        "# jaxdyn benchmark: a user's own model (MLP 32-128-128-1, adamw, minibatch 64)",
        "",
        f"- date: {res['date']}; total benchmark time {res['total_s'] / 60:.1f} min",
        f"- jax {res['jax_version']} ({res['devices']}), torch {res['torch_version']} "
        f"({res['torch_threads']} threads), python {platform.python_version()}",
        f"- host: {res['host']}; git: {res['git']}"
        + ("" if res["git"] == res["git_at_start"] else
           f" (at start: {res['git_at_start']}: the checkout changed during the run)"),
        f"- host load average (1/5/15 min) at start {res['load_start']}, at end "
        f"{res['load_end']} (other processes share this machine: read the ratios)",
        f"- sweep: lr in [{LR_RANGE[0]}, {LR_RANGE[1]}] x weight_decay in "
        f"[{WD_RANGE[0]}, {WD_RANGE[1]}] (log-spaced) x {SEEDS} seeds, float32, adamw, "
        f"train_loss on all {N_DATA} samples at {LOG_POINTS} steps (every program logs them)",
        f"- model FLOPs: {STEP_FLOPS / 1e6:.2f} MFLOP per training step (3 x forward of "
        f"{BATCH} samples); each logged loss {EVAL_FLOPS / 1e6:.0f} MFLOP",
        f"- matmul ceiling: **{ceil['flop_per_s'] / 1e9:.1f} GFLOP/s** (float32, n = "
        f"{ceil['matmul_n']}, all {res['n_devices']} CPU devices at once, "
        f"`jaxdyn.bench.measure_ceilings`; the higher of its runs at the start and the end: "
        f"{', '.join(f'{v / 1e9:.1f}' for v in res['ceilings_measured'])})",
        "",
        "Run-steps/s (runs x steps / wall s); ratios are jaxdyn end to end (cold, compile "
        "and tuner included) / baseline; (a) without its compile; (b) and (c) compile nothing.",
        "",
        "| runs x steps | jaxdyn e2e (wall s) | jaxdyn steady | 2nd call | (a) scan/run "
        "| (b) torch.func | (c) torch loop | /(a) | /(b) | /(c) | steady % ceiling "
        "(incl. loss evals) | micro |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for case in res["cases"]:
        e, w, r = case["jaxdyn"], case.get("jaxdyn_warm"), case["ratios"]
        a, b, c = case["a"], case["b"], case["c"]
        lines.append(
            f"| {e['runs']} x {e['steps']} | {fmt(e['run_steps_per_s'])} ({e['wall_s']:.1f}) "
            f"| {fmt(e['steady_run_steps_per_s'])} | "
            f"{fmt(w['run_steps_per_s']) if w else '-'} | {fmt(a['run_steps_per_s'])} | "
            f"{fmt(b['run_steps_per_s'])}{'*' if b['extrapolated'] else ''} | "
            f"{fmt(c['run_steps_per_s'])} | **{r['over_a']:.2f}** | **{r['over_b']:.2f}** | "
            f"**{r['over_c']:.2f}** | **{100 * case['steady_ceiling']:.1f} %** "
            f"({100 * case['steady_ceiling_with_evals']:.1f} %) | "
            f"{'/'.join(str(m) for m in e['micro_batch'])} |")
    lines += [
        "",
        "`*` (b) timed over fewer steps, extrapolated (see below). Details per case:",
        "",
    ]
    for case in res["cases"]:
        e, w, a, b, c = (case[k] for k in ("jaxdyn", "jaxdyn_warm", "a", "b", "c"))
        lines.append(
            f"- {e['runs']} x {e['steps']}: jaxdyn wall {e['wall_s']:.1f} s (compile "
            f"{e['compile_s']:.2f} s, tuner {e['tune_s']:.2f} s, Parquet writer busy "
            f"{e['write_s']:.2f} s, {e['chunks']} chunk(s), {e['diverged']} diverged)"
            + (f"; second call {w['wall_s']:.1f} s (compile {w['compile_s']:.2f} s)"
               if w else "")
            + f"; (a) {a['runs']} runs timed, compile {a['compile_s']:.2f} s; (b) "
            f"{b['steps_timed']} steps timed ({b['wall_timed_s']:.1f} s, of which loss "
            f"evaluations {b['eval_s']:.1f} s); (c) {c['runs']} runs timed "
            f"({c['wall_s']:.1f} s); steady / (a) {case['ratios']['steady_over_a']:.2f}, "
            f"/ (b) {case['ratios']['steady_over_b']:.2f}, / (c) "
            f"{case['ratios']['steady_over_c']:.2f}; median final train_loss jaxdyn "
            f"{e['final_train_loss_median']:.4f}, (b) {b['final_train_loss_median']:.4f}"
            f"{' (of its ' + str(b['steps_timed']) + ' steps)' if b['extrapolated'] else ''}"
            f"; load average {case['load_start'][0]} -> {case['load_end'][0]}")
    t = res["targets"]
    lines += [
        "",
        "Targets:",
        "",
        f"- jaxdyn end to end >= {TARGET_A}x (a): "
        + ", ".join(f"{k} **{v:.2f}x**" for k, v in t["over_a"].items())
        + f" ({_met(t['over_a_met'])})",
        f"- jaxdyn steady >= {TARGET_CEIL:.0%} of the matmul ceiling (training FLOPs only): "
        + ", ".join(f"{k} **{100 * v:.1f} %**" for k, v in t["ceiling"].items())
        + f" ({_met(t['ceiling_met'])})",
        f"- ahead of (b) and (c) end to end: ({_met(t['ahead_met'])}); min jaxdyn/(b) "
        f"{min(t['over_b'].values()):.2f}, min jaxdyn/(c) {min(t['over_c'].values()):.2f}",
        "",
        "Where the time goes:",
        "",
    ]
    for case in res["cases"]:
        e, a_rate = case["jaxdyn"], case["a"]["run_steps_per_s"]
        tun = case.get("tuner") or {}
        if not tun:
            continue
        rates = ", ".join(f"{k}: {fmt(r)} ({r / a_rate:.2f}x (a))"
                          for k, r in sorted(tun.get("rates", {}).items(),
                                             key=lambda kv: int(kv[0])))
        lines.append(f"- micro-batch tuner after {e['runs']} x {e['steps']} (tuned "
                     f"{e['tune_s']:.1f} s in this call; runs vmapped together per device: "
                     f"measured run-steps/s of the step loop, both devices at once, and "
                     f"against this case's (a)): {rates or 'not measured'} (stopped: "
                     f"{tun.get('ended')}; temporaries {tun.get('temp_per_run', 0) / 1024:.0f} "
                     f"KiB per run); picked {'/'.join(map(str, e['micro_batch']))}")
    bd = res["breakdown"]
    us = {k: 1e6 / bd[k] * bd["devices"] for k in BREAKDOWN}  # per run-step, one device
    eng = us["step + finite flag"]
    gemm = us["fixed batch, SGD"]
    per_dev_ceil = ceil["flop_per_s"] / bd["devices"]
    lines += [
        f"- the step alone, `jit(vmap)` over {bd['micro']} runs per device (the micro-batch "
        f"picked) on all {bd['devices']} devices at once; run-steps/s (us per run-step on "
        f"one device): " + "; ".join(f"{k} {fmt(bd[k])} ({us[k]:.1f} us)" for k in BREAKDOWN),
        f"- shares of the engine's step ({eng:.1f} us): the per-step finite flag "
        f"~{100 * (eng - us['step']) / eng:.0f} %, randint + gather "
        f"~{100 * (us['step'] - us['fixed batch']) / eng:.0f} % (by difference; "
        f"{100 * us['randint + gather'] / eng:.0f} % timed alone), adamw "
        f"~{100 * (us['fixed batch'] - gemm) / eng:.0f} %, forward + backward (batched GEMMs "
        f"with their bias/ReLU/loss elementwise ops) + SGD ~{100 * gemm / eng:.0f} %",
        f"- forward + backward alone runs at {STEP_FLOPS / (gemm * 1e-6) / 1e9:.1f} GFLOP/s "
        f"per device = {100 * STEP_FLOPS / (gemm * 1e-6) / per_dev_ceil:.0f} % of a device's "
        f"share of the ceiling; the step without the flag at "
        f"{100 * bd['step'] * STEP_FLOPS / ceil['flop_per_s']:.0f} % of the ceiling, with "
        f"it (what the engine runs) "
        f"{100 * bd['step + finite flag'] * STEP_FLOPS / ceil['flop_per_s']:.0f} %",
        "- jaxdyn's own overheads per case are in the details above (compile, tuner, "
        "Parquet); the 5 full-data losses cost 5 x 169 MFLOP per run (21 % on top of the "
        "training FLOPs at 500 steps, 2 % at 5,000), counted in the parenthesised % column",
        "",
        f"Method: (a) {cfg['a_runs']} runs per case (the first runs of the sweep's "
        f"lr-major order), compile excluded, the faster of 2 passes; (b) all runs of the case "
        f"over min(steps, {cfg['b_steps']}) steps, longer cases extrapolated as per-step time "
        f"x steps + the timed evaluations; (c) {cfg['c_runs']} runs per case, all steps, the "
        f"faster of 2 passes; jaxdyn "
        f"steady = runs x steps / (wall - compile_s - tune_s) of the cold call; the second "
        f"call (500-step cases) runs the same sweep into a new folder on the filled cache.",
        "",
    ]
    return "\n".join(lines)


def _log(msg: str) -> None:
    print(f"[bench] {msg} (load {load_average()})", flush=True)


def main(argv=None) -> int:
    args = parse_args(argv)
    # a fresh, empty compilation cache before jaxdyn's first call: every case compiles cold
    cache = tempfile.mkdtemp(prefix="jaxdyn-own-model-cache-")
    os.environ["JAXDYN_CACHE_DIR"] = cache
    t_start = time.perf_counter()
    date = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    load_start = load_average()
    git_start = git_rev()
    x, y = make_data()
    out_root = Path(tempfile.mkdtemp(prefix="jaxdyn-own-model-out-"))
    exp = jaxdyn.supervised(
        "own_mlp", init=lambda key, hp: mlp_init(key),
        loss=lambda params, batch, hp: mse(params, *batch), data=(x, y),
        batch_size=BATCH, lr=1e-3, doc="bench_own_model.py: MLP 32-128-128-1")
    ceil_runs: list[dict] = []
    breakdown = None
    a_compiled: dict[int, tuple] = {}
    cases = []
    # Case by case, each program right after the other (the host's load drifts): jaxdyn
    # cold first (the first call of all is the process's first JAX work, so jaxdyn gives JAX
    # one CPU device per core), then its second call, (a), (b), (c).
    for runs, steps in itertools.product(args.runs, args.steps):
        case: dict = {"load_start": load_average()}
        _log(f"jaxdyn {runs} runs x {steps} steps, cold")
        e = case["jaxdyn"] = bench_jaxdyn(exp, runs, steps, out_root, f"{runs}x{steps}")
        case["tuner"] = next(iter(tuner_table().values()), None)  # as this call left it
        _log(f"  {e['wall_s']:.1f} s, {fmt(e['run_steps_per_s'])} run-steps/s (steady "
             f"{fmt(e['steady_run_steps_per_s'])}), compile {e['compile_s']:.2f} s, tuner "
             f"{e['tune_s']:.2f} s, micro {e['micro_batch']}")
        case["jaxdyn_warm"] = None
        if steps <= args.warm_max_steps:
            _log("  again, into a new folder (compilation cached)")
            w = case["jaxdyn_warm"] = bench_jaxdyn(exp, runs, steps, out_root,
                                                   f"{runs}x{steps}_warm")
            _log(f"  {w['wall_s']:.1f} s, {fmt(w['run_steps_per_s'])} run-steps/s")
        import torch  # after jaxdyn's first call: JAX has started as jaxdyn wants

        torch.set_num_threads(args.torch_threads)
        if not ceil_runs:
            from jaxdyn.bench import measure_ceilings

            _log("matmul ceiling")
            ceil_runs.append(measure_ceilings())
            _log(f"  {ceil_runs[-1]['flop_per_s'] / 1e9:.1f} GFLOP/s")
            micro = next((m for m in e["micro_batch"] if m), 8)
            _log(f"step breakdown, {micro} runs per device")
            breakdown = bench_breakdown(x, y, micro, args.breakdown_steps)
        _log(f"(a) jitted scan per run: {args.a_runs} runs x {steps} steps")
        case["a"] = bench_a(x, y, steps, args.a_runs, a_compiled)
        _log(f"  {fmt(case['a']['run_steps_per_s'])} run-steps/s")
        n = min(steps, args.b_steps)
        _log(f"(b) torch.func ensemble: {runs} runs x {n} steps")
        case["b"] = bench_b(torch, x, y, runs, steps, args.b_steps)
        _log(f"  {fmt(case['b']['run_steps_per_s'])} run-steps/s")
        _log(f"(c) torch loop per run: {args.c_runs} runs x {steps} steps")
        case["c"] = bench_c(torch, x, y, steps, args.c_runs)
        _log(f"  {fmt(case['c']['run_steps_per_s'])} run-steps/s")
        case["load_end"] = load_average()
        cases.append(case)
    from jaxdyn.bench import measure_ceilings

    _log("matmul ceiling again")
    ceil_runs.append(measure_ceilings())
    _log(f"  {ceil_runs[-1]['flop_per_s'] / 1e9:.1f} GFLOP/s")
    ceil = max(ceil_runs, key=lambda c: c["flop_per_s"])  # the higher: the stricter target

    import jax

    targets = {"over_a": {}, "over_b": {}, "over_c": {}, "ceiling": {}}
    for case in cases:
        e, a, b, c = (case[k] for k in ("jaxdyn", "a", "b", "c"))
        rate, steady = e["run_steps_per_s"], e["steady_run_steps_per_s"]
        case["ratios"] = {"over_a": rate / a["run_steps_per_s"],
                          "over_b": rate / b["run_steps_per_s"],
                          "over_c": rate / c["run_steps_per_s"],
                          "steady_over_a": steady / a["run_steps_per_s"],
                          "steady_over_b": steady / b["run_steps_per_s"],
                          "steady_over_c": steady / c["run_steps_per_s"]}
        case["steady_flop_per_s"] = steady * STEP_FLOPS
        case["steady_ceiling"] = steady * STEP_FLOPS / ceil["flop_per_s"]
        n_evals = len(log_steps(e["steps"]))
        case["steady_ceiling_with_evals"] = steady * (
            STEP_FLOPS + n_evals * EVAL_FLOPS / e["steps"]) / ceil["flop_per_s"]
        label = f"{e['runs']}x{e['steps']}"
        for k in ("over_a", "over_b", "over_c"):
            targets[k][label] = case["ratios"][k]
        targets["ceiling"][label] = case["steady_ceiling"]
    targets["over_a_met"] = all(v >= TARGET_A for v in targets["over_a"].values())
    targets["ceiling_met"] = all(v >= TARGET_CEIL for v in targets["ceiling"].values())
    targets["ahead_met"] = all(v > 1 for k in ("over_b", "over_c")
                               for v in targets[k].values())
    res = {
        "date": date,
        "jax_version": jax.__version__,
        "torch_version": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "devices": str(jax.devices()),
        "n_devices": len(jax.local_devices()),
        "host": f"{platform.node()} ({platform.machine()}, {os.cpu_count()} CPUs)",
        "git": git_rev(),
        "git_at_start": git_start,
        "load_start": load_start,
        "load_end": load_average(),
        "config": {k: v for k, v in vars(args).items() if k != "out"},
        "flops": {"forward_per_sample": FWD_FLOPS, "train_step": STEP_FLOPS,
                  "loss_eval": EVAL_FLOPS},
        "ceilings": ceil,
        "ceilings_measured": [c["flop_per_s"] for c in ceil_runs],
        "cases": cases,
        "micro_picked": sorted({m for c in cases for m in c["jaxdyn"]["micro_batch"]}),
        "breakdown": breakdown,
        "targets": targets,
    }
    res["total_s"] = time.perf_counter() - t_start
    md = report(res)
    print()
    print(md)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{NAME}.md").write_text(md)
    (out / f"{NAME}.json").write_text(json.dumps(res, indent=2, default=str) + "\n")
    print(f"[bench] wrote {out / (NAME + '.md')} and {out / (NAME + '.json')}")
    shutil.rmtree(out_root, ignore_errors=True)
    shutil.rmtree(cache, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
