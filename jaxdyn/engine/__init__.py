"""The sweep engine: group by static signature → compile once → chunk → vmap+scan → rows.

One training run is a pure function ``run(dynamic hyperparameters, seed) -> curves`` made of
the experiment's ``init``/``step``/``measure`` (:mod:`~jaxdyn.engine.program`). The engine
plans groups of runs that share their static hyperparameters and cuts them into chunks
(:mod:`~jaxdyn.engine.plan`), compiles one ``jit(shard_map(vmap(run)))`` per group with the
run axis split over all local devices (:mod:`~jaxdyn.engine.runner`, micro-batches from
:mod:`~jaxdyn.engine.tuning`), and runs the chunks while a background thread hands finished
ones to the store (:mod:`~jaxdyn.engine.sweep`). Host concerns — CPU device count, LAPACK,
malloc, device memory — live in :mod:`~jaxdyn.engine.host`.

Data flow one way: program ← plan ← host ← tuning ← runner ← sweep (each imports only those
to its left). This package's names below are what the rest of jaxdyn uses.
"""

from jaxdyn.engine.host import (cpu_devices_wanted, device_description, device_memory_bytes,
                                group_uses_lapack, reuse_freed_memory, use_cpu_cores,
                                uses_lapack)
from jaxdyn.engine.plan import (RUNS_PER_DEVICE_MULTIPLE, Group, chunks_of, group_label,
                                plan_groups, static_signatures)
from jaxdyn.engine.program import (DTYPES, RUN_AXIS, abstract_run_inputs, data_key,
                                   group_static, make_run_fn, micro_batched, probe_schedule,
                                   resolve_probes, run_arrays, run_setup, shares_data)
from jaxdyn.engine.runner import MAX_AUTO_CHUNK, MEMORY_FRACTION, ChunkRunner
from jaxdyn.engine.sweep import run_sweep
from jaxdyn.engine.tuning import largest_step_value, pick_micro

__all__ = ["ChunkRunner", "DTYPES", "abstract_run_inputs", "group_label", "group_static", "Group", "MAX_AUTO_CHUNK", "MEMORY_FRACTION", "RUN_AXIS",
           "RUNS_PER_DEVICE_MULTIPLE", "chunks_of", "cpu_devices_wanted", "data_key",
           "device_description", "device_memory_bytes", "group_uses_lapack",
           "largest_step_value", "make_run_fn", "micro_batched", "pick_micro", "plan_groups",
           "probe_schedule", "resolve_probes", "reuse_freed_memory", "run_arrays", "run_setup",
           "run_sweep", "shares_data", "static_signatures", "use_cpu_cores", "uses_lapack"]
