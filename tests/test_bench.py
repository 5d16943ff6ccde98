"""``jaxdyn bench``: the command end to end on its tiny internal suite, and the per-chunk cost
model it reports FLOP/s and bytes/s from, checked against XLA's own count of a loop-free
(fully unrolled) program."""

import json
import time

import jax
import jax.numpy as jnp
import pandas as pd
import pytest

from jaxdyn import bench, engine, experiments, spec


def test_bench_tiny_suite(cli, tmp_path):
    out = tmp_path / "bench"
    t0 = time.perf_counter()
    code, stdout, err = cli("bench", "--suite", "tiny", "--out", out, "--no-torch", "--quiet")
    elapsed = time.perf_counter() - t0
    assert code == 0, err
    df = pd.read_parquet(out / "bench.parquet")
    assert set(bench.COLUMNS) <= set(df.columns)

    eng = df[df.kind == "engine"].set_index("case")
    steps, _, small, large = bench._SIZES["eos.mean_model"][bench._SUITE_INDEX["tiny"]]
    assert sorted(eng.index) == ["large", "small"]
    assert (eng.experiment == "eos.mean_model").all()
    assert eng.loc["small", "runs"] == small and eng.loc["large", "runs"] == large
    assert (eng.steps == steps).all()
    # throughput is runs x steps over the measured wall time, which lies inside the command's
    for _, r in eng.iterrows():
        assert r.run_steps_per_s == pytest.approx(r.runs * r.steps / r.wall_s, rel=1e-9)
        assert 0 < r.compile_s <= r.wall_s < elapsed
        # the steady state excludes compile: faster than end to end
        assert r.steady_run_steps_per_s > r.run_steps_per_s
        assert r.steady_s_per_step == pytest.approx(r.steady_chunk_s / r.steps)
        # achieved FLOP/s: positive and not beyond a few times the measured matmul ceiling
        # (timing noise on a shared machine can move either figure)
        assert r.flop_per_s > 0 and r.flop_ceiling > 0
        assert r.flop_per_s <= 4 * r.flop_ceiling
        assert r.flop_frac == pytest.approx(r.flop_per_s / r.flop_ceiling)
        assert r.bytes_per_s > 0 and r.bytes_ceiling > 0
        assert r.flop_per_s == pytest.approx(r.flops_per_chunk / r.steady_chunk_s)
        # the loop-aware count exceeds XLA's raw figure, which counts a loop body once
        assert r.flops_per_chunk > r.xla_raw_flops > 0
        assert r.xla_peak_bytes > 0
    # a larger batch does more work per chunk step
    assert eng.loc["large", "flops_per_chunk"] > eng.loc["small", "flops_per_chunk"]

    base = df[df.kind == "baseline"]
    assert len(base) == 3
    e = eng.loc["large"]
    for _, r in base.iterrows():
        assert r.run_steps_per_s == pytest.approx(r.runs * r.steps / r.wall_s, rel=1e-9)
        assert r.engine_over_this == pytest.approx(e.run_steps_per_s / r.run_steps_per_s)
        assert r.steps == steps

    md = (out / "bench.md").read_text()
    assert "## Engine, end to end" in md and "## Baselines" in md
    assert "eos.mean_model" in md and "GFLOP/s" in md and "PyTorch baselines not run" in md
    assert md in stdout
    meta = json.loads((out / "bench.json").read_text())["meta"]
    assert meta["ceilings"]["flop_per_s"] > 0 and meta["ceilings"]["bytes_per_s"] > 0
    assert meta["suite"] == "tiny"


def _unrolled_chunk(exp, static, T: int, batch: int):
    """One chunk as a single loop-free program (the engine's math, its loops unrolled in
    Python): init, T steps with the finiteness check and freeze, measures at steps 0 and T."""
    def chunk(hp, seeds, data_seed):
        data = None
        if exp.make_data is not None:
            data = exp.make_data(jax.random.fold_in(jax.random.PRNGKey(data_seed), 2), static)

        def one(h, seed):
            key = jax.random.PRNGKey(seed)
            st = exp.init(jax.random.fold_in(key, 0), static, h, data)
            ks = jax.random.fold_in(key, 1)
            alive = engine.program._all_finite(st)
            first = exp.measure(st, static, h, data)
            for i in range(T):
                new = exp.step(st, jax.random.fold_in(ks, i), static, h, data)
                ok = alive & engine.program._all_finite(new)
                st, alive = engine.program._freeze(ok, new, st), ok
            return first, exp.measure(st, static, h, data)

        return jax.vmap(one)(hp, seeds)

    S = jax.ShapeDtypeStruct
    hp = {k: S((batch,), static["dtype"]) for k in exp.dynamic_names}
    return bench._cost(jax.jit(chunk).lower(hp, S((batch,), jnp.uint32),
                                            S((), jnp.uint32)).compile())


