"""``jaxdyn bench``: how fast the engine runs each experiment family on this device, against
the device's own measured limits and against hand-written baselines, all in one process.

For every available family the suite runs a small and a large sweep end to end through the
real engine (a sweep file parsed by ``jaxdyn.spec``, a ``SweepStore`` in a temporary folder,
``engine.run_sweep``: compile, compute and Parquet writing) and reports

- run·steps/s end to end (runs × steps / wall seconds of ``run_sweep``) and compile time;
- steady state: one more execution of the compiled chunk program after the sweep (compile
  excluded), as seconds per chunk step and run·steps/s;
- achieved FLOP/s and bytes/s: XLA's cost analysis counts a while loop's body ONCE, whatever
  its trip count (checked by the command itself on a fori_loop of 1 and 64 steps; see
  ``loop_accounting_check``), so the chunk program's own figure is meaningless for a loop of
  thousands of steps. The per-chunk cost is therefore built from loop-free programs compiled
  at the chunk's batch, exactly the pieces the engine's loop runs:
  ``once (make_data + init) + steps × step (the step, the finiteness check and the freeze)
  + (log points + 1) × measure``, each from ``compiled.cost_analysis()``;
- device ceilings measured in the same process: a large float32 matmul (FLOP/s) and a
  large float32 array copy ``x + 1`` (bytes/s, read + write), both at default precision;
- memory: XLA's memory analysis of the compiled chunk program, the device's peak bytes in use
  where the backend reports it, and the host's peak RSS during the case (VmHWM, reset per
  case through /proc/self/clear_refs where Linux allows).

Baselines for the mean model, same math and steps: a per-run Python loop around a jitted
step, a per-run jitted ``lax.scan``, a hand-written ``jit(vmap)`` kernel (each parameter its
own ``(runs,)`` leaf, no freezing, no Parquet). Optional, when ``import torch`` works: PyTorch
per-run loops and ``torch.func.vmap`` ensembles of the mean model, the DC neuron and the
bottleneck network.

No device-specific code path: it runs unchanged on CPU, GPU or TPU.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import math
import os
import platform
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from jaxdyn.launch import version

#: Families benchmarked, in this order (each when its module imports and defines it).
FAMILIES = ("eos.mean_model", "eos.single_neuron", "eos.threshold_relu", "dc.neuron",
            "relu.teacher_student", "bottleneck.three_layer")
SUITE_NAMES = ("quick", "full")  # "tiny" exists too, for the tests (hidden from --help)

# ---- suites ----------------------------------------------------------------------------------
# Per family and suite: steps, log interval, (small runs, large runs) and the fixed
# hyperparameters. Runs vary along one dynamic axis (lr, or replicate for the bottleneck) times
# seeds; every case is one static group (one compiled program).
_SIZES = {  # family: (tiny, quick, full), each (steps, log every, small runs, large runs)
    "eos.mean_model": ((40, 10, 8, 64), (2000, 100, 1024, 32768),
                       (10000, 100, 4096, 65536)),
    "eos.single_neuron": ((40, 10, 8, 64), (2000, 100, 1024, 32768),
                          (10000, 100, 4096, 65536)),
    "eos.threshold_relu": ((20, 10, 8, 16), (200, 20, 32, 256), (1000, 50, 64, 1024)),
    "dc.neuron": ((22, 11, 8, 16), (1100, 110, 256, 4096), (16500, 1100, 1024, 8192)),
    "relu.teacher_student": ((40, 10, 8, 16), (2000, 100, 1024, 16384),
                             (10000, 500, 4096, 65536)),
    "bottleneck.three_layer": ((20, 10, 8, 16), (200, 50, 16, 128), (2000, 200, 64, 512)),
}
_SUITE_INDEX = {"tiny": 0, "quick": 1, "full": 2}


def _fixed(family: str, suite: str) -> dict:
    """Fixed hyperparameters of a family's cases (small, laptop-sized versions of the sweeps)."""
    big = suite == "full"
    if family == "eos.mean_model":
        return {"d": 100, "init_scale": 0.01}
    if family == "eos.single_neuron":
        return {"x0": 0.3, "y0": 3.0, "perturb": 0.01, "link": "logcosh"}
    if family == "eos.threshold_relu":
        n = 1000 if big else (50 if suite == "tiny" else 200)
        return {"d": 200 if suite != "tiny" else 20, "n_train": n, "n_test": n, "lam": 5.0,
                "init_scale": 0.01}
    if family == "dc.neuron":
        return {"loss": "nll", "m": 1000 if suite != "tiny" else 100, "batch": 75 if
                suite != "tiny" else 10, "p_d": 0.5, "d": 0.0, "sep": 2.0}
    if family == "relu.teacher_student":
        return {"n": 2, "d": 10, "mode": "population", "init_scale": 0.01}
    if family == "bottleneck.three_layer":
        # width 1000 as in the thesis; n_val = n_eval = 64 = one evaluation block (so the
        # measure program is loop-free and its cost analysis exact)
        return {"width": 1000 if suite != "tiny" else 64, "d": 10, "k": 1,
                "n_train": 10000 if big else (256 if suite == "tiny" else 2048),
                "n_val": 64, "n_eval": 64, "batch": 32, "nu": 0.5}
    raise KeyError(family)


def _axis(family: str, runs: int, seeds: int) -> dict:
    """The grid of a case: one dynamic axis with runs // seeds points."""
    num = max(1, runs // seeds)
    if family == "eos.mean_model":
        return {"lr": {"start": 2.5e-4, "stop": 2.5e-2, "num": num, "spacing": "log"}}
    if family == "eos.single_neuron":
        return {"lr": {"start": 0.02, "stop": 0.25, "num": num, "spacing": "log"}}
    if family == "eos.threshold_relu":
        return {"lr": {"start": 1e-5, "stop": 1e-2, "num": num, "spacing": "log"}}
    if family == "dc.neuron":
        return {"r": {"start": 0.5, "stop": 8.0, "num": num}}
    if family == "relu.teacher_student":
        return {"lr": {"start": 0.05, "stop": 1.0, "num": num, "spacing": "log"}}
    if family == "bottleneck.three_layer":
        return {"replicate": list(range(num))}
    raise KeyError(family)


def _seeds(exp) -> int:
    # families with make_data: one seed, so that chunks (which never span seeds there) are
    # as large as the run count allows and share their data (the intended layout)
    return 1 if exp.make_data is not None else 4


def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, float):
        return repr(v)
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{k} = {_toml_value(x)}" for k, x in v.items()) + " }"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    return str(v)


@dataclass
class Case:
    family: str
    size: str
    runs: int
    steps: int
    log_every: int
    toml: str


def sweep_toml(name: str, family: str, steps: int, log_every: int, seeds: int, fixed: dict,
               grid: dict) -> str:
    lines = [f'name = "{name}"', f'experiment = "{family}"',
             'description = "jaxdyn bench case"', f"steps = {steps}", f"seeds = {seeds}",
             f"log = {{ every = {log_every} }}", 'precision = "float32"', "", "[fixed]"]
    lines += [f"{k} = {_toml_value(v)}" for k, v in fixed.items()]
    lines += ["", "[grid]"] + [f"{k} = {_toml_value(v)}" for k, v in grid.items()]
    return "\n".join(lines) + "\n"


