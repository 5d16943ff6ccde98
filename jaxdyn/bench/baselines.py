"""Hand-written JAX baselines of the mean model, the same math and steps as the engine's.

Owns: the mean model's pieces as plain functions (``_mm_pieces``: the engine's
initialisation, gradient and seven metrics), the lr range of the baselines (``LR_START``,
``LR_STOP``, ``_lrs``) and the three baselines: a per-run Python loop around a jitted step
(``baseline_python_loop``), a per-run jitted scan (``baseline_scan_per_run``) and a
hand-written ``jit(vmap)`` kernel sharded over every local device (``baseline_hand_kernel``).
``benchmarks/bench_engine.py`` runs these same functions.

Must not: use the engine (no freezing, no chunk planning, no Parquet): they are what the
engine is measured against.
"""

from __future__ import annotations

import time

import numpy as np

from jaxdyn.bench.timing import _block, _walls

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
                         init_scale: float = 0.01, repeats: int = 1,
                         detail: bool = False) -> dict:
    """(a) a Python loop per run around a jitted step; logs to the host every log_every.
    ``repeats``: timed passes over all runs after the warm-up, the fastest reported;
    ``detail``: the result also holds every pass's seconds (``walls_s``)."""
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

    def all_runs():
        for r in range(runs):
            one_run(np.float32(lrs[r]), r, steps)

    walls = _walls(all_runs, max(1, repeats))
    wall = min(walls)
    out = {"impl": "per-run Python loop around a jitted step", "runs": runs, "steps": steps,
           "wall_s": wall, "compile_s": float("nan"), "run_steps_per_s": runs * steps / wall}
    if detail:
        out["walls_s"] = walls
    return out


def baseline_scan_per_run(runs: int, steps: int, log_every: int, d: int = 100,
                          init_scale: float = 0.01, repeats: int = 1,
                          detail: bool = False) -> dict:
    """(b) one jitted lax.scan (of fori_loops) per run, one run per call. ``compile_s`` is
    the first call (compile + one run). ``repeats``: timed passes over all runs, the fastest
    reported; ``detail``: the result also holds every pass's seconds (``walls_s``) and the
    first call's again, by the name that says what it is (``warmup_call_s``)."""
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

    walls = _walls(all_runs, max(1, repeats))
    wall = min(walls)
    out = {"impl": "per-run jitted lax.scan, one run per call", "runs": runs, "steps": steps,
           "wall_s": wall, "compile_s": comp, "run_steps_per_s": runs * steps / wall}
    if detail:
        out.update(walls_s=walls, warmup_call_s=comp)
    return out


def baseline_hand_kernel(runs: int, steps: int, log_every: int, seeds: int = 4, d: int = 100,
                         init_scale: float = 0.01, chunk: int | None = None,
                         repeats: int | None = None, detail: bool = False) -> dict:
    """(c) hand-written jit(vmap) over all runs, each parameter its own (runs,) leaf, no
    freezing, no Parquet: the device-limit reference. Compile timed separately. With
    ``chunk``: the runs in consecutive calls of ``chunk`` runs (the engine's batch), which
    can be faster than one call when a chunk's state stays in cache.

    ``repeats``: timed passes over all runs in all, the first included, the fastest
    reported (default: the first, and two more if it took under 1 s). ``detail``: the
    result also holds every pass's seconds (``walls_s``), the first's (``first_call_s``),
    end to end as its author waits for it (``end_to_end_s`` = compile + first pass, and
    ``end_to_end_run_steps_per_s``) and the runs whose final loss is not finite
    (``nonfinite_runs``, from one more, untimed pass)."""
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
    if repeats is None:
        walls = [first] + ([] if first > 1.0 else _walls(all_chunks, 2))
    else:
        walls = [first] + _walls(all_chunks, max(1, repeats) - 1)
    wall = min(walls)
    n = size * len(parts)
    how = "one call of all runs" if size == len(lrs) else f"{len(parts)} calls of {size} runs"
    out = {"impl": f"hand-written jit(vmap) kernel, {how} (steady, logs to host)",
           "runs": n, "steps": steps, "wall_s": wall, "compile_s": comp,
           "run_steps_per_s": n * steps / wall}
    if detail:
        bad = 0
        for a, b in parts:  # the logs' first metric is the loss: (runs, log points)
            loss = np.asarray(jax.device_get(compiled(a, b))[0])
            bad += int((~np.isfinite(loss[:, -1])).sum())
        out.update(walls_s=walls, first_call_s=first, end_to_end_s=comp + first,
                   end_to_end_run_steps_per_s=n * steps / (comp + first),
                   nonfinite_runs=bad)
    return out
