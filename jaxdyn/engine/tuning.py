"""Micro-batch tuning: how many of a device's runs to vmap together on a CPU.

Owns: the decision (``choose_micro``: measure where a device's share spills the caches,
keep the smallest size within ``MICRO_SATURATION`` of the best), the measurement
(``_MicroTuner``: the step alone, every device at once), the gates (``largest_step_value``)
and the persisted table beside the compilation cache.

Must not: change results beyond the last bit (micro-batches only reorder work), or build the
chunk program (the runner does, with the size chosen here).
"""

from __future__ import annotations

import os
import platform
import time
from typing import TYPE_CHECKING, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from jaxdyn.engine.plan import RUNS_PER_DEVICE_MULTIPLE, _round_up
from jaxdyn.engine.program import (abstract_run_inputs, data_key, equations, run_arrays,
                                   run_setup)
from jaxdyn.experiments.base import Experiment

if TYPE_CHECKING:
    from jaxdyn.engine.runner import ChunkRunner

#: CPU only: the micro-batch is measured when a device's share of a chunk needs more
#: temporaries than this (about an L2 cache's worth, and well below the L3) ...
MICRO_TUNE_ABOVE_BYTES = 4 << 20

#: ... if one run's step makes a value at least this large (the bottleneck network's
#: (batch, width) activations: 128 KB; the mean model's largest: 4 B), found by tracing ...
MICRO_TUNE_MIN_VALUE = 16 << 10

#: ... and the smallest micro-batch within this fraction of the best throughput is kept.
MICRO_SATURATION = 0.9

#: Measuring stops once it has cost this fraction of the group's run time (at the best
#: rate so far), after the two sizes that matter most: the whole share and 8 runs.
MICRO_TUNE_BUDGET = 0.05



def choose_micro(runner: ChunkRunner, per_device: int) -> int | None:
    """Runs per vmapped micro-batch on one device, or None for all of its share.

    On a CPU a batch of runs whose temporaries spill out of the caches is memory bound:
    vmapping the bottleneck network (width 1000, batch 32) over 64 runs per device ran
    several times slower per run than over 8 to 16 (figures in benchmarks/README.md, table
    of changes). So where a device's share of a chunk needs more than
    MICRO_TUNE_ABOVE_BYTES of temporaries (XLA's memory analysis of the step), the step is
    timed with the whole share and at 8, 16, 32, ... runs per device, on every
    device at once, up to just past the peak, and the smallest size within
    MICRO_SATURATION of the best throughput is kept (None if that is the whole share).
    After the first two, measuring stops at MICRO_TUNE_BUDGET of the group's estimated
    run time. Results do not depend on it beyond the last bit (bitwise in the tests with
    2 CPU devices; on one, the bottleneck's train_loss differed in the last bit between
    48 runs vmapped together and 8). The measurements persist beside the
    compilation cache, so a second invocation measures nothing. Accelerators: None (their
    throughput saturates at the batch the memory bound allows).
    """
    m = RUNS_PER_DEVICE_MULTIPLE
    if runner.micro_override is not None:
        micro = _round_up(runner.micro_override, m)
        return micro if 0 < micro < per_device else None
    if runner.devices[0].platform != "cpu" or per_device <= m:
        return None
    if largest_step_value(runner.exp, runner.static, runner.per_seed) < MICRO_TUNE_MIN_VALUE:
        return None  # small per-run values fuse into one kernel: nothing to spill
    whole = _round_up(per_device, m)
    # the whole share first (the default), then 8, 16, 32, ... up to it
    sizes = [whole] + [m << i for i in range(20) if (m << i) < whole]
    work = len(runner.group.runs) * runner.sweep.steps  # run-steps of the whole group
    key = tuning_key(runner)
    known = _tuning_load().get(key)
    if known and not {"temp_per_run", "ended", "work", "rates"} <= known.keys():
        known = None  # written by another version: measure again
    covers = known and known["ended"] != "budget" and \
        max(map(int, known["rates"]), default=0) >= whole
    if known and (covers or work <= known["work"] or not known["rates"]):
        runner.micro_rates = {int(k): v for k, v in known["rates"].items()}
        temp_per_run = known["temp_per_run"]
    else:
        t0 = time.perf_counter()
        tuner = _MicroTuner(runner, whole)
        temp_per_run, ended = tuner.temp_per_run, "peak"
        if temp_per_run * per_device > MICRO_TUNE_ABOVE_BYTES:
            runner.micro_rates, ended = tuner.rates(sizes, work, t0)
        runner.tune_s += time.perf_counter() - t0
        _tuning_save(key, {"temp_per_run": temp_per_run, "ended": ended, "work": work,
                           "rates": {str(k): v for k, v in runner.micro_rates.items()}})
    if temp_per_run * per_device <= MICRO_TUNE_ABOVE_BYTES:
        return None  # nothing to spill
    return pick_micro(runner.micro_rates, per_device)


