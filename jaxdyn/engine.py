"""The sweep engine: group by static signature → compile once → chunk → vmap+scan → rows.

One training run is a pure function ``run(dynamic hyperparameters, seed) -> curves`` made of
the experiment's ``init``/``step``/``measure``: a ``lax.scan`` over the log segments of a
``fori_loop`` over steps. The engine ``vmap``s it over the runs of a chunk, ``jit``s it once
per group of runs that share their static hyperparameters, shards the run axis over all
local devices, and hands finished chunks to the store on a background thread while the next
chunk computes.

Reproducibility: a run's keys come from its ``seed`` alone (``PRNGKey(seed)`` folded with
0 for init, 1 for steps, 2 for data), so runs with the same seed share initialization and
data order across the grid, and nothing depends on the chunk, the device count or a resume.
"""

from __future__ import annotations

import functools
import os
import platform
import time
from collections import Counter
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from jaxdyn.experiments.base import Experiment
from jaxdyn.spec import Run, SpecError, Sweep


DTYPES = {"float32": jnp.float32, "float64": jnp.float64}
#: Largest chunk chosen automatically: throughput saturates well before this on CPU and GPU.
MAX_AUTO_CHUNK = 16384
#: Fraction of device (or host) memory a chunk may use.
MEMORY_FRACTION = 0.4
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
#: Compiled chunks hold a multiple of this many runs per device. XLA compiles a batch of one
#: differently (the run axis vanishes), and a different program may round differently, which
#: chaotic edge-of-stability dynamics amplify; padding keeps every chunk on one code path.
RUNS_PER_DEVICE_MULTIPLE = 8
#: The vmap axis over one device's runs (a segment's divergence check reduces over it).
RUN_AXIS = "run"


# ---- the run function --------------------------------------------------------------------
def _all_finite(tree, bound: float = float("inf")) -> jax.Array:
    """True iff every float leaf is finite and below ``bound`` in absolute value.
    (|x| < bound is False for NaN and, with bound = inf, for ±inf: one reduction per leaf.)"""
    leaves = [jnp.all(jnp.abs(x) < bound) for x in jax.tree.leaves(tree)
              if jnp.issubdtype(jnp.asarray(x).dtype, jnp.inexact)]
    # an elementwise chain of ands, not stack + all: under vmap a stack of (runs,) leaves is
    # a (leaves, runs) array and a reduction, which XLA cannot fuse into the step's kernel
    return functools.reduce(jnp.logical_and, leaves) if leaves else jnp.bool_(True)


def _freeze(ok, new, old):
    return jax.tree.map(lambda a, b: jnp.where(ok, a, b), new, old)


def probe_schedule(log_steps: np.ndarray, every: int) -> np.ndarray:
    """Which log points a probe runs at: step 0, every logged step at least ``every`` steps
    after the previous probe, and the last step."""
    flags = np.zeros(len(log_steps), bool)
    last = None
    for j, s in enumerate(log_steps):
        if last is None or s - last >= every or j == len(log_steps) - 1:
            flags[j] = True
            last = s
    return flags


def _nan_like(tree):
    return jax.tree.map(lambda x: jnp.full(x.shape, jnp.nan, x.dtype), tree)


def run_setup(exp: Experiment, static: dict, dyn: dict, seed, data):
    """A run's hyperparameters, step key, data and initial state, from its seed alone:
    ``PRNGKey(seed)`` folded with 0 for init, 1 for steps, 2 for data (unless shared data
    are given). Returns ``(hp, k_step, data, state0)``."""
    hp = {k: jnp.asarray(v).astype(static["dtype"]) for k, v in dyn.items()}
    key = jax.random.PRNGKey(seed)
    k_init, k_step = jax.random.fold_in(key, 0), jax.random.fold_in(key, 1)
    if data is None and exp.make_data is not None:
        data = exp.make_data(data_key(seed), static)
    return hp, k_step, data, exp.init(k_init, static, hp, data)


def data_key(seed) -> jax.Array:
    """The key of the data a seed's runs share (``run_setup``'s k_data)."""
    return jax.random.fold_in(jax.random.PRNGKey(seed), 2)


def run_arrays(runs: Sequence[Run], dyn_names: Sequence[str]) -> tuple[dict, np.ndarray]:
    """The dynamic hyperparameters (float64) and seeds (uint32) of ``runs``, one row each."""
    return ({k: np.asarray([r.hp[k] for r in runs], np.float64) for k in dyn_names},
            np.asarray([r.seed for r in runs], np.uint32))


