"""Unit tests of the engine's and the store's pieces, each against a closed form or a
hand-built case (the end-to-end guarantees are in test_engine, test_faults, test_micro_batch)."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import jaxdyn
from jaxdyn import engine, spec, store
from jaxdyn.engine import plan, program

LAM = 3.0


def _quadratic(lam=LAM):
    """GD on f(w) = λw²/2 from w0 = 1: w_t = (1 − ηλ)^t, diverges iff ηλ > 2."""
    return jaxdyn.Experiment(
        name="unit.quadratic", doc="", params=(jaxdyn.Param("lr", 0.1, float),
                                               jaxdyn.Param("k", 1, int, static=True)),
        metrics=(jaxdyn.Metric("w"),),
        init=lambda key, static, hp, data: {"w": jnp.ones((static["k"],), static["dtype"])},
        step=lambda s, key, static, hp, data: {"w": s["w"] - hp["lr"] * lam * s["w"]},
        measure=lambda s, static, hp, data: {"w": s["w"][0]})


def _sweep(grid, steps=6, **kw):
    exp = _quadratic()
    doc = {"name": "u", "experiment": exp.name, "steps": steps, "log": {"every": 2},
           "precision": "float64", "grid": grid, **kw}
    return spec.validate(doc, lambda n: exp.params), exp


# ---- program --------------------------------------------------------------------------------
@pytest.mark.parametrize("every,want", [(1, [1, 1, 1, 1, 1]), (3, [1, 0, 1, 0, 1]),
                                        (100, [1, 0, 0, 0, 1])])
def test_probe_schedule(every, want):
    assert program.probe_schedule(np.array([0, 2, 4, 6, 8]), every).astype(int).tolist() == want


def test_run_fn_is_the_closed_form_and_freezes_a_diverging_run():
    exp = _quadratic()
    static = {"k": 1, "dtype": jnp.float64, "steps": 6}
    log = np.array([0, 2, 4, 6])
    run = jax.jit(program.make_run_fn(exp, static, log, diverge_above=10.0))
    with jax.enable_x64(True):
        curves, final, alive, dstep = run({"lr": jnp.float64(0.1)}, jnp.uint32(0), None)
        np.testing.assert_allclose(curves["w"], (1 - 0.3) ** log, rtol=1e-14)
        assert bool(alive) and int(dstep) == -1 and float(final["w"]) == pytest.approx(0.7 ** 6)
        # ηλ = 3: w_t = (−2)^t reaches |w| ≥ 10 at step 4 (16): frozen at w_3 = −8
        curves, final, alive, dstep = run({"lr": jnp.float64(1.0)}, jnp.uint32(0), None)
        assert not bool(alive) and int(dstep) == 4
        assert float(final["w"]) == -8.0
        np.testing.assert_array_equal(np.isnan(np.asarray(curves["w"])), [False, False, True,
                                                                            True])


def test_micro_batched_keeps_each_run_in_its_place():
    """``lax.map`` over micro-batches gives every run its own result, in order (equal up to
    the last bit: XLA may contract a*b + d into an FMA differently per loop shape)."""
    vrun = jax.vmap(lambda a, b, d: (a * b + d) * a, in_axes=(0, 0, None))
    a, b = jnp.linspace(0, 1, 16), jnp.linspace(1, 2, 16)
    whole = vrun(a, b, 0.5)
    for micro in (4, 8, None):
        np.testing.assert_allclose(program.micro_batched(vrun, micro, (a, b), 0.5), whole,
                                   rtol=1e-15, atol=0)


def test_run_keys_come_from_the_seed_alone():
    k = program.data_key(jnp.uint32(7))
    np.testing.assert_array_equal(k, jax.random.fold_in(jax.random.PRNGKey(7), 2))


# ---- plan -----------------------------------------------------------------------------------
def test_plan_groups_by_static_value_and_chunks():
    sw, exp = _sweep({"lr": [0.1, 0.2, 0.3], "k": [1, 2]}, seeds=[0, 1])
    sw.params = exp.params
    runs = sw.runs()
    groups = plan.plan_groups(sw, exp, runs)
    assert [g.label for g in groups] == ["k=1", "k=2"]
    assert all(len(g.runs) == 6 for g in groups)
    assert plan.static_signatures(sw, exp) == [{"k": 1}, {"k": 2}]
    chunks = plan.chunks_of(groups[0], 4, per_seed=False)
    assert [len(c) for c in chunks] == [4, 2]
    per_seed = plan.chunks_of(groups[0], 4, per_seed=True)
    assert all(len({r.seed for r in c}) == 1 for c in per_seed)
    assert sorted(r.run_id for c in per_seed for r in c) == sorted(r.run_id for r in
                                                                   groups[0].runs)
    assert plan._round_up(9, 8) == 16 and plan._round_up(16, 8) == 16


# ---- runner ---------------------------------------------------------------------------------
def test_chunk_runner_pads_and_matches_single_runs():
    sw, exp = _sweep({"lr": [0.05, 0.1, 0.2]}, seeds=[0, 1, 2])
    with jax.enable_x64(True):
        g = plan.plan_groups(sw, exp, sw.runs())[0]
        r = engine.ChunkRunner(exp, sw, g)
        size = r.choose_chunk(len(g.runs), 5)
        assert size == 5 and r.batch % (plan.RUNS_PER_DEVICE_MULTIPLE * r.n_devices) == 0
        chunk = g.runs[:5]
        curves, final, alive, dstep = jax.device_get(r(chunk))
        for i, run_ in enumerate(chunk):
            want = (1 - LAM * run_.hp["lr"]) ** np.array([0, 2, 4, 6])
            np.testing.assert_allclose(curves["w"][i], want, rtol=1e-14)
        assert alive[:5].all()


# ---- store ----------------------------------------------------------------------------------
def test_part_names_and_layout(tmp_path):
    name = store.part_name(3, 1, "abcdef0123456789")
    assert store.PART_GROUP_RE.match(name).group(1) == "g003"
    assert name.startswith("part-g003-p1-abcdef0123456789-") and name.endswith(".parquet")
    assert store.lock_name("s") == ".s.lock" and store.lock_name("s", 2) == ".s.lock.2"
    for n in (".s.lock", ".s.lock.1", ".s.lockx", ".s2.lock"):
        (tmp_path / n).touch()
    assert sorted(p.name for p in store.lock_files(tmp_path, "s")) == [".s.lock", ".s.lock.1"]
    assert store.param_column("['params']['w'][0]") == "params.w.0"


def test_committed_parts_excludes_uncommitted_chunks(tmp_path):
    d = tmp_path / "s"
    for t in store.TABLES:
        (d / t).mkdir(parents=True)
    t = pa.table({"run_id": ["a"]})
    for n in ("part-g000-p0-a-1.parquet", "part-g000-p0-b-2.parquet"):
        pq.write_table(t, d / store.CURVES / n)
    pq.write_table(t, d / store.RUNS / "part-g000-p0-a-1.parquet")
    runs, curves, params = store.committed_parts(d, store.CURVES, store.PARAMS)
    assert [p.name for p in runs] == [p.name for p in curves] == ["part-g000-p0-a-1.parquet"]
    assert params == []


def test_read_manifest_refuses_damage_and_other_versions(tmp_path):
    with pytest.raises(store.StoreError, match="no manifest.json"):
        store.read_manifest(tmp_path)
    (tmp_path / store.MANIFEST).write_text("[1, 2]")
    with pytest.raises(store.StoreError, match="not a JSON object"):
        store.read_manifest(tmp_path)
    (tmp_path / store.MANIFEST).write_text("{broken")
    with pytest.raises(store.StoreError, match="unreadable manifest"):
        store.read_manifest(tmp_path)
    (tmp_path / store.MANIFEST).write_text(json.dumps({"schema_version": 99}))
    with pytest.raises(store.StoreError, match="newer jaxdyn"):
        store.read_manifest(tmp_path)
    (tmp_path / store.MANIFEST).write_text(json.dumps({"schema_version": 1, "x": 2}))
    assert store.read_manifest(tmp_path)["x"] == 2


def test_force_twice_never_collides(tmp_path):
    for i in range(3):  # three different sweeps of one name, within a second
        s, _ = _sweep({"lr": [0.1]}, steps=6 + 2 * i)
        st = store.SweepStore(tmp_path, "u")
        st.open(s, force=True)
        st.close()
    aside = sorted(p.name for p in tmp_path.iterdir() if ".replaced-" in p.name)
    assert len(aside) == 2 and len(set(aside)) == 2