def make_cases(suite: str, only: list[str] | None = None) -> tuple[list[Case], dict]:
    """The suite's cases for the families that import; ``skipped``: family -> why not."""
    from jaxdyn import experiments, spec

    idx = _SUITE_INDEX[suite]
    cases, skipped = [], {}
    families = FAMILIES if suite != "tiny" else ("eos.mean_model",)
    for fam in families:
        if only and fam not in only:
            continue
        try:
            exp = experiments.get(fam)  # imports the module; fails while it is being written
        except KeyError:
            skipped[fam] = "not in the experiment registry (module absent)"
            continue
        except Exception as e:  # noqa: BLE001 - a broken module is skipped, with its error
            skipped[fam] = f"module does not import: {type(e).__name__}: {e}"
            continue
        steps, every, small, large = _SIZES[fam][idx]
        seeds = _seeds(exp)
        mine = []
        for size, runs in (("small", small), ("large", large)):
            runs = max(seeds, runs // seeds * seeds)
            name = f"bench_{fam.replace('.', '_')}_{size}"
            text = sweep_toml(name, fam, steps, every, seeds, _fixed(fam, suite),
                              _axis(fam, runs, seeds))
            try:
                spec.parse(text, experiments.params_of)
            except Exception as e:  # noqa: BLE001 - e.g. a hyperparameter renamed by its author
                skipped[fam] = f"its bench sweep does not validate: {e}"
                mine = []
                break
            mine.append(Case(fam, size, runs, steps, every, text))
        cases += mine
    return cases, skipped


# ---- small helpers ---------------------------------------------------------------------------
def _cost(compiled) -> dict:
    """``compiled.cost_analysis()`` as one dict (older jax returns a list of one)."""
    try:
        ca = compiled.cost_analysis()
    except Exception:  # noqa: BLE001 - backends without the analysis
        return {}
    if isinstance(ca, (list, tuple)):
        ca = ca[0] if ca else {}
    return dict(ca or {})


def _has_while(compiled) -> bool:
    """Whether a compiled (HLO) or lowered (StableHLO) program contains a while loop."""
    try:
        text = compiled.as_text()
        return " while(" in text or "stablehlo.while" in text
    except Exception:  # noqa: BLE001
        return False


def _block(x):
    import jax

    return jax.block_until_ready(x)


def _best_time(fn, reps: int, min_total: float = 0.0) -> float:
    """Fastest of ``reps`` timed calls of ``fn`` (which must block), more if they are short."""
    times = []
    t_all = time.perf_counter()
    while len(times) < reps or (time.perf_counter() - t_all < min_total and len(times) < 50):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def _proc_status_kb(key: str) -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return float(line.split()[1]) * 1024.0
    except OSError:
        pass
    return float("nan")


def _reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark (Linux: '5' to /proc/self/clear_refs)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _device_peak_bytes() -> float:
    import jax

    peaks = []
    for d in jax.local_devices():
        try:
            st = d.memory_stats()
        except Exception:  # noqa: BLE001
            st = None
        if st and "peak_bytes_in_use" in st:
            peaks.append(float(st["peak_bytes_in_use"]))
    return max(peaks) if peaks else float("nan")


def _load() -> list | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def _device_memory() -> float:
    from jaxdyn import engine

    import jax

    return engine.device_memory_bytes(jax.local_devices()[0])


# ---- device ceilings -------------------------------------------------------------------------
def every_device_sharding():
    """Axis 0 of an array split over all local devices, one slice each."""
    import jax
    from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

    return NamedSharding(Mesh(np.array(jax.local_devices()), ("d",)), P("d"))


def on_every_device(fn, **jit_kw):
    """``fn`` run by every local device at once on its own slice (axis 0, one row per
    device) of its argument: ``(n_devices, ...) -> (n_devices, ...)``."""
    import jax

    sh = every_device_sharding()
    return jax.jit(jax.shard_map(fn, mesh=sh.mesh, in_specs=sh.spec, out_specs=sh.spec),
                   **jit_kw)


def measure_ceilings(max_n: int = 16384, min_copy_bytes: float = 2.0 ** 28,
                     min_total: float = 0.2) -> dict:
    """Float32 ceilings of all local devices together, each running its own copy at the same
    time (as the engine's chunks do): the best matmul FLOP/s over doubling sizes n (until one
    product takes > 0.1 s or the matrices would use 1/8 of the memory), and the copy
    bandwidth of ``x + 1`` on arrays of >= 256 MiB per device (bigger than any cache), read
    + write. The copy donates its input (``x = f(x)`` in place): a fresh output buffer every
    call would time the operating system's page faults, not the memory.

    All devices at once, not one device times the count: XLA's CPU client runs one large
    matmul on every core, so one CPU device alone already reaches the whole machine's FLOP/s
    (measured here: 189 GFLOP/s for one of 2 CPU devices alone, 175 for both at once)."""
    import jax
    import jax.numpy as jnp

    nd = len(jax.local_devices())
    sh = every_device_sharding()
    mem = _device_memory()
    mm = on_every_device(lambda ab: (ab[0, 0] @ ab[0, 1])[None])
    n, best, best_n, rows = 256, 0.0, 0, []
    key = jax.random.PRNGKey(0)
    while True:
        ab = jax.device_put(jax.random.normal(key, (nd, 2, n, n), jnp.float32), sh)
        _block(mm(ab))  # compile + warm up
        t = _best_time(lambda: _block(mm(ab)), 3, min_total=min_total)
        rate = nd * 2.0 * n ** 3 / t
        rows.append({"n": n, "seconds": t, "flop_per_s": rate})
        if rate > best:
            best, best_n = rate, n
        del ab
        if t > 0.1 or 2 * n >= max_n + 1 or 4 * (2 * n) ** 2 * 4 > mem / 8:
            break
        n *= 2
    cp = on_every_device(lambda x: x + 1.0, donate_argnums=0)
    size = int(min_copy_bytes // 4)
    bw, bw_bytes = 0.0, 0
    while True:
        box = [jax.device_put(jnp.zeros((nd, size), jnp.float32), sh)]

        def copy():
            box[0] = _block(cp(box[0]))

        copy()
        t = _best_time(copy, 3, min_total=min_total)
        moved = nd * 2.0 * 4 * size
        if moved / t > bw:
            bw, bw_bytes = moved / t, 4 * size
        del box
        if t > 0.02 or 3 * 4 * (4 * size) > mem / 8 or size >= 2 ** 30:
            break
        size *= 4
    return {"flop_per_s": best, "matmul_n": best_n, "matmul_sizes": rows,
            "bytes_per_s": bw, "copy_array_bytes": bw_bytes,
            "how": f"best float32 matmul over n = 256, 512, ... (best at n = {best_n}, "
                   f"default precision, 2n^3 FLOP) and best float32 x + 1 in place (input "
                   f"donated) over a {bw_bytes / 2 ** 20:.0f} MiB array per device (8 bytes "
                   f"per element moved), each the fastest of >= 3 repeats, on all {nd} "
                   f"device(s) at once (the figures are their total)"}


def loop_accounting_check() -> dict:
    """What XLA's cost analysis counts for loops, on this backend: flops of a fori_loop of
    T steps (T = 1 and 64, a dynamic trip count like the engine's) of a 64×64 matmul, and of
    the same 4 steps unrolled in Python. ``per_trip`` = 1 would mean trip counts are used."""
    import jax
    import jax.numpy as jnp

    x = jax.ShapeDtypeStruct((64, 64), jnp.float32)
    t_ = jax.ShapeDtypeStruct((), jnp.int32)
    loop = jax.jit(lambda a, m, T: jax.lax.fori_loop(0, T, lambda i, y: y @ m, a))
    flops_loop = _cost(loop.lower(x, x, t_).compile()).get("flops", float("nan"))

    def unrolled(a, m, T):
        for _ in range(T):
            a = a @ m
        return a

    f1 = _cost(jax.jit(lambda a, m: unrolled(a, m, 1)).lower(x, x).compile()).get("flops")
    f4 = _cost(jax.jit(lambda a, m: unrolled(a, m, 4)).lower(x, x).compile()).get("flops")
    one = 2.0 * 64 ** 3
    return {"matmul_flops": one, "fori_loop_any_trip_count_flops": flops_loop,
            "unrolled_1_flops": f1, "unrolled_4_flops": f4,
            "while_body_counted_once": bool(abs(flops_loop - one) < 0.1 * one)}


# ---- the per-chunk cost model ----------------------------------------------------------------
def chunk_cost(exp, static: dict, batch: int, n_measures: int, steps: int,
               bound: float | None = None) -> dict:
    """FLOPs and bytes of one chunk of ``batch`` runs, from XLA's cost analysis of three
    loop-free programs at that batch (the engine's loop body and its two other pieces):

    - ``once``: make_data (shared, unbatched) + the runs' keys and init (XLA's estimate
      before optimisation: it runs once per chunk);
    - ``step``: one step of every run with the engine's finiteness check and freeze;
    - ``measure``: the metrics of every run (NaN where frozen).

    total = once + steps × step + n_measures × measure. ``loops`` lists pieces that still
    contain a while loop (their cost is then a lower bound: XLA counts the body once).
    """
    import jax
    import jax.numpy as jnp

    from jaxdyn import engine

    dt = static["dtype"]
    bound = float("inf") if bound is None else float(bound)
    all_finite = getattr(engine, "_all_finite", None)
    freeze = getattr(engine, "_freeze", None)
    if all_finite is None:  # the engine's helpers, should they be renamed
        def all_finite(tree, bound=float("inf")):
            leaves = [jnp.all(jnp.abs(x) < bound) for x in jax.tree.leaves(tree)
                      if jnp.issubdtype(jnp.asarray(x).dtype, jnp.inexact)]
            return jnp.all(jnp.stack(leaves)) if leaves else jnp.bool_(True)
    if freeze is None:
        def freeze(ok, new, old):
            return jax.tree.map(lambda a, b: jnp.where(ok, a, b), new, old)

    S = jax.ShapeDtypeStruct
    hp = {k: S((batch,), dt) for k in exp.dynamic_names}
    seeds = S((batch,), jnp.uint32)
    shared = exp.make_data is not None

    def once(hp, seeds, data_seed):
        data = None
        if shared:
            data = exp.make_data(jax.random.fold_in(jax.random.PRNGKey(data_seed), 2), static)

        def one(h, seed):
            key = jax.random.PRNGKey(seed)
            st = exp.init(jax.random.fold_in(key, 0), static, h, data)
            return st, all_finite(st, bound), jax.random.fold_in(key, 1)

        return jax.vmap(one)(hp, seeds), data

    (state, alive, k_step), data = jax.eval_shape(once, hp, seeds, S((), jnp.uint32))

    def step(state, alive, dstep, k_step, hp, data, i):
        def one(st, al, ds, ks, h):
            new = exp.step(st, jax.random.fold_in(ks, i), static, h, data)
            ok = al & all_finite(new, bound)
            return freeze(ok, new, st), ok, jnp.where(al & ~ok, i + 1, ds)

        return jax.vmap(one)(state, alive, dstep, k_step, hp)

    def measure(state, alive, hp, data):
        def one(st, al, h):
            m = exp.measure(st, static, h, data)
            return {k: jnp.where(al, v, jnp.nan) for k, v in m.items()}

        return jax.vmap(one)(state, alive, hp)

    dstep = S((batch,), jnp.int64)
    i = S((), jnp.int64)
    # ``once`` runs one time per chunk (negligible against steps × step): XLA's estimate of
    # the unoptimised program is enough, and saves a compilation
    progs = {
        "once": jax.jit(once).lower(hp, seeds, S((), jnp.uint32)),
        "step": jax.jit(step).lower(state, alive, dstep, k_step, hp, data, i).compile(),
        "measure": jax.jit(measure).lower(state, alive, hp, data).compile(),
    }
    # A while loop left in a piece (e.g. CPU's rolled threefry rounds of a jax.random call,
    # a lax.map) is counted once by XLA: that piece's figure is then a lower bound.
    out = {"loops": [k for k, c in progs.items() if _has_while(c)]}
    mult = {"once": 1, "step": steps, "measure": n_measures}
    for what, key in (("flops", "flops"), ("bytes", "bytes accessed"),
                      ("transcendentals", "transcendentals")):
        per = {k: float(_cost(c).get(key, 0.0)) for k, c in progs.items()}
        for k, v in per.items():
            out[f"{what}_{k}"] = v
        out[f"{what}_chunk"] = sum(mult[k] * per[k] for k in per)
    return out


def _cost_note(cost: dict) -> str:
    loops = cost["loops"]
    if not loops:
        return "exact: loop-free pieces"
    tail = ("; once runs one time per chunk: negligible" if "once" in loops else "")
    if {"step", "measure"} & set(loops):
        return "lower bound: a while loop inside " + ", ".join(loops) + tail
    return "while loop only inside once (counted once; runs once per chunk)"


# ---- running one engine case -----------------------------------------------------------------
def run_engine_case(case: Case, root: Path, ceil: dict) -> dict:
    from jaxdyn import engine, experiments, spec
    from jaxdyn.store import SweepStore

    sw = spec.parse(case.toml, experiments.params_of)
    exp = experiments.get(sw.experiment)
    store = SweepStore(root, sw.name)
    store.open(sw)
    walls = []

    def progress(event, **kw):
        if event == "chunk":
            walls.append(kw["wall"])

    _reset_peak_rss()
    try:
        t0 = time.perf_counter()
        summary = engine.run_sweep(sw, exp, store, progress=progress)
        wall = time.perf_counter() - t0
        runners = summary["runners"]  # to reach their compiled programs
    finally:
        store.close()
    rss_peak = _proc_status_kb("VmHWM")
    used = [r for r in runners if getattr(r, "batch", None)] or runners
    if len(used) != 1:
        raise RuntimeError(f"bench case {case.family}/{case.size}: expected one compiled "
                           f"group, got {len(used)}")
    runner = used[0]
    batch = int(runner.batch or runner.padded(len(runner.group.runs)))
    compiled = runner.compiled(batch)  # already compiled by the sweep: no new compile

    # steady state: the compiled chunk program once more, on the group's first chunk (more
    # times if short), or the fastest chunk of the sweep after its first, if faster (every
    # chunk runs the same program at the same padded batch)
    chunk = runner.group.runs[:batch]
    first = time.perf_counter()
    _block(runner(chunk))
    first = time.perf_counter() - first
    steady = first if first > 1.0 else min(first, _best_time(lambda: _block(runner(chunk)), 2))
    steady = min([steady] + walls[1:])
    n_chunk = len(chunk)  # real runs of a full chunk (padding runs are wasted work)

    n_logs = len(runner.log_steps)
    cost = chunk_cost(exp, runner.static, batch, n_logs + 1, sw.steps, sw.diverge_above)
    raw = _cost(compiled)
    ma = None
    with contextlib.suppress(Exception):
        ma = compiled.memory_analysis()

    def mget(name):
        return float(getattr(ma, name, float("nan"))) if ma is not None else float("nan")

    xla_peak = getattr(ma, "peak_memory_in_bytes", None) if ma is not None else None
    if not xla_peak:
        xla_peak = (mget("argument_size_in_bytes") + mget("output_size_in_bytes")
                    + mget("temp_size_in_bytes") - mget("alias_size_in_bytes"))
    flops_s = cost["flops_chunk"] / steady
    bytes_s = cost["bytes_chunk"] / steady
    runs = summary["runs_run"]
    return {
        "kind": "engine", "experiment": case.family, "case": case.size, "impl": "jaxdyn engine",
        "runs": runs, "steps": sw.steps, "log_points": n_logs, "chunks": summary["chunks"],
        "batch": batch, "wall_s": wall, "compile_s": float(summary["compile_s"]),
        "run_steps_per_s": runs * sw.steps / wall,
        "chunk_compute_s": float(sum(walls)),
        "steady_chunk_s": steady, "steady_s_per_step": steady / sw.steps,
        "steady_run_steps_per_s": n_chunk * sw.steps / steady,
        "flops_per_chunk": cost["flops_chunk"], "bytes_per_chunk": cost["bytes_chunk"],
        "transcendentals_per_chunk": cost["transcendentals_chunk"],
        "flops_per_run_step": cost["flops_step"] / batch,
        "bytes_per_run_step": cost["bytes_step"] / batch,
        "flop_per_s": flops_s, "bytes_per_s": bytes_s,
        "flop_ceiling": ceil["flop_per_s"], "bytes_ceiling": ceil["bytes_per_s"],
        "flop_frac": flops_s / ceil["flop_per_s"],
        "bytes_frac": bytes_s / ceil["bytes_per_s"],
        "cost_lower_bound": bool({"step", "measure"} & set(cost["loops"])),
        "cost_note": _cost_note(cost),
        "xla_raw_flops": float(raw.get("flops", float("nan"))),
        "xla_arg_bytes": mget("argument_size_in_bytes"),
        "xla_out_bytes": mget("output_size_in_bytes"),
        "xla_temp_bytes": mget("temp_size_in_bytes"),
        "xla_peak_bytes": float(xla_peak),
        "device_peak_bytes": _device_peak_bytes(),
        "host_peak_rss_bytes": rss_peak,
        "diverged": int(summary.get("diverged", 0)),
    }


# ---- mean-model baselines (same math as eos.mean_model) ---------------------------------------
LR_START, LR_STOP = 2.5e-4, 2.5e-2


def _mm_pieces(d: int, init_scale: float):
    import jax
    import jax.numpy as jnp

    from jaxdyn.experiments.eos import _mm_measure, mean_model_grad

    f32 = jnp.float32
    d32, s32 = jnp.asarray(d, f32), jnp.asarray(init_scale, f32)

    def init(seed):  # the engine's initialisation: PRNGKey(seed) folded with 0, split
        k1, k2 = jax.random.split(jax.random.fold_in(jax.random.PRNGKey(seed), 0))
        return {"a_minus": s32 * jax.random.normal(k1, (), f32),
                "a_plus": s32 * jax.random.normal(k2, (), f32), "b": jnp.zeros((), f32)}

    def step(p, lr):
        g = mean_model_grad(p, d32)  # the engine's own gradient: same math
        return {k: p[k] - lr * g[k] for k in p}

    def measure(p, lr):
        """The engine's seven metrics (loss, b, a_sum, a−, a+, sharpness, η·sharpness/2),
        by the same closed forms: the baselines log what a sweep logs."""
        return tuple(_mm_measure({"params": p}, None, {"d": d32, "lr": lr}, None).values())

    def run(lr, seed, steps: int, log_every: int):
        """One run: scan over log segments of a fori_loop; logs at 0, every, ..., steps."""
        lr = jnp.asarray(lr, f32)
        p0 = init(seed)
        n_seg, rem = divmod(steps, log_every)

        def segment(p, _):
            p = jax.lax.fori_loop(0, log_every, lambda i, q: step(q, lr), p)
            return p, measure(p, lr)

        p, logs = jax.lax.scan(segment, p0, None, length=n_seg)
        logs = tuple(jnp.concatenate([f[None], l]) for f, l in zip(measure(p0, lr), logs))
        if rem:
            p = jax.lax.fori_loop(0, rem, lambda i, q: step(q, lr), p)
            logs = tuple(jnp.concatenate([l, m[None]]) for l, m in zip(logs, measure(p, lr)))
        return logs

    return init, step, measure, run


def _lrs(n: int) -> np.ndarray:
    return np.geomspace(LR_START, LR_STOP, max(n, 1)).astype(np.float32)


def baseline_python_loop(runs: int, steps: int, log_every: int, d: int = 100,
                         init_scale: float = 0.01) -> dict:
    """(a) a Python loop per run around a jitted step; logs to the host every log_every."""
    import jax

    init, step, measure, _ = _mm_pieces(d, init_scale)
    jstep, jmeasure, jinit = jax.jit(step), jax.jit(measure), jax.jit(init)
    lrs = _lrs(runs)

    def one_run(lr, seed, n):
        p = jinit(np.uint32(seed))
        log = [jax.device_get(jmeasure(p, lr))]  # one transfer per log point
        for i in range(1, n + 1):
            p = jstep(p, lr)
            if i % log_every == 0 or i == n:
                log.append(jax.device_get(jmeasure(p, lr)))
        return log

    one_run(lrs[0], 0, min(steps, 2 * log_every))  # compile everything
    t = time.perf_counter()
    for r in range(runs):
        one_run(np.float32(lrs[r]), r, steps)
    wall = time.perf_counter() - t
    return {"impl": "per-run Python loop around a jitted step", "runs": runs, "steps": steps,
            "wall_s": wall, "compile_s": float("nan"), "run_steps_per_s": runs * steps / wall}


def baseline_scan_per_run(runs: int, steps: int, log_every: int, d: int = 100,
                          init_scale: float = 0.01) -> dict:
    """(b) one jitted lax.scan (of fori_loops) per run, one run per call."""
    import jax

    *_, run = _mm_pieces(d, init_scale)
    jrun = jax.jit(lambda lr, seed: run(lr, seed, steps, log_every))
    lrs = _lrs(runs)
    t = time.perf_counter()
    _block(jrun(lrs[0], np.uint32(0)))
    comp = time.perf_counter() - t

    def all_runs():
        for r in range(runs):
            jax.device_get(jrun(lrs[r], np.uint32(r)))

    wall = _best_time(all_runs, 1, min_total=0.0)
    return {"impl": "per-run jitted lax.scan, one run per call", "runs": runs, "steps": steps,
            "wall_s": wall, "compile_s": comp, "run_steps_per_s": runs * steps / wall}


def baseline_hand_kernel(runs: int, steps: int, log_every: int, seeds: int = 4, d: int = 100,
                         init_scale: float = 0.01, chunk: int | None = None) -> dict:
    """(c) hand-written jit(vmap) over all runs, each parameter its own (runs,) leaf, no
    freezing, no Parquet: the device-limit reference. Compile timed separately. With
    ``chunk``: the runs in consecutive calls of ``chunk`` runs (the engine's batch), which
    can be faster than one call when a chunk's state stays in cache."""
    import jax

    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    *_, run = _mm_pieces(d, init_scale)
    # sharded over every local device along the run axis, as the engine's chunks are
    devs = jax.local_devices()
    sh = NamedSharding(Mesh(np.array(devs), ("runs",)), PartitionSpec("runs"))
    kernel = jax.jit(jax.vmap(lambda lr, seed: run(lr, seed, steps, log_every)),
                     in_shardings=(sh, sh), out_shardings=sh)
    seeds_n = max(1, min(seeds, runs))
    lrs = np.repeat(_lrs(runs // seeds_n), seeds_n)
    sd = np.tile(np.arange(seeds_n, dtype=np.uint32), runs // seeds_n)
    n = len(lrs) - len(lrs) % len(devs)
    size = min(chunk or n, n)
    size -= size % len(devs)
    parts = [(jax.device_put(lrs[i:i + size], sh), jax.device_put(sd[i:i + size], sh))
             for i in range(0, n - size + 1, size)]  # whole chunks only
    t = time.perf_counter()
    compiled = kernel.lower(*parts[0]).compile()
    comp = time.perf_counter() - t

    def all_chunks():
        for a, b in parts:
            jax.device_get(compiled(a, b))

    first = time.perf_counter()
    all_chunks()
    first = time.perf_counter() - first
    wall = first if first > 1.0 else min(first, _best_time(all_chunks, 2))
    n = size * len(parts)
    how = "one call of all runs" if size == len(lrs) else f"{len(parts)} calls of {size} runs"
    return {"impl": f"hand-written jit(vmap) kernel, {how} (steady, logs to host)",
            "runs": n, "steps": steps, "wall_s": wall, "compile_s": comp,
            "run_steps_per_s": n * steps / wall}


# ---- optional PyTorch baselines ---------------------------------------------------------------
def _torch():
    try:
        import torch  # noqa: F401
        import torch.func  # noqa: F401
    except Exception as e:  # noqa: BLE001 - optional: any failure means "skip"
        return None, f"{type(e).__name__}: {e}"
    return torch, ""


def torch_baselines(torch, suite_sizes: dict, time_cap: float = 6.0) -> tuple[list, list]:
    """PyTorch per-run loops (autograd + torch.optim.SGD, how most research code runs) and
    torch.func.vmap ensembles (functional grad of the same loss vmapped over runs, one
    Python-level step loop) for the mean model, the DC neuron and the bottleneck network,
    float32 on CUDA if torch sees it, else the CPU. Each is timed after a warm-up and
    stops at ``time_cap`` seconds (per-run loops after a whole run, ensembles after a step):
    its row says how many runs × steps it did; its per-step cost is flat after warm-up."""
    rows, notes = [], []
    f32 = torch.float32
    dev = torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
    torch.manual_seed(0)

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize()

    def timed(fn, steps):
        """fn(steps, deadline) -> (runs, steps per run) done; returns those and the wall."""
        # warm-up for up to 2 s (one run of a per-run loop): torch's first vmap(grad) calls
        # are tens of times slower than its steady state (measured: 150 ms vs 5 ms a step)
        fn(steps, time.perf_counter() + min(2.0, time_cap / 3))
        sync()
        t = time.perf_counter()
        runs, done = fn(steps, t + time_cap)
        sync()
        return runs, done, time.perf_counter() - t

    def stop(deadline):
        if time.perf_counter() > deadline:
            sync()
            return time.perf_counter() > deadline
        return False

    # -- mean model: loss l_sym(d (a- + a+) g(b))
    def l_sym(s):
        return 0.5 * (torch.nn.functional.softplus(-s) + torch.nn.functional.softplus(s))

    def g_b(b):
        return b * 0.5 * (1 + torch.erf(b / math.sqrt(2))) + torch.exp(-0.5 * b * b) / math.sqrt(
            2 * math.pi)

    def mm_loss(am, ap, b, d):
        return l_sym(d * (am + ap) * g_b(b))

    if "eos.mean_model" in suite_sizes:
        steps, loop_runs, vm_runs = suite_sizes["eos.mean_model"]
        lrs = _lrs(vm_runs)

        def loop(steps, deadline):
            for r in range(loop_runs):
                if r and stop(deadline):
                    return r, steps
                p = [(0.01 * torch.randn((), dtype=f32, device=dev)).requires_grad_(),
                     (0.01 * torch.randn((), dtype=f32, device=dev)).requires_grad_(),
                     torch.zeros((), dtype=f32, device=dev, requires_grad=True)]
                opt = torch.optim.SGD(p, lr=float(lrs[r]))
                for _ in range(steps):
                    opt.zero_grad()
                    mm_loss(*p, 100.0).backward()
                    opt.step()
            return loop_runs, steps

        n_r, n_s, w = timed(loop, steps)
        rows.append(("eos.mean_model", "torch per-run loop (autograd + optim.SGD)", n_r, n_s,
                     w))
        grad = torch.func.vmap(torch.func.grad(mm_loss, argnums=(0, 1, 2)),
                               in_dims=(0, 0, 0, None))
        lr_t = torch.tensor(lrs, dtype=f32, device=dev)

        def ens(steps, deadline):
            am = 0.01 * torch.randn(vm_runs, dtype=f32, device=dev)
            ap = 0.01 * torch.randn(vm_runs, dtype=f32, device=dev)
            b = torch.zeros(vm_runs, dtype=f32, device=dev)
            with torch.no_grad():
                for s in range(steps):
                    if s and stop(deadline):
                        return vm_runs, s
                    g0, g1, g2 = grad(am, ap, b, 100.0)
                    am, ap, b = am - lr_t * g0, ap - lr_t * g1, b - lr_t * g2
            return vm_runs, steps

        n_r, n_s, w = timed(ens, steps)
        rows.append(("eos.mean_model", "torch.func.vmap ensemble", n_r, n_s, w))

    # -- DC neuron (nll loss, no bias): t = sep (θ·u) + θ·w_i on a shared minibatch
    if "dc.neuron" in suite_sizes:
        steps, loop_runs, vm_runs = suite_sizes["dc.neuron"]
        m, B, sep, p_d, dd, c = 1000, 75, 2.0, 0.5, 0.0, 0.0
        n_train = 800
        W = torch.randn(n_train, 2, dtype=f32, device=dev)
        u = torch.tensor([0.6, 0.8], dtype=f32, device=dev)
        nb = -(-n_train // B)
        perms = [torch.randperm(n_train, device=dev) for _ in range(-(-steps // nb))]
        batches = [perms[k // nb][(k % nb) * B:(k % nb + 1) * B] for k in range(steps)]
        rs = np.linspace(0.5, 8.0, vm_runs).astype(np.float32)

        def dc_loss(th, r, rows):
            t = sep * (th @ u) + rows @ th
            eps = c / r
            b = math.log(p_d) - eps
            return torch.mean(-eps - b * torch.exp(-r * (t - dd)))

        def loop(steps, deadline):
            for k in range(loop_runs):
                if k and stop(deadline):
                    return k, steps
                th = (0.01 * torch.randn(2, dtype=f32, device=dev)).requires_grad_()
                opt = torch.optim.SGD([th], lr=0.01)
                r = float(rs[k])
                for s in range(steps):
                    opt.zero_grad()
                    dc_loss(th, r, W[batches[s]]).backward()
                    opt.step()
            return loop_runs, steps

        n_r, n_s, w = timed(loop, steps)
        rows.append(("dc.neuron", "torch per-run loop (autograd + optim.SGD)", n_r, n_s,
                     w))
        grad = torch.func.vmap(torch.func.grad(dc_loss), in_dims=(0, 0, None))
        r_t = torch.tensor(rs, dtype=f32, device=dev)

        def ens(steps, deadline):
            th = 0.01 * torch.randn(vm_runs, 2, dtype=f32, device=dev)
            with torch.no_grad():
                for s in range(steps):
                    if s and stop(deadline):
                        return vm_runs, s
                    th = th - 0.01 * grad(th, r_t, W[batches[s]])
            return vm_runs, steps

        n_r, n_s, w = timed(ens, steps)
        rows.append(("dc.neuron", "torch.func.vmap ensemble", n_r, n_s, w))

    # -- bottleneck: f(x) = v·relu(u (w·x) + b), ½ mean (y − f)², SGD on (w, u, b, v)
    if "bottleneck.three_layer" in suite_sizes:
        steps, loop_runs, vm_runs, width, n_train = suite_sizes["bottleneck.three_layer"]
        d, B, nu = 10, 32, 0.5
        X = torch.randn(n_train, d, dtype=f32, device=dev)
        ws = torch.nn.functional.normalize(torch.randn(d, dtype=f32, device=dev), dim=0)
        Y = torch.sin(nu * math.pi * (X @ ws))
        idx = torch.randint(0, n_train, (steps, B), device=dev)

        def bn_loss(w, uu, b, v, xb, yb):
            h = torch.relu((xb @ w)[:, None] * uu + b)
            r = yb - h @ v
            return 0.5 * torch.mean(r * r)

        def init(n=None):
            shape = (n,) if n else ()
            return [torch.randn(*shape, d, dtype=f32, device=dev) / math.sqrt(d),
                    torch.randn(*shape, width, dtype=f32, device=dev),
                    torch.randn(*shape, width, dtype=f32, device=dev),
                    torch.randn(*shape, width, dtype=f32, device=dev) / math.sqrt(width)]

        def loop(steps, deadline):
            for k in range(loop_runs):
                if k and stop(deadline):
                    return k, steps
                p = [t.requires_grad_() for t in init()]
                opt = torch.optim.SGD(p, lr=5e-4)
                for s in range(steps):
                    opt.zero_grad()
                    bn_loss(*p, X[idx[s]], Y[idx[s]]).backward()
                    opt.step()
            return loop_runs, steps

        n_r, n_s, w = timed(loop, steps)
        rows.append(("bottleneck.three_layer", "torch per-run loop (autograd + optim.SGD)",
                     n_r, n_s, w))
        grad = torch.func.vmap(torch.func.grad(bn_loss, argnums=(0, 1, 2, 3)),
                               in_dims=(0, 0, 0, 0, None, None))

        def ens(steps, deadline):
            p = init(vm_runs)
            with torch.no_grad():
                for s in range(steps):
                    if s and stop(deadline):
                        return vm_runs, s
                    g = grad(*p, X[idx[s]], Y[idx[s]])
                    p = [a - 5e-4 * ga for a, ga in zip(p, g)]
            return vm_runs, steps

        n_r, n_s, w = timed(ens, steps)
        rows.append(("bottleneck.three_layer", "torch.func.vmap ensemble", n_r, n_s, w))

    out = [{"kind": "baseline", "experiment": fam, "case": "torch",
            "impl": impl + (f" (stopped at the {time_cap:g} s budget)" if w >= time_cap else ""),
            "runs": runs, "steps": steps, "wall_s": w, "compile_s": float("nan"),
            "run_steps_per_s": runs * steps / w,
            "torch_version": torch.__version__, "torch_device": str(dev)}
           for fam, impl, runs, steps, w in rows]
    return out, notes


# ---- the command -----------------------------------------------------------------------------
_BASELINE_SIZES = {  # (python-loop runs, per-run scan runs)
    "tiny": (2, 4), "quick": (4, 64), "full": (8, 256),
}
_TORCH_CAP = {"tiny": 1.0, "quick": 6.0, "full": 60.0}  # seconds per PyTorch baseline
_TORCH_SIZES = {  # family -> (steps, per-run loop runs, vmap runs[, width, n_train])
    "tiny": {"eos.mean_model": (40, 2, 64)},
    "quick": {"eos.mean_model": (2000, 2, 32768), "dc.neuron": (1100, 2, 4096),
              "bottleneck.three_layer": (200, 2, 128, 1000, 2048)},
    "full": {"eos.mean_model": (10000, 2, 65536), "dc.neuron": (16500, 2, 8192),
             "bottleneck.three_layer": (2000, 2, 512, 1000, 10000)},
}


def _fmt(x, spec=".3g") -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "–"
    return format(x, spec)


def _bytes(x) -> str:
    if x is None or not math.isfinite(x):
        return "–"
    for unit, k in (("GiB", 2 ** 30), ("MiB", 2 ** 20), ("KiB", 2 ** 10)):
        if x >= k:
            return f"{x / k:.3g} {unit}"
    return f"{x:.0f} B"


def _targets(meta: dict, rows: list[dict]) -> list[str]:
    """Issue 8's targets, checked against this run's figures."""
    eng = {(r["experiment"], r["case"]): r for r in rows if r["kind"] == "engine"}
    base = [r for r in rows if r["kind"] == "baseline" and r["experiment"] == "eos.mean_model"]
    out = []
    mm = eng.get(("eos.mean_model", "large"))
    kern = [r for r in base if r["impl"].startswith("hand-written")]
    loop = [r for r in base if r["impl"].startswith("per-run Python loop")]
    if mm and kern:
        best = max(kern, key=lambda r: r["run_steps_per_s"])
        e2e = mm["run_steps_per_s"] / best["run_steps_per_s"]
        st = mm["steady_run_steps_per_s"] / best["run_steps_per_s"]
        # like for like: the kernel end to end too (its compile + its timed run)
        best_e2e = max(r["runs"] * r["steps"] / (r["wall_s"] + r["compile_s"]) for r in kern)
        like = mm["run_steps_per_s"] / best_e2e
        out.append(f"- engine ≥ 80 % of the best hand-written kernel (mean model, large): "
                   f"end to end {100 * like:.0f} % of the kernel end to end "
                   f"({'met' if like >= 0.8 else 'NOT met'}); {100 * e2e:.0f} % of its "
                   f"steady rate (compile excluded for the kernel only); steady "
                   f"{100 * st:.0f} % ({'met' if st >= 0.8 else 'NOT met'}). This suite's "
                   f"runs are short, so compiles dominate end to end; "
                   f"benchmarks/bench_engine.py measures the sweep sizes of sweeps/")
    if mm and loop:
        x = mm["run_steps_per_s"] / loop[0]["run_steps_per_s"]
        out.append(f"- engine ≥ 3,000× the per-run Python loop: {x:.3g}× end to end "
                   f"({'met' if x >= 3000 else 'NOT met'}); steady "
                   f"{mm['steady_run_steps_per_s'] / loop[0]['run_steps_per_s']:.3g}×")
    bn = [r for r in eng.values() if r["experiment"] == "bottleneck.three_layer"]
    if bn:
        best = max(bn, key=lambda r: r["flop_frac"])
        out.append(f"- bottleneck network ≥ 40 % of the matmul ceiling: best case "
                   f"({best['case']}) {100 * best['flop_frac']:.0f} % "
                   f"({'met' if best['flop_frac'] >= 0.4 else 'NOT met'})")
    if meta.get("suite") == "quick":
        out.append(f"- quick suite under 5 minutes: {meta['total_s']:.0f} s "
                   f"({'met' if meta['total_s'] < 300 else 'NOT met'})")
    return (["", "## Issue 8 targets on this run", ""] + out) if out else []


def report(meta: dict, rows: list[dict]) -> str:
    c = meta["ceilings"]
    L = [f"# jaxdyn bench — suite `{meta['suite']}`", "",
         f"- {meta['date']}; jaxdyn {meta['jaxdyn_version']}, jax {meta['jax_version']}; "
         f"device: {meta['device']}",
         f"- host: {meta['host']}; load average (1/5/15 min) at start {meta['load_start']}, "
         f"at end {meta['load_end']} (other processes on the host skew every timing)",
         f"- total time of the command: {meta['total_s']:.1f} s ("
         + ", ".join(f"{k} {v:.1f} s" for k, v in meta.get("phase_s", {}).items()) + ")", "",
         "## Device ceilings (measured by this command, float32, all devices at once)", "",
         f"- matmul: **{c['flop_per_s'] / 1e9:.3g} GFLOP/s** (n = {c['matmul_n']}); "
         f"copy: **{c['bytes_per_s'] / 1e9:.3g} GB/s** "
         f"({c['copy_array_bytes'] / 2 ** 20:.0f} MiB array, read + write)", "",
         "## Engine, end to end", "",
         "| experiment | case | runs × steps | chunks × batch | wall (s) | compile (s) | "
         "run·steps/s end to end | steady s / chunk step | steady run·steps/s | "
         "FLOP/run·step | GFLOP/s (% ceiling) | GB/s (% ceiling) | XLA chunk memory | "
         "host peak RSS |",
         "|" + "---|" * 14]
    for r in rows:
        if r["kind"] != "engine":
            continue
        lb = " ≥" if r["cost_lower_bound"] else ""
        L.append(
            f"| {r['experiment']} | {r['case']} | {r['runs']} × {r['steps']} | "
            f"{r['chunks']} × {r['batch']} | {r['wall_s']:.2f} | {r['compile_s']:.2f} | "
            f"{_fmt(r['run_steps_per_s'])} | {_fmt(r['steady_s_per_step'])} | "
            f"{_fmt(r['steady_run_steps_per_s'])} | {_fmt(r['flops_per_run_step'])} | "
            f"{lb}{_fmt(r['flop_per_s'] / 1e9)} ({_fmt(100 * r['flop_frac'], '.2g')} %) | "
            f"{lb}{_fmt(r['bytes_per_s'] / 1e9)} ({_fmt(100 * r['bytes_frac'], '.2g')} %) | "
            f"{_bytes(r['xla_peak_bytes'])} | {_bytes(r['host_peak_rss_bytes'])} |")
    for fam, why in meta["skipped"].items():
        L.append(f"\n- skipped {fam}: {why}")
    base = [r for r in rows if r["kind"] == "baseline"]
    if base:
        L += ["", "## Baselines in the same process (same math, same steps)", "",
              "| experiment | implementation | runs × steps | wall (s) | compile (s) | "
              "run·steps/s | engine end to end / this | engine steady / this |",
              "|---|---|---|---|---|---|---|---|"]
        for r in base:
            L.append(f"| {r['experiment']} | {r['impl']} | {r['runs']} × {r['steps']} | "
                     f"{r['wall_s']:.3g} | {_fmt(r['compile_s'])} | "
                     f"{_fmt(r['run_steps_per_s'])} | "
                     f"**{_fmt(r.get('engine_over_this'))}** | "
                     f"{_fmt(r.get('engine_steady_over_this'))} |")
        L.append("")
        L.append("The engine figures in the ratios are those of the large case of the same "
                 "experiment; 'end to end' includes its compile and Parquet writing, "
                 "'steady' is the compiled chunk program re-run alone.")
    for n in meta.get("notes", []):
        L.append(f"- {n}")
    L += _targets(meta, rows)
    lc = meta["loop_check"]
    L += ["", "## How the figures are derived", "",
          "- run·steps/s end to end = runs × steps / wall seconds of `engine.run_sweep` "
          "(compile, compute and Parquet writing, on a temporary folder).",
          "- steady state = the compiled chunk program re-executed once (twice more if under "
          "1 s, fastest kept) on the group's first chunk after the sweep; seconds per chunk "
          "step = that time / steps.",
          f"- XLA's cost analysis counts a while loop's body "
          f"{'once' if lc['while_body_counted_once'] else 'NOT once (check the numbers)'}: "
          f"a fori_loop of a 64×64 "
          f"matmul reports {lc['fori_loop_any_trip_count_flops']:.4g} FLOP for any trip "
          f"count (one matmul is {lc['matmul_flops']:.4g}; unrolled ×4 in Python: "
          f"{lc['unrolled_4_flops']:.4g}). The chunk program's own figure "
          f"(`xla_raw_flops` in the table) therefore misses almost all steps. FLOPs and bytes "
          "per chunk are instead once + steps × step + (log points + 1) × measure, each the "
          "cost analysis of a loop-free program at the chunk's batch (once = make_data and "
          "init, unoptimised estimate; step = the "
          "experiment's step, the engine's finiteness check and freeze, vmapped). Achieved "
          "= that / steady seconds per chunk. '≥' marks a lower bound (a piece still had a "
          "loop inside).",
          "- bytes are XLA's 'bytes accessed' (operands + results of each fused kernel): a "
          "working set that stays in cache can exceed the copy ceiling, which is measured "
          "on arrays larger than any cache.",
          "- memory: 'XLA chunk memory' = arguments + outputs + temporaries of the compiled "
          "chunk program (XLA's memory analysis); host peak RSS = VmHWM during the case "
          "(reset per case where /proc/self/clear_refs allows; else the process peak so far).",
          f"- ceilings: {c['how']}."]
    return "\n".join(L) + "\n"


def run(suite: str = "quick", out: str | Path | None = None, only: list[str] | None = None,
        torch: bool = True, echo: Callable[[str], None] = print) -> tuple[Path, list[dict]]:
    """Run the suite; write ``bench.parquet``, ``bench.md`` and ``bench.json`` to ``out``."""
    t_start = time.perf_counter()
    date = datetime.datetime.now(datetime.timezone.utc)
    if out is None:
        out = Path("benchmarks") / "results" / f"bench-{date.strftime('%Y%m%d-%H%M%S')}"
    out = Path(out)
    tmp = Path(tempfile.mkdtemp(prefix="jaxdyn-bench-"))
    # a fresh, empty persistent compilation cache: compile times are cold and honest
    os.environ["JAXDYN_CACHE_DIR"] = str(tmp / "xla-cache")

    import jax

    from jaxdyn import engine

    load_start = _load()
    meta = {"suite": suite, "date": date.isoformat(timespec="seconds"),
            "jax_version": jax.__version__, "jaxdyn_version": version(),
            "device": engine.device_description(), "backend": jax.default_backend(),
            "n_devices": len(jax.local_devices()),
            "host": f"{platform.node()} ({platform.machine()}, {os.cpu_count()} CPUs, "
                    f"python {platform.python_version()})",
            "load_start": load_start, "notes": []}
    rows: list[dict] = []
    try:
        echo(f"[bench] device: {meta['device']}; measuring ceilings ...")
        t = time.perf_counter()
        ceil = (measure_ceilings(max_n=512, min_copy_bytes=2.0 ** 24, min_total=0.02)
                if suite == "tiny" else measure_ceilings())
        meta["ceilings"] = ceil
        phases = meta["phase_s"] = {"ceilings": time.perf_counter() - t}
        echo(f"[bench] matmul {ceil['flop_per_s'] / 1e9:.3g} GFLOP/s, copy "
             f"{ceil['bytes_per_s'] / 1e9:.3g} GB/s")
        meta["loop_check"] = loop_accounting_check()
        t = time.perf_counter()
        cases, skipped = make_cases(suite, only)
        meta["skipped"] = skipped
        for fam, why in skipped.items():
            echo(f"[bench] skip {fam}: {why}")
        for case in cases:
            echo(f"[bench] {case.family} {case.size}: {case.runs} runs × {case.steps} steps")
            r = run_engine_case(case, tmp / "results", ceil)
            echo(f"[bench]   {r['wall_s']:.2f} s (compile {r['compile_s']:.2f} s), "
                 f"{r['run_steps_per_s']:.3g} run·steps/s end to end, steady "
                 f"{r['steady_run_steps_per_s']:.3g}; {r['flop_per_s'] / 1e9:.3g} GFLOP/s")
            rows.append(r)

        phases["engine_cases"] = time.perf_counter() - t
        t = time.perf_counter()
        large = {r["experiment"]: r for r in rows if r["case"] == "large"}
        mm = large.get("eos.mean_model")
        if mm is not None:
            a_runs, b_runs = _BASELINE_SIZES[suite]
            steps, every = mm["steps"], _SIZES["eos.mean_model"][_SUITE_INDEX[suite]][1]
            echo(f"[bench] mean-model baselines: {steps} steps ...")
            kernels = [baseline_hand_kernel(mm["runs"], steps, every)]
            if mm["batch"] < mm["runs"]:
                kernels.append(baseline_hand_kernel(mm["runs"], steps, every,
                                                    chunk=int(mm["batch"])))
            for b in (baseline_python_loop(a_runs, steps, every),
                      baseline_scan_per_run(b_runs, steps, every), *kernels):
                rows.append({"kind": "baseline", "experiment": "eos.mean_model",
                             "case": "baseline", **b})
                echo(f"[bench]   {b['impl']}: {b['run_steps_per_s']:.3g} run·steps/s")
        else:
            meta["notes"].append("mean-model baselines skipped: no eos.mean_model case")
        phases["baselines"] = time.perf_counter() - t
        t = time.perf_counter()
        if torch:
            tm, why = _torch()
            if tm is None:
                meta["notes"].append(f"PyTorch baselines skipped: import torch failed ({why})")
                echo(f"[bench] PyTorch baselines skipped: {why}")
            else:
                sizes = {k: v for k, v in _TORCH_SIZES[suite].items()
                         if k in large or suite == "tiny"}
                echo(f"[bench] PyTorch {tm.__version__} baselines: {sorted(sizes)} ...")
                trows, tnotes = torch_baselines(tm, sizes, time_cap=_TORCH_CAP[suite])
                rows += trows
                meta["notes"] += tnotes
                meta["torch_version"] = tm.__version__
        else:
            meta["notes"].append("PyTorch baselines not run (--no-torch)")
        phases["torch"] = time.perf_counter() - t
        for r in rows:
            if r["kind"] != "baseline":
                continue
            e = large.get(r["experiment"])
            if e is not None:
                r["engine_over_this"] = e["run_steps_per_s"] / r["run_steps_per_s"]
                r["engine_steady_over_this"] = (e["steady_run_steps_per_s"]
                                                / r["run_steps_per_s"])
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    meta["load_end"] = _load()
    meta["total_s"] = time.perf_counter() - t_start
    for r in rows:
        r.update({"suite": suite, "device": meta["device"], "backend": meta["backend"],
                  "n_devices": meta["n_devices"], "jax_version": meta["jax_version"],
                  "date": meta["date"]})
    write(out, meta, rows)
    return out, rows


COLUMNS = ["suite", "kind", "experiment", "case", "impl", "runs", "steps", "log_points",
           "chunks", "batch", "wall_s", "compile_s", "run_steps_per_s", "chunk_compute_s",
           "steady_chunk_s", "steady_s_per_step", "steady_run_steps_per_s",
           "flops_per_chunk", "bytes_per_chunk", "transcendentals_per_chunk",
           "flops_per_run_step", "bytes_per_run_step", "flop_per_s", "bytes_per_s",
           "flop_ceiling", "bytes_ceiling", "flop_frac", "bytes_frac", "cost_lower_bound",
           "cost_note", "xla_raw_flops", "xla_arg_bytes", "xla_out_bytes", "xla_temp_bytes",
           "xla_peak_bytes", "device_peak_bytes", "host_peak_rss_bytes", "diverged",
           "engine_over_this", "engine_steady_over_this", "device", "backend", "n_devices",
           "jax_version", "date"]


def write(out: Path, meta: dict, rows: list[dict]) -> None:
    import pandas as pd

    out.mkdir(parents=True, exist_ok=True)
    df = pd.DataFrame(rows)
    extra = [c for c in df.columns if c not in COLUMNS]
    for c in COLUMNS:
        if c not in df.columns:
            df[c] = np.nan
    df = df[COLUMNS + extra]
    df.to_parquet(out / "bench.parquet", index=False)
    (out / "bench.md").write_text(report(meta, rows))
    (out / "bench.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2,
                                               default=_json_default) + "\n")


def _json_default(x):
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (np.floating,)):
        return float(x)
    if isinstance(x, np.bool_):
        return bool(x)
    return str(x)


def main_from_args(args) -> int:
    """``jaxdyn bench`` (called by the CLI)."""
    only = [s.strip() for s in args.only.split(",")] if args.only else None
    echo = (lambda s: None) if args.quiet else (lambda s: print(s, file=sys.stderr,
                                                                 flush=True))
    import jax

    with jax.enable_x64(True):  # as jaxdyn.run: float64 cases need it, float32 ones keep it
        out, rows = run(args.suite, args.out, only, torch=not args.no_torch, echo=echo)
    print((out / "bench.md").read_text())
    print(f"[bench] wrote {out / 'bench.parquet'}, {out / 'bench.md'}, {out / 'bench.json'}")
    return 0