def tuning_key(runner: ChunkRunner) -> str:
    """The persisted table's key of a runner's group: experiment, static values, devices,
    processor and jax version (not the run length)."""
    static = {k: (np.dtype(v).name if k == "dtype" else v) for k, v in runner.static.items()
              if k != "steps"}  # the step's cost does not depend on the run length
    return "|".join([runner.exp.name, repr(sorted(static.items())),
                     f"{runner.n_devices}x{runner.devices[0].device_kind}",
                     platform.processor() or platform.machine(), f"jax {jax.__version__}"])


def largest_step_value(exp: Experiment, static: dict, shared: bool) -> int:
    """Bytes of the largest value one step of one run computes, from the step's jaxpr on
    abstract inputs (nothing is compiled or run)."""
    dyn, seed = abstract_run_inputs(exp)
    data = (jax.eval_shape(lambda: exp.make_data(jax.random.PRNGKey(0), static))
            if shared else None)
    hp, k_step, data, state = jax.eval_shape(
        lambda d, s, x: run_setup(exp, static, d, s, x), dyn, seed, data)
    jaxpr = jax.make_jaxpr(lambda st, k, h, x: exp.step(st, k, static, h, x))(
        state, k_step, hp, data)
    return max((_value_bytes(v) for eqn in equations(jaxpr.jaxpr) for v in eqn.outvars),
               default=0)


def _value_bytes(var) -> int:
    aval = getattr(var, "aval", None)
    size = getattr(getattr(aval, "dtype", None), "itemsize", None)  # PRNG keys have one too
    return int(np.prod(aval.shape)) * int(size) if size is not None else 0


def pick_micro(rates: dict[int, float], per_device: int) -> int | None:
    """From measured run·steps/s per micro-batch size (the whole share among them), the
    smallest size within MICRO_SATURATION of the best among those a share of ``per_device``
    runs holds; None (vmap the whole share) when that is the share itself."""
    whole = _round_up(per_device, RUNS_PER_DEVICE_MULTIPLE)
    usable = {k: v for k, v in rates.items() if k <= whole}
    if not usable:
        return None
    best = max(usable.values())
    micro = min(k for k, v in usable.items() if v >= MICRO_SATURATION * best)
    return None if micro >= whole else micro


