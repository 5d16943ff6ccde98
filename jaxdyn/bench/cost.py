"""The per-chunk cost model: FLOPs and bytes of one engine chunk from loop-free programs.

Owns: ``chunk_cost`` (XLA's cost analysis of the engine's ``once``, ``step`` and ``measure``
pieces at a chunk's batch, combined as once + steps × step + measures × measure, because XLA
counts a while loop's body once) and the note saying whether a figure is exact or a lower
bound (``_cost_note``).

Must not: time anything or run a chunk; it compiles abstract programs only.
"""

from __future__ import annotations

from jaxdyn.bench.timing import _cost, _has_while


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

    from jaxdyn.engine.program import _all_finite as all_finite, _freeze as freeze

    dt = static["dtype"]
    bound = float("inf") if bound is None else float(bound)

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
