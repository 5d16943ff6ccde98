"""The host: what the machine and XLA's clients need around the programs.

Owns: the CPU device count (one device per core, ``use_cpu_cores``), the LAPACK detection
that keeps programs calling eigvalsh & co. on one CPU device (``uses_lapack``), glibc's
malloc setting (``reuse_freed_memory``), device memory and descriptions.

Must not: build run programs or plan chunks; it only reads traced programs and sets host
options.
"""

from __future__ import annotations

import os
import platform

import jax

from jaxdyn.engine.plan import static_signatures
from jaxdyn.engine.program import abstract_run_inputs, equations, make_run_fn
from jaxdyn.engine.program import group_static as program_group_static
from jaxdyn.experiments.base import Experiment
from jaxdyn.spec import Sweep

#: Primitives that XLA's CPU client runs as LAPACK calls.
LAPACK_PRIMITIVES = frozenset({"eigh", "eig", "qr", "svd", "cholesky", "lu", "schur",
                               "householder_product", "geqrf", "geqp3", "tridiagonal",
                               "tridiagonal_solve", "hessenberg", "orgqr"})


def uses_lapack(sweep: Sweep, exp: Experiment, probes=()) -> bool:
    """Whether any group's run function calls LAPACK (eigvalsh, qr, ...), found by tracing
    it to a jaxpr on abstract inputs (no device is touched, the backend is not started)."""
    return any(group_uses_lapack(exp, sweep, st, probes) for st in static_signatures(sweep, exp))


def group_uses_lapack(exp: Experiment, sweep: Sweep, group_static: dict, probes=()) -> bool:
    static = program_group_static(sweep, group_static)
    run = make_run_fn(exp, static, sweep.log.steps(sweep.steps), probes,
                      diverge_above=sweep.diverge_above)
    dyn, seed = abstract_run_inputs(exp)
    jaxpr = jax.make_jaxpr(lambda d, s: run(d, s, None))(dyn, seed)
    return any(eqn.primitive.name in LAPACK_PRIMITIVES for eqn in equations(jaxpr.jaxpr))


def use_cpu_cores() -> int | None:
    """Give JAX one CPU device per usable core, before its backend starts; returns the count
    set, or None if it was left alone.

    XLA's CPU client runs an elementwise kernel on one thread unless its arrays are large
    (from about 256 KiB, i.e. 65,536 float32 runs, it splits them): a chunk of cheap
    per-run steps used one core of two. One device per core and the chunk sharded over them
    (as on several GPUs) uses them all: on 2 cores it roughly doubled the throughput of a
    16,384-run mean-model chunk (figures in benchmarks/README.md, table of changes). Results
    do not depend on the device count (tested).

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
    pages fault in again on first touch. Keeping freed memory made a cold ``jaxdyn run`` of
    a mean-model sweep a few percent faster on average and cut the writer thread's busy time
    by about a fifth (on and off alternately; figures in benchmarks/README.md, table of
    changes). The resident memory then stays at its peak, which a sweep reaches with its
    first chunks anyway. Off with ``JAXDYN_MALLOPT=0``; nothing happens off glibc."""
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