class _MicroTuner:
    """Times the experiment's step alone, vmapped over ``size`` runs on every device of a
    runner at once (the devices share the L3 and the memory bandwidth), for
    ``ChunkRunner.choose_micro``. The runs are set up once, at the largest size; each size
    then compiles only the step loop (a fraction of the chunk program's compile time)."""

    MIN_TIMED_S = 0.1  # the timed difference of two loop lengths is at least this long

    def __init__(self, runner: ChunkRunner, max_size: int):
        self.runner = r = runner
        exp, static, shared = r.exp, r.static, r.per_seed
        nd = r.n_devices
        self.sharding = NamedSharding(r.mesh, P("runs"))
        runs = r.group.runs
        pick = [runs[i % len(runs)] for i in range(max_size * nd)]
        dyn, seeds = run_arrays(pick, r.dyn_names)
        self.data = None
        if shared:
            key = data_key(int(pick[0].seed))
            self.data = jax.jit(lambda: exp.make_data(key, static))()

        def setup(dyn, seed, data):
            hp, k_step, own, state = run_setup(exp, static, dyn, seed, data)
            return hp, k_step, state, (None if shared else own)

        # host copies of every run's set-up (a few KB per run), sliced per size
        self.runs = jax.device_get(jax.jit(jax.vmap(setup, in_axes=(0, 0, None)))(
            dyn, seeds, self.data))

        def loop(hp, k_step, state, own, data, n):
            data = data if shared else own
            return jax.lax.fori_loop(
                0, n, lambda i, st: exp.step(st, jax.random.fold_in(k_step, i), static, hp,
                                             data), state)

        def local(runs_args, data, n):
            return jax.vmap(loop, in_axes=(0, 0, 0, 0, None, None))(*runs_args, data, n)

        self._jitted = jax.jit(jax.shard_map(local, mesh=r.mesh,
                                             in_specs=(P("runs"), P(), P()),
                                             out_specs=P("runs"), check_vma=False))
        self._compiled: dict[int, Callable] = {}
        m = RUNS_PER_DEVICE_MULTIPLE
        ma = self._compile(m).memory_analysis()
        # per device (each runs its own SPMD partition): the step's temporaries per run
        self.temp_per_run = (ma.temp_size_in_bytes / m) if ma is not None else 0.0

    def _args(self, size: int):
        n = size * self.runner.n_devices
        return jax.device_put(jax.tree.map(lambda x: x[:n], self.runs), self.sharding)

    def _compile(self, size: int):
        if size not in self._compiled:
            shapes = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype,
                                                                 sharding=self.sharding),
                                  jax.eval_shape(lambda: self._args(size)))
            self._compiled[size] = self._jitted.lower(
                shapes, self.data, jax.ShapeDtypeStruct((), jnp.int32)).compile()
        return self._compiled[size]

    def rate(self, size: int) -> float:
        """Run·steps/s of the step at ``size`` runs per device (every device at once)."""
        f, args = self._compile(size), self._args(size)

        def timed(n: int) -> float:
            t = time.perf_counter()
            jax.block_until_ready(f(args, self.data, np.int32(n)))
            return time.perf_counter() - t

        timed(1)  # warm
        base, k = min(timed(1) for _ in range(2)), 4
        while True:
            dt = min(timed(1 + k) for _ in range(2)) - base
            if dt >= self.MIN_TIMED_S or k >= 1 << 20:
                return size * self.runner.n_devices * k / max(dt, 1e-9)
            k = int(k * min(64, max(2, 1.5 * self.MIN_TIMED_S / max(dt, 1e-6))))

    def rates(self, sizes: Sequence[int], work: float, t0: float
              ) -> tuple[dict[int, float], str]:
        """Rates of ``sizes`` (the whole share, then from the smallest up), and why they
        stopped: "peak" (a rate below 60 % of the best: past it), "top" (every size
        measured) or "budget" (after the first two, measuring would cost more than
        MICRO_TUNE_BUDGET of the ``work`` run-steps at the best rate so far, counting from
        ``t0``)."""
        out: dict[int, float] = {}
        for i, size in enumerate(sizes):
            out[size] = self.rate(size)
            best = max(out.values())
            if i >= 1 and out[size] < 0.6 * best:
                return out, "peak"
            if 1 <= i < len(sizes) - 1 and \
                    time.perf_counter() - t0 > MICRO_TUNE_BUDGET * work / best:
                return out, "budget"
        return out, "top"


def _tuning_file():
    """Where measured micro-batches persist: beside the persistent compilation cache (none
    when it is off)."""
    from pathlib import Path

    d = jax.config.jax_compilation_cache_dir
    return Path(d) / "jaxdyn-micro-batch.json" if d else None


def _tuning_load() -> dict:
    import json

    f = _tuning_file()
    try:
        return json.loads(f.read_text()) if f is not None and f.is_file() else {}
    except (OSError, ValueError):  # a damaged file only costs a new measurement
        return {}


def _tuning_save(key: str, value: dict) -> None:
    import json

    f = _tuning_file()
    if f is None:
        return
    try:
        table = {**_tuning_load(), key: value}
        tmp = f.with_name(f".{f.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(table, indent=1, sort_keys=True))
        os.replace(tmp, f)  # atomic: concurrent sweeps never see half a file
    except OSError:
        pass