def make_run_fn(exp: Experiment, static: dict, log_steps: np.ndarray,
                probes: Sequence[tuple] = (), unroll: int = 1,
                diverge_above: float | None = None, axis_name: str | None = None,
                save_params: str | None = None) -> Callable:
    """One run as a pure function ``run(dyn, seed, data) -> (curves, final, alive, step)``.

    ``save_params``: "final" or "log" appends a fifth output, ``exp.params_of_state`` of the
    final (frozen) state, or of the state at every log point (leading axis: log points).

    ``dyn``: dict of scalar dynamic hyperparameters. ``curves[m]`` has shape
    ``(len(log_steps),) + metric shape``; values logged after a divergence are NaN.
    A run whose state turns NaN/inf is frozen at its last finite state.
    ``axis_name``: the ``vmap`` axis over runs, if any; with it, the check for divergence
    inside a log segment is one branch for the whole batch (see ``segment``).
    ``probes``: ``(Probe, opts)`` pairs; a probe's columns are NaN where it did not run.
    """
    # Log point j runs steps log_steps[j-1] .. log_steps[j] - 1, then measures (point 0
    # runs none): one scan over all log points, so the program holds one copy of ``measure``
    # (compile time grows with every copy of the metrics and probes).
    log_steps = np.asarray(log_steps, np.int64)
    starts = np.concatenate([[0], log_steps[:-1]])
    lengths = log_steps - starts
    bound = float("inf") if diverge_above is None else float(diverge_above)
    flags = np.stack([probe_schedule(log_steps, int(o["every"])) for _, o in probes], 1) \
        if probes else np.zeros((len(log_steps), 0), bool)

    metric_keys: list[str] = []  # the experiment's own metrics (not probes), set when traced

    def measure(state, hp, data, probe_flags):
        m = dict(exp.measure(state, static, hp, data))
        metric_keys[:] = list(m)
        for j, (probe, opts) in enumerate(probes):
            def run_probe(state=state, probe=probe, opts=opts):
                return probe.fn(exp, state, static, hp, data, opts)
            shapes = jax.eval_shape(run_probe)
            # the flag is not batched, so under vmap this stays a real branch: the probe's
            # cost is paid only where it runs
            m.update(jax.lax.cond(probe_flags[j], run_probe, lambda s=shapes: _nan_like(s)))
        return m

    def run(dyn, seed, data):
        hp, k_step, data, state0 = run_setup(exp, static, dyn, seed, data)
        alive0 = _all_finite(state0, bound)

        def guarded(i, c):
            """One step that freezes a run at its last finite state and records the step
            at which it diverged."""
            state, alive, dstep = c
            new = exp.step(state, jax.random.fold_in(k_step, i), static, hp, data)
            ok = alive & _all_finite(new, bound)
            return (_freeze(ok, new, state), ok, jnp.where(alive & ~ok, i + 1, dstep))

        def steps(body, start, n, carry):
            if unroll == 1:  # one loop: the step is compiled once
                return jax.lax.fori_loop(start, start + n, body, carry)

            # Several steps per loop iteration let XLA fuse them into one kernel that keeps
            # small per-run states in registers; the remainder runs one step at a time.
            def body_unrolled(j, c):
                for u in range(unroll):
                    c = body(start + j * unroll + u, c)
                return c

            carry = jax.lax.fori_loop(0, n // unroll, body_unrolled, carry)
            return jax.lax.fori_loop(start + (n // unroll) * unroll, start + n, body, carry)

        def segment(carry, seg):
            start, n, probe_flags = seg
            state, alive, dstep, _ = carry

            # Fast path: the steps without the per-step freeze, which on a CPU costs more
            # kernels than a cheap step itself (a reduction over the state's leaves, then a
            # select per leaf). Only a flag of "ever left the finite region" is kept. A run
            # that diverged in an earlier segment steps on (its values are discarded) and
            # gets its frozen state back once, at the end of the segment.
            def fast(i, c):
                st, bad = c
                new = exp.step(st, jax.random.fold_in(k_step, i), static, hp, data)
                return new, bad | ~_all_finite(new, bound)

            fast_state, bad = steps(fast, start, n, (state, jnp.bool_(False)))
            fast_state = _freeze(alive, fast_state, state)
            bad = alive & bad
            # If any run of the chunk left it, the segment is run again from its start with
            # the guarded step: the same values for every run, and the exact freeze for the
            # bad ones. The flag is reduced over the chunk so that under vmap this stays a
            # real branch, taken only by the segments where something diverged.
            any_bad = jax.lax.psum(bad.astype(jnp.int32), axis_name) > 0 if axis_name else bad
            carry = jax.lax.cond(any_bad,
                                 lambda: steps(guarded, start, n, (state, alive, dstep)),
                                 lambda: (fast_state, alive, dstep))
            state, alive, _ = carry
            m = measure(state, hp, data, probe_flags)
            # The state is frozen at its last finite value, so the last log point's unmasked
            # metrics are the final metrics, also of a diverged run (its values just before
            # it diverged). Probes are not part of them. Carried, not stacked per log point:
            # measured on a mean-model chunk, XLA's temporaries 23.5 -> 7.2 MB and compile
            # 1.87 -> 1.58 s, the same bits.
            last = {k: m[k] for k in metric_keys}
            ys = {k: jnp.where(alive, v, jnp.nan) for k, v in m.items()}
            if save_params == "log":
                return (*carry, last), (ys, exp.params_of_state(state))
            return (*carry, last), ys

        shapes = jax.eval_shape(lambda: measure(state0, hp, data, flags[0]))  # sets metric_keys
        last0 = {k: jnp.zeros(shapes[k].shape, shapes[k].dtype) for k in metric_keys}
        carry0 = (state0, alive0, jnp.where(alive0, -1, 0).astype(jnp.int64), last0)
        (state, alive, dstep, final), curves = jax.lax.scan(segment, carry0,
                                                            (starts, lengths, flags))
        if save_params == "log":
            curves, saved = curves
            return curves, final, alive, dstep, saved
        if save_params == "final":
            return curves, final, alive, dstep, exp.params_of_state(state)
        return curves, final, alive, dstep
    return run


def resolve_probes(sweep: Sweep, exp: Experiment) -> list[tuple]:
    """The sweep's ``probes`` table as ``(Probe, opts)`` pairs; SpecError if it asks for an
    unknown probe or option."""
    from jaxdyn.probes import GENERIC

    known = {**{p.name: p for p in exp.probes}}
    if exp.loss is not None and exp.params_of_state is not None:
        known = {**GENERIC, **known}
    out = []
    for name, opts in sweep.probes.items():
        if name not in known:
            raise SpecError(sweep.file, f"probes.{name}",
                            f"unknown probe for {exp.name}; available: {sorted(known)}")
        probe = known[name]
        for k, v in opts.items():
            if k not in probe.defaults:
                raise SpecError(sweep.file, f"probes.{name}.{k}",
                                f"unknown option; expected one of {sorted(probe.defaults)}")
            want = type(probe.defaults[k])
            if want is float and isinstance(v, int) and not isinstance(v, bool):
                v = float(v)
            if not isinstance(v, want) or isinstance(v, bool) != (want is bool):
                raise SpecError(sweep.file, f"probes.{name}.{k}",
                                f"expected {want.__name__}, got {v!r}")
        merged = {**probe.defaults, **opts}
        if int(merged["every"]) < 1:
            raise SpecError(sweep.file, f"probes.{name}.every", "expected an integer >= 1")
        out.append((probe, merged))
    return out


def shares_data(exp: Experiment, static: dict) -> bool:
    """Whether runs of this static group get data from ``make_data`` shared per seed (then
    chunks never span seeds). An experiment may say no for some groups through
    ``extra["shares_data"](static)``; their runs then build their data themselves."""
    if exp.make_data is None:
        return False
    return bool(exp.extra.get("shares_data", lambda static: True)(static))


# ---- planning ----------------------------------------------------------------------------
@dataclass
class Group:
    """Runs sharing their static hyperparameters: one compiled program."""

    index: int
    label: str
    static: dict
    runs: list[Run]


def plan_groups(sweep: Sweep, exp: Experiment, runs: Sequence[Run]) -> list[Group]:
    names = exp.static_names
    by_sig: dict[tuple, list[Run]] = {}
    for r in runs:
        by_sig.setdefault(tuple(r.hp[n] for n in names), []).append(r)
    groups = []
    for i, (sig, rs) in enumerate(sorted(by_sig.items(), key=lambda kv: repr(kv[0]))):
        if shares_data(exp, dict(zip(names, sig))):  # chunks never span seeds
            rs = sorted(rs, key=lambda r: r.seed)
        label = ",".join(f"{n}={v}" for n, v in zip(names, sig)) or "all"
        groups.append(Group(i, label, dict(zip(names, sig)), rs))
    return groups


def chunks_of(group: Group, size: int, per_seed: bool) -> list[list[Run]]:
    out: list[list[Run]] = []
    if per_seed:
        runs_by_seed: dict[int, list[Run]] = {}
        for r in group.runs:
            runs_by_seed.setdefault(r.seed, []).append(r)
        for rs in runs_by_seed.values():
            out += [rs[i:i + size] for i in range(0, len(rs), size)]
    else:
        out = [group.runs[i:i + size] for i in range(0, len(group.runs), size)]
    return out


# ---- compiled chunk runner ---------------------------------------------------------------
class ChunkRunner:
    """``jit(shard_map(vmap(run)))`` for one group: the run axis split over all local devices."""

    def __init__(self, exp: Experiment, sweep: Sweep, group: Group, probes=(),
                 micro_batch: int | None = None):
        self.exp, self.sweep, self.group = exp, sweep, group
        self.static = {**group.static, "dtype": DTYPES[sweep.precision], "steps": sweep.steps}
        self.log_steps = sweep.log.steps(sweep.steps)
        self.devices = jax.local_devices()
        if (len(self.devices) > 1 and self.devices[0].platform == "cpu"
                and group_uses_lapack(exp, sweep, group.static, probes)):
            # several CPU devices deadlocked on LAPACK calls (see use_cpu_cores): one here
            self.devices = self.devices[:1]
        self.mesh = Mesh(np.array(self.devices), ("runs",))
        self.dyn_names = exp.dynamic_names
        run = make_run_fn(exp, self.static, self.log_steps, probes,
                          diverge_above=sweep.diverge_above, axis_name=RUN_AXIS,
                          save_params=sweep.save_params)
        shared = shares_data(exp, group.static)
        self.per_seed = shared

        def local_chunk(dyn, seeds, data_seed):
            """One device's share of a chunk: its runs, and the data they share, vmapped
            ``micro`` runs at a time (a sequential ``lax.map`` over micro-batches)."""
            data = None
            if shared:  # the same data on every device, each makes its own copy
                data = exp.make_data(data_key(data_seed), self.static)
            return _micro_batched(jax.vmap(run, in_axes=(0, 0, None), axis_name=RUN_AXIS),
                                  self.micro, (dyn, seeds), data)

        # shard_map, not jit's sharding propagation: runs never talk to each other, so each
        # device runs its own runs with no collective at all. (Propagation replicated ops
        # with no partitioning rule, such as the batched eigvalsh of the NTK probe, behind
        # all-gathers inside conditionals, which deadlocked XLA's CPU client on 2 devices.)
        chunk_fn = jax.shard_map(local_chunk, mesh=self.mesh,
                                 in_specs=(P("runs"), P("runs"), P()), out_specs=P("runs"),
                                 check_vma=False)
        runs_sh = NamedSharding(self.mesh, P("runs"))
        rep = NamedSharding(self.mesh, P())
        self._jitted = jax.jit(chunk_fn, in_shardings=(runs_sh, runs_sh, rep),
                               out_shardings=runs_sh)
        self._compiled = {}
        self.compile_s = 0.0
        self.batch: int | None = None  # compiled batch of every chunk, set by choose_chunk
        # runs vmapped together on one device (None: its whole share), set by choose_chunk
        # before the chunk program compiles: it is part of the program
        self.micro: int | None = None
        self.micro_override = micro_batch  # None: measured; 0: the whole share; N: N runs
        self.micro_rates: dict[int, float] = {}  # measured run·steps/s per micro-batch
        self.tune_s = 0.0

    @property
    def n_devices(self) -> int:
        return len(self.devices)

    def _args(self, n: int):
        dyn = {k: jax.ShapeDtypeStruct((n,), jnp.float64) for k in self.dyn_names}
        return dyn, jax.ShapeDtypeStruct((n,), jnp.uint32), jax.ShapeDtypeStruct((), jnp.uint32)

    def compiled(self, n: int):
        if n not in self._compiled:
            t = time.perf_counter()
            self._compiled[n] = self._jitted.lower(*self._args(n)).compile()
            self.compile_s += time.perf_counter() - t
        return self._compiled[n]

    def memory_bytes(self, n: int) -> float:
        """Bytes a chunk of ``n`` runs needs, from XLA's memory analysis of the compiled
        program, counting the host-side copies of its outputs (numpy, Arrow) too."""
        ma = self.compiled(n).memory_analysis()
        if ma is None:  # backends without the analysis: a generous per-run guess
            return float(n * 65536)
        return float(ma.temp_size_in_bytes + ma.argument_size_in_bytes
                     + 4 * ma.output_size_in_bytes)

    def padded(self, n: int) -> int:
        """The compiled batch size for a chunk of ``n`` runs."""
        return _round_up(max(n, 1), (self.micro or RUNS_PER_DEVICE_MULTIPLE) * self.n_devices)

    def choose_chunk(self, n_runs: int, override: int | None) -> int:
        """Runs per chunk; the compiled batch is ``padded(chunk)`` (padding runs repeat the
        last run and are dropped).

        Automatic: up to MAX_AUTO_CHUNK runs per device, at least four chunks for big
        sweeps so that writing overlaps compute, then shrunk until the compiled program fits
        MEMORY_FRACTION of the device memory. Before that, the micro-batch (how many of a
        device's runs are vmapped together) comes from measured throughput (``choose_micro``).
        """
        nd = self.n_devices
        if override:
            size = max(1, min(override, n_runs))
        else:
            size = min(n_runs, MAX_AUTO_CHUNK * nd, max(2048 * nd, -(-n_runs // 4)))
        self.micro = self.choose_micro(-(-size // nd))
        if not override:
            size = self._fit_memory(self.padded(size) if size > self.padded(1) else size)
        self.batch = self.padded(size)
        return size

    def _fit_memory(self, size: int) -> int:
        budget = device_memory_bytes(self.devices[0]) * MEMORY_FRACTION
        while size > self.padded(1):
            need = self.memory_bytes(self.padded(size))
            if need <= budget:
                break
            size = self.padded(max(1, int(size * 0.9 * budget / need)))
        return size

    def choose_micro(self, per_device: int) -> int | None:
        """Runs per vmapped micro-batch on one device, or None for all of its share.

        On a CPU a batch of runs whose temporaries spill out of the caches is memory bound:
        vmapping the bottleneck network (width 1000, batch 32) over 64 runs per device ran
        3x slower per run than over 8 to 16. So where a device's share of a chunk needs more
        than MICRO_TUNE_ABOVE_BYTES of temporaries (XLA's memory analysis of the step), the
        step is timed with the whole share and at 8, 16, 32, ... runs per device, on every
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
        if self.micro_override is not None:
            micro = _round_up(self.micro_override, m)
            return micro if 0 < micro < per_device else None
        if self.devices[0].platform != "cpu" or per_device <= m:
            return None
        if largest_step_value(self.exp, self.static, self.per_seed) < MICRO_TUNE_MIN_VALUE:
            return None  # small per-run values fuse into one kernel: nothing to spill
        whole = _round_up(per_device, m)
        # the whole share first (the default), then 8, 16, 32, ... up to it
        sizes = [whole] + [m << i for i in range(20) if (m << i) < whole]
        work = len(self.group.runs) * self.sweep.steps  # run-steps of the whole group
        key = self._tuning_key()
        known = _tuning_load().get(key)
        if known and not {"temp_per_run", "ended", "work", "rates"} <= known.keys():
            known = None  # written by another version: measure again
        covers = known and known["ended"] != "budget" and \
            max(map(int, known["rates"]), default=0) >= whole
        if known and (covers or work <= known["work"] or not known["rates"]):
            self.micro_rates = {int(k): v for k, v in known["rates"].items()}
            temp_per_run = known["temp_per_run"]
        else:
            t0 = time.perf_counter()
            tuner = _MicroTuner(self, whole)
            temp_per_run, ended = tuner.temp_per_run, "peak"
            if temp_per_run * per_device > MICRO_TUNE_ABOVE_BYTES:
                self.micro_rates, ended = tuner.rates(sizes, work, t0)
            self.tune_s += time.perf_counter() - t0
            _tuning_save(key, {"temp_per_run": temp_per_run, "ended": ended, "work": work,
                               "rates": {str(k): v for k, v in self.micro_rates.items()}})
        if temp_per_run * per_device <= MICRO_TUNE_ABOVE_BYTES:
            return None  # nothing to spill
        return pick_micro(self.micro_rates, per_device)

    def _tuning_key(self) -> str:
        static = {k: (np.dtype(v).name if k == "dtype" else v) for k, v in self.static.items()
                  if k != "steps"}  # the step's cost does not depend on the run length
        return "|".join([self.exp.name, repr(sorted(static.items())),
                         f"{self.n_devices}x{self.devices[0].device_kind}",
                         platform.processor() or platform.machine(), f"jax {jax.__version__}"])

    def __call__(self, runs: list[Run]):
        """Dispatch one chunk (padded); returns device arrays without blocking."""
        n = len(runs)
        size = self.batch or self.padded(n)
        pad = size - n
        dyn, seeds = run_arrays(list(runs) + [runs[-1]] * pad, self.dyn_names)
        return self.compiled(size)(dyn, seeds, np.uint32(runs[0].seed))


def largest_step_value(exp: Experiment, static: dict, shared: bool) -> int:
    """Bytes of the largest value one step of one run computes, from the step's jaxpr on
    abstract inputs (nothing is compiled or run)."""
    dyn = {k: jax.ShapeDtypeStruct((), jnp.float64) for k in exp.dynamic_names}
    seed = jax.ShapeDtypeStruct((), jnp.uint32)
    data = (jax.eval_shape(lambda: exp.make_data(jax.random.PRNGKey(0), static))
            if shared else None)
    hp, k_step, data, state = jax.eval_shape(
        lambda d, s, x: run_setup(exp, static, d, s, x), dyn, seed, data)
    jaxpr = jax.make_jaxpr(lambda st, k, h, x: exp.step(st, k, static, h, x))(
        state, k_step, hp, data)
    return max((_value_bytes(v) for eqn in _equations(jaxpr.jaxpr) for v in eqn.outvars),
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


def _micro_batched(vrun: Callable, micro: int | None, runs_args: tuple, data):
    """``vrun(*runs_args, data)`` over the leading (run) axis, ``micro`` runs at a time
    through ``lax.map`` (all at once if ``micro`` is None or covers them)."""
    n = jax.tree.leaves(runs_args)[0].shape[0]
    if micro is None or micro >= n:
        return vrun(*runs_args, data)
    split = functools.partial(jax.tree.map, lambda x: x.reshape((n // micro, micro)
                                                                + x.shape[1:]))
    out = jax.lax.map(lambda a: vrun(*a, data), split(runs_args))
    return jax.tree.map(lambda x: x.reshape((n,) + x.shape[2:]), out)


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


def _round_up(n: int, k: int) -> int:
    return -(-n // k) * k


#: Primitives that XLA's CPU client runs as LAPACK calls.
LAPACK_PRIMITIVES = frozenset({"eigh", "eig", "qr", "svd", "cholesky", "lu", "schur",
                               "householder_product", "geqrf", "geqp3", "tridiagonal",
                               "tridiagonal_solve", "hessenberg", "orgqr"})


def _equations(jaxpr):
    """Every equation of a jaxpr, those of its sub-jaxprs (loop bodies, branches) included."""
    for eqn in jaxpr.eqns:
        yield eqn
        for v in eqn.params.values():
            for sub in (v if isinstance(v, (tuple, list)) else (v,)):
                inner = getattr(sub, "jaxpr", sub)  # ClosedJaxpr -> Jaxpr
                if hasattr(inner, "eqns"):
                    yield from _equations(inner)


def uses_lapack(sweep: Sweep, exp: Experiment, probes=()) -> bool:
    """Whether any group's run function calls LAPACK (eigvalsh, qr, ...), found by tracing
    it to a jaxpr on abstract inputs (no device is touched, the backend is not started)."""
    return any(group_uses_lapack(exp, sweep, st, probes) for st in static_signatures(sweep, exp))


def static_signatures(sweep: Sweep, exp: Experiment) -> list[dict]:
    """The distinct static hyperparameter values of the sweep's groups, without planning its
    runs (which costs seconds for a million of them)."""
    names = exp.static_names
    if not any(n in g for g in (sweep.grids or [sweep.grid]) + [sweep.zip or {}]
               for n in names):
        _, hp = next(sweep.point_hps())
        return [{n: hp[n] for n in names}]
    sigs = {tuple(hp[n] for n in names) for _, hp in sweep.point_hps()}
    return [dict(zip(names, sig)) for sig in sorted(sigs, key=repr)]


def group_uses_lapack(exp: Experiment, sweep: Sweep, group_static: dict, probes=()) -> bool:
    static = {**group_static, "dtype": DTYPES[sweep.precision], "steps": sweep.steps}
    run = make_run_fn(exp, static, sweep.log.steps(sweep.steps), probes,
                      diverge_above=sweep.diverge_above)
    dyn = {k: jax.ShapeDtypeStruct((), jnp.float64) for k in exp.dynamic_names}
    seed = jax.ShapeDtypeStruct((), jnp.uint32)
    jaxpr = jax.make_jaxpr(lambda d, s: run(d, s, None))(dyn, seed)
    return any(eqn.primitive.name in LAPACK_PRIMITIVES for eqn in _equations(jaxpr.jaxpr))


def use_cpu_cores() -> int | None:
    """Give JAX one CPU device per usable core, before its backend starts; returns the count
    set, or None if it was left alone.

    XLA's CPU client runs an elementwise kernel on one thread unless its arrays are large
    (from about 256 KiB, i.e. 65,536 float32 runs, it splits them): a chunk of cheap
    per-run steps used one core of two. One device per core and the chunk sharded over them
    (as on several GPUs) uses them all: measured on the mean model, 2 cores, 16,384 runs,
    1.3e8 -> 2.8e8 run·steps/s. Results do not depend on the device count (tested).

    Not for programs that call LAPACK (``uses_lapack``): XLA's CPU client deadlocked with 2
    devices on an eigvalsh fed by a dot inside a conditional in a scan (the bottleneck's NTK
    probe; reproduced in a 10-line program, with or without synchronous dispatch).

    Left alone when the user chose (``--xla_force_host_platform_device_count`` in XLA_FLAGS,
    ``jax_num_cpu_devices`` set, or ``JAXDYN_CPU_DEVICES``: a count, 0 = leave alone), or
    when the backend is already running. Only the CPU client is affected; on a GPU or TPU
    the engine uses those devices as before.
    """
    n = cpu_devices_wanted()
    if n is None:
        return None
    jax.config.update("jax_num_cpu_devices", n)
    return n


def cpu_devices_wanted() -> int | None:
    """How many CPU devices ``use_cpu_cores`` would set up now, or None if it would not."""
    from jax._src import xla_bridge

    if "xla_force_host_platform_device_count" in os.environ.get("XLA_FLAGS", ""):
        return None
    if jax.config.jax_num_cpu_devices != -1 or xla_bridge.backends_are_initialized():
        return None
    want = os.environ.get("JAXDYN_CPU_DEVICES")
    try:
        n = int(want) if want is not None else len(os.sched_getaffinity(0))
    except (ValueError, AttributeError):
        n = os.cpu_count() or 1
    return n if n > 1 else None


def reuse_freed_memory() -> bool:
    """Ask glibc's malloc to keep freed memory for reuse instead of handing it back to the
    kernel: a process-wide setting, made by ``jaxdyn run`` and ``jaxdyn bench`` (not on
    import). Returns whether it was set.

    Each chunk's outputs (tens of MB) and the writer's Arrow buffers are allocated and freed
    once per chunk; above glibc's mmap threshold each allocation is a fresh mapping whose
    pages fault in again on first touch. Measured with ``jaxdyn run`` on the mean model
    (65,536 runs x 10,000 steps, 2 CPU devices, cold, on and off alternately, 3 each): wall
    4.27 -> 4.01 s on average, the writer thread 1.20 -> 0.96 s busy. The resident memory
    then stays at its peak, which a sweep reaches with its first chunks anyway. Off with
    ``JAXDYN_MALLOPT=0``; nothing happens off glibc."""
    import ctypes

    if os.environ.get("JAXDYN_MALLOPT", "1") == "0" or platform.system() != "Linux":
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # musl and other C libraries: no mallopt
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3
    return bool(mallopt(m_mmap_threshold, 1 << 30)) and bool(mallopt(m_trim_threshold, 1 << 31))


def device_memory_bytes(device) -> float:
    try:
        stats = device.memory_stats()
    except Exception:  # noqa: BLE001 - backends without memory stats
        stats = None
    if stats and stats.get("bytes_limit"):
        return float(stats["bytes_limit"])
    try:
        return float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return 8e9


def device_description() -> str:
    devs = jax.local_devices()
    kinds = sorted({getattr(d, "device_kind", d.platform) for d in devs})
    return f"{len(devs)}x {', '.join(kinds)} ({jax.default_backend()})"


# ---- the sweep loop ----------------------------------------------------------------------
def run_sweep(sweep: Sweep, exp: Experiment, store, *, chunk_size: int | None = None,
              micro_batch: int | None = None, progress: Callable | None = None, probes=None,
              process_index: int = 0, process_count: int = 1) -> dict:
    """Run every run of ``sweep`` not already in ``store``; returns a summary dict.

    The chunk plan is a pure function of the sweep (and the chunk size): each group's runs,
    in a fixed order, cut into blocks. Block ``b`` (numbered across groups) belongs to process
    ``b % process_count``, so processes of a multi-host run own disjoint runs however their
    views of what is done differ. A block's done runs are skipped; a fully done block is not
    run at all.
    """
    t0 = time.perf_counter()
    if probes is None:
        probes = resolve_probes(sweep, exp)
    all_runs = sweep.runs()
    done = store.done_run_ids()
    summary = {"runs_total": len(all_runs), "runs_done_before": 0, "runs_run": 0,
               "diverged": 0, "compile_s": 0.0, "chunks": 0, "steps": sweep.steps}
    work, block = [], 0
    for g in plan_groups(sweep, exp, all_runs):
        runner = None
        size = chunk_size or sweep.chunk_size
        # chunks of a shared-data experiment never span seeds: size them for one seed's runs
        per_seed = shares_data(exp, g.static)
        n_max = len(g.runs)
        if per_seed:
            n_max = max(Counter(r.seed for r in g.runs).values())
        if size is None:  # automatic size: needs the compiled program
            runner = ChunkRunner(exp, sweep, g, probes, micro_batch)
            size = runner.choose_chunk(n_max, None)
        for c in chunks_of(g, size, per_seed):
            mine = block % process_count == process_index
            block += 1
            # in run_id order: the store writes rows sorted by run_id, and a run's results
            # do not depend on its place in the batch (tested)
            todo = sorted((r for r in c if r.run_id not in done), key=lambda r: r.run_id)
            if mine:
                summary["runs_done_before"] += len(c) - len(todo)
            if not mine or not todo:
                continue
            if runner is None:
                runner = ChunkRunner(exp, sweep, g, probes, micro_batch)
                runner.choose_chunk(n_max, size)
            work.append((runner, g, todo))
    n_todo = sum(len(c) for _, _, c in work)
    if progress:
        progress("start", total_runs=n_todo, total_chunks=len(work))
    state = {"pid": os.getpid(), "host": platform.node(), "process_index": process_index,
             "started": time.time(),
             "chunks_total": len(work), "chunks_done": 0, "runs_total": n_todo,
             "runs_done": 0, "steps": sweep.steps, "finished": None}
    store.write_progress(state, process_index)

    writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="jaxdyn-writer")
    pending_write: Future | None = None
    # write_s: the writer thread's busy time (device→host copy, Arrow, Parquet, fsync);
    # write_wait_s: how long the sweep loop stood still waiting for it (what writing costs)
    summary["write_s"] = summary["write_wait_s"] = 0.0

    def finish_write(fut: Future) -> None:
        tw = time.perf_counter()
        n_div, busy = fut.result()
        summary["write_wait_s"] += time.perf_counter() - tw
        summary["diverged"] += n_div
        summary["write_s"] += busy

    try:
        for i, (runner, g, chunk) in enumerate(work):
            tc = time.perf_counter()
            out = runner(chunk)  # async dispatch: computes while the last chunk writes
            jax.block_until_ready(out)
            wall = time.perf_counter() - tc
            if pending_write is not None:
                finish_write(pending_write)
                store.write_progress(state, process_index)
            pending_write = writer.submit(_write_chunk, store, exp, sweep, runner, g, chunk,
                                          out, wall)
            state["chunks_done"] += 1
            state["runs_done"] += len(chunk)
            summary["runs_run"] += len(chunk)
            summary["chunks"] += 1
            if progress:
                progress("chunk", runs=len(chunk), wall=wall, index=i)
        if pending_write is not None:
            finish_write(pending_write)
    finally:
        writer.shutdown(wait=True)
    state["finished"] = time.time()
    store.write_progress(state, process_index)
    runners = list({id(r): r for r, *_ in work}.values())
    summary["compile_s"] = sum(r.compile_s for r in runners)
    summary["compiled_programs"] = sum(len(r._compiled) for r in runners)
    summary["tune_s"] = sum(r.tune_s for r in runners)
    summary["micro_batch"] = sorted({r.micro or 0 for r in runners})
    summary["wall_s"] = time.perf_counter() - t0
    summary["run_steps_per_s"] = summary["runs_run"] * sweep.steps / max(summary["wall_s"], 1e-9)
    return summary


def _write_chunk(store, exp, sweep, runner, group, chunk, out, wall) -> tuple[int, float]:
    """Copy a finished chunk to the host and commit its parts; returns (diverged runs, busy
    seconds)."""
    t0 = time.perf_counter()
    curves, final, alive, dstep, *saved = jax.device_get(out)
    n = len(chunk)
    alive = np.asarray(alive[:n])
    dstep = np.asarray(dstep[:n])
    curves = {k: np.asarray(v[:n]) for k, v in curves.items()}
    final = {k: np.asarray(v[:n]) for k, v in final.items()}
    params = None
    if saved:  # (path, leaf (runs, [log points,] *shape)) in flattening order
        params = [(jax.tree_util.keystr(p), np.asarray(v[:n]))
                  for p, v in jax.tree_util.tree_flatten_with_path(saved[0])[0]]
    store.write_chunk(sweep, exp, group, chunk, runner.log_steps, curves, final, alive, dstep,
                      wall, params=params)
    return int((~alive).sum()), time.perf_counter() - t0
