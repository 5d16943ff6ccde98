"""The device's own limits, measured in the same process as the cases they are compared with.

Owns: the sharding of an array's axis 0 over every local device (``every_device_sharding``)
and running a function on every device at once (``on_every_device``), the float32 matmul and
copy ceilings of all devices together (``measure_ceilings``), and the check of what XLA's
cost analysis counts for a while loop on this backend (``loop_accounting_check``).

Must not: run the engine or any experiment; the ceilings use only matmuls and copies.
"""

from __future__ import annotations

import numpy as np

from jaxdyn.bench.timing import _best_time, _block, _cost, _device_memory


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
