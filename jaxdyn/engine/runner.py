"""The compiled chunk runner: ``jit(shard_map(micro-batched vmap(run)))`` for one group.

Owns: the device mesh of a group (the run axis split over all local devices, one CPU device
for programs that call LAPACK), compiling the chunk program per batch size, sizing chunks
from XLA's memory analysis (``choose_chunk``), padding, and dispatching a chunk.

Must not: decide which runs to run (the sweep loop does) or write anything.
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from jaxdyn.engine import tuning
from jaxdyn.engine.host import device_memory_bytes, group_uses_lapack
from jaxdyn.engine.plan import RUNS_PER_DEVICE_MULTIPLE, Group, _round_up
from jaxdyn.engine.program import (RUN_AXIS, data_key, group_static, make_run_fn, micro_batched,
                                   run_arrays, shares_data)
from jaxdyn.experiments.base import Experiment
from jaxdyn.spec import Run, Sweep

#: Largest chunk chosen automatically: throughput saturates well before this on CPU and GPU.
MAX_AUTO_CHUNK = 16384

#: Fraction of device (or host) memory a chunk may use.
MEMORY_FRACTION = 0.4



class ChunkRunner:
    """``jit(shard_map(vmap(run)))`` for one group: the run axis split over all local devices."""

    def __init__(self, exp: Experiment, sweep: Sweep, group: Group, probes=(),
                 micro_batch: int | None = None):
        self.exp, self.sweep, self.group = exp, sweep, group
        self.static = group_static(sweep, group.static)
        self.log_steps = sweep.log.steps(sweep.steps)
        self.devices = jax.local_devices()
        if (len(self.devices) > 1 and self.devices[0].platform == "cpu"
                and group_uses_lapack(exp, sweep, group.static, probes)):
            # several CPU devices deadlocked on LAPACK calls (see use_cpu_cores): one here
            self.devices = self.devices[:1]
        self.mesh = Mesh(np.array(self.devices), ("runs",))
        self.dyn_names = exp.dynamic_names
        stop = None
        if sweep.stop is not None:  # a goal (jaxdyn.adaptive): freeze runs that reach it
            from jaxdyn.adaptive._predicate import compile_stop

            stop = compile_stop(sweep.stop)
        run = make_run_fn(exp, self.static, self.log_steps, probes,
                          diverge_above=sweep.diverge_above, axis_name=RUN_AXIS,
                          save_params=sweep.save_params, stop=stop)
        shared = shares_data(exp, group.static)
        self.per_seed = shared

        def local_chunk(dyn, seeds, data_seed):
            """One device's share of a chunk: its runs, and the data they share, vmapped
            ``micro`` runs at a time (a sequential ``lax.map`` over micro-batches)."""
            data = None
            if shared:  # the same data on every device, each makes its own copy
                data = exp.make_data(data_key(data_seed), self.static)
            return micro_batched(jax.vmap(run, in_axes=(0, 0, None), axis_name=RUN_AXIS),
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
        """Runs per vmapped micro-batch on one device, or None for all of its share (see
        :func:`jaxdyn.engine.tuning.choose_micro`)."""
        return tuning.choose_micro(self, per_device)

    def __call__(self, runs: list[Run]):
        """Dispatch one chunk (padded); returns device arrays without blocking."""
        n = len(runs)
        size = self.batch or self.padded(n)
        pad = size - n
        dyn, seeds = run_arrays(list(runs) + [runs[-1]] * pad, self.dyn_names)
        return self.compiled(size)(dyn, seeds, np.uint32(runs[0].seed))