def test_ceilings_are_every_device_at_once():
    """The ceilings are the total of every local device running its own product at the same
    time: one CPU device alone already runs a large matmul on all cores, so one device's
    figure times the device count (the old way) doubled the ceiling on 2 cores."""
    import numpy as np

    nd = len(jax.local_devices())
    ab = np.random.default_rng(0).normal(size=(nd, 2, 64, 64)).astype(np.float32)
    out = bench.on_every_device(lambda x: (x[0, 0] @ x[0, 1])[None])(
        jax.device_put(ab, bench.every_device_sharding()))
    assert out.shape == (nd, 64, 64) and len(out.sharding.device_set) == nd
    for i in range(nd):  # each device its own product
        np.testing.assert_allclose(out[i], ab[i, 0].astype(np.float64) @ ab[i, 1],
                                   rtol=1e-4, atol=1e-4)
    c = bench.measure_ceilings(max_n=256, min_copy_bytes=2.0 ** 20, min_total=0.0)
    assert f"on all {nd} device(s) at once" in c["how"]
    row = c["matmul_sizes"][0]
    assert row["n"] == 256
    assert row["flop_per_s"] == pytest.approx(nd * 2 * 256 ** 3 / row["seconds"])


def test_freed_memory_kept_for_reuse_unless_switched_off(monkeypatch):
    import platform

    monkeypatch.setenv("JAXDYN_MALLOPT", "0")
    assert engine.reuse_freed_memory() is False
    monkeypatch.delenv("JAXDYN_MALLOPT")
    glibc = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"
    assert engine.reuse_freed_memory() is glibc


def test_per_step_cost_matches_xla_count_of_unrolled_steps():
    """XLA counts a while loop's body once, so the bench builds a chunk's cost from a
    loop-free one-step program. Its per-step FLOPs must equal the marginal FLOPs of one more
    step in a fully unrolled chunk program (T = 8 vs 16 steps), as XLA counts them."""
    cases, skipped = bench.make_cases("tiny")
    assert not skipped
    sw = spec.parse(cases[0].toml, experiments.params_of)
    exp = experiments.get(sw.experiment)
    g = engine.plan_groups(sw, exp, sw.runs())[0]
    static = {**g.static, "dtype": jnp.float32, "steps": sw.steps}
    batch = 8
    model = bench.chunk_cost(exp, static, batch, n_measures=2, steps=8)
    a = _unrolled_chunk(exp, static, 8, batch)
    b = _unrolled_chunk(exp, static, 16, batch)
    step_flops = (b["flops"] - a["flops"]) / 8
    step_bytes = (b["bytes accessed"] - a["bytes accessed"]) / 8
    assert step_flops > 0
    assert model["flops_step"] == pytest.approx(step_flops, rel=0.05)
    # bytes depend on how XLA fuses neighbouring steps (no neighbour inside a while body)
    assert model["bytes_step"] == pytest.approx(step_bytes, rel=0.25)
    # and the whole chunk: once + steps x step + 2 measures, against the unrolled program
    # (which may share a few values between the pieces: the model is not below it)
    assert a["flops"] <= model["flops_chunk"] <= 1.3 * a["flops"]
    assert not {"step", "measure"} & set(model["loops"])


def test_loop_accounting_check_reports_what_xla_counts():
    lc = bench.loop_accounting_check()
    one = lc["matmul_flops"]
    # unrolled steps are counted step by step
    assert lc["unrolled_4_flops"] == pytest.approx(4 * lc["unrolled_1_flops"], rel=0.01)
    assert lc["unrolled_1_flops"] == pytest.approx(one, rel=0.01)
    # a while loop with a dynamic trip count (the engine's fori_loops): XLA counts its body
    # once, which is why the bench builds the chunk's cost from loop-free pieces
    assert lc["fori_loop_any_trip_count_flops"] == pytest.approx(one, rel=0.1)
    assert lc["while_body_counted_once"]
