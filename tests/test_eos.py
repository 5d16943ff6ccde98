"""Edge-of-stability family: the sharpness probe against dense eigvalsh, the single neuron's
two regimes, the threshold ReLU network against NumPy and the seed's Figure 2 (seed 002; see
docs/science/eos.md), the notebook."""

import jax
import jax.numpy as jnp
import numpy as np
import pyarrow.dataset as ds
import pytest

import jaxdyn
from jaxdyn import probes
from jaxdyn.experiments import eos

from notebook_runner import execute_notebook


# ---- the sharpness probe ---------------------------------------------------------------------
@pytest.mark.parametrize("n,seed", [(5, 0), (12, 1), (40, 2), (80, 3)])
def test_lanczos_matches_dense_eigvalsh_on_random_problems(n, seed):
    """f(x) = ½xᵀAx + ¼Σ c_i x_i⁴ with random A: its Hessian at a random point is dense."""
    rng = np.random.default_rng(seed)
    M = rng.normal(size=(n, n))
    A = jnp.asarray(M + M.T)
    c = jnp.asarray(rng.uniform(0, 1, n))
    x = {"x": jnp.asarray(rng.normal(size=n))}

    def f(p):
        return 0.5 * p["x"] @ A @ p["x"] + 0.25 * jnp.sum(c * p["x"] ** 4)

    H = np.asarray(A) + np.diag(3 * np.asarray(c) * np.asarray(x["x"]) ** 2)
    ref = np.sort(np.linalg.eigvalsh(H))[::-1][:3]
    got = probes.sharpness_topk(f, x, k=3, method="lanczos", iters=min(n, 40))
    np.testing.assert_allclose(got, ref, rtol=1e-4)
    np.testing.assert_allclose(probes.dense_topk(f, x, 3), ref, rtol=1e-10)


def test_lanczos_on_mlp_with_3000_parameters():
    ks = jax.random.split(jax.random.PRNGKey(1), 5)
    X = jax.random.normal(ks[0], (64, 20), jnp.float64)
    Y = jnp.sin(X[:, :1])
    p = {"W1": jax.random.normal(ks[1], (20, 100), jnp.float64) / np.sqrt(20),
         "b1": jnp.zeros(100, jnp.float64),
         "W2": jax.random.normal(ks[2], (100, 10), jnp.float64) / 10,
         "W3": jax.random.normal(ks[3], (10, 1), jnp.float64) / 3}

    def f(q):
        h = jnp.tanh(jnp.tanh(X @ q["W1"] + q["b1"]) @ q["W2"])
        return 0.5 * jnp.mean((h @ q["W3"] - Y) ** 2)

    n = sum(v.size for v in jax.tree.leaves(p))
    assert n >= 3000
    flat, unravel = jax.flatten_util.ravel_pytree(p)
    H = np.asarray(jax.hessian(lambda v: f(unravel(v)))(flat))
    ref = np.sort(np.linalg.eigvalsh(0.5 * (H + H.T)))[::-1][:2]
    got = probes.sharpness_topk(f, p, k=2, method="lanczos", iters=30)
    np.testing.assert_allclose(got, ref, rtol=1e-3)


def test_probe_in_a_sweep_runs_on_its_own_schedule(cli, write_sweep, tmp_path):
    path = write_sweep("""
        name = "probe"
        experiment = "eos.mean_model"
        steps = 1000
        log = { every = 50 }
        precision = "float64"
        probes = { sharpness = { every = 200, k = 2, method = "lanczos", iters = 3 } }
        [grid]
        lr = [1e-3, 4e-3]
    """)
    code, _, err = cli("run", path, "--out", tmp_path, "--quiet")
    assert code == 0, err
    c = jaxdyn.load(tmp_path / "probe").curves()
    have = c.dropna(subset=["sharpness_1"])
    assert sorted(set(have.step)) == [0, 200, 400, 600, 800, 1000]
    assert c[~c.step.isin(have.step)].sharpness_1.isna().all()
    # Lanczos on HVPs equals the closed-form top eigenvalue of the 3x3 Hessian
    np.testing.assert_allclose(have.sharpness_1, have.sharpness, rtol=1e-8)
    assert (have.sharpness_2 <= have.sharpness_1 + 1e-12).all()


@pytest.mark.parametrize("bad,key", [
    ('{ sharpnes = { every = 10 } }', "probes.sharpnes"),
    ('{ sharpness = { every = 10, kk = 2 } }', "probes.sharpness.kk"),
    ('{ sharpness = { every = "often" } }', "probes.sharpness.every"),
])
def test_bad_probe_requests_exit_2(bad, key, cli, write_sweep, tmp_path):
    path = write_sweep(f"""
        name = "p"
        experiment = "eos.mean_model"
        steps = 10
        probes = {bad}
    """)
    code, _, err = cli("run", path, "--out", tmp_path / "o")
    assert code == 2 and f"'{key}'" in err and str(path) in err
    assert not (tmp_path / "o").exists()


# ---- single neuron -----------------------------------------------------------------------------
@pytest.mark.parametrize("link", list(eos.LINKS))
def test_single_neuron_sharpness_matches_finite_differences(link):
    rng = np.random.default_rng(0)
    f = eos.LINKS[link]
    for _ in range(10):
        x, y = rng.normal(0, 2, 2)
        p = {"x": jnp.float64(x), "y": jnp.float64(y)}
        h = 1e-4

        def grad(v):
            g = jax.grad(lambda q: f(q[0] * q[1]))(jnp.asarray(v))
            return np.asarray(g)

        H = np.stack([(grad([x + h, y]) - grad([x - h, y])) / (2 * h),
                      (grad([x, y + h]) - grad([x, y - h])) / (2 * h)], 1)
        ref = np.linalg.eigvalsh(0.5 * (H + H.T))[-1]
        assert float(eos.single_neuron_sharpness(p, link)) == pytest.approx(ref, rel=1e-6)
        # the second derivative at 0 is 1 for every link (the seed's normalisation)
        assert float(jax.grad(jax.grad(f))(0.0)) == pytest.approx(1.0)


def test_single_neuron_regimes(cli, write_sweep, tmp_path):
    """GF regime (ratio (y0²−x0²)η/2 < 1, small η): y∞² within 2 % of y0² − x0².
    EoS regime (ratio > 1): limiting sharpness in [0.85, 1.0]·2/η. The y0 range is the shipped
    sweep's [1, 23] (every η reaches ratio 5); the measured spread is recorded in
    benchmarks/results/eos_single_neuron_regimes.md."""
    path = write_sweep("""
        name = "sn"
        experiment = "eos.single_neuron"
        steps = 20000
        seeds = 3
        log = { points = 20, spacing = "log" }
        precision = "float64"
        [fixed]
        x0 = 0.3
        perturb = 0.01
        [grid]
        link = ["logcosh", "sqrt"]
        lr = [0.02, 0.05, 0.1, 0.25]
        y0 = { start = 1.0, stop = 23.0, num = 48, spacing = "log" }
    """)
    code, _, err = cli("run", path, "--out", tmp_path, "--quiet")
    assert code == 0, err
    res = jaxdyn.load(tmp_path / "sn")
    c0 = res.curves(columns=["conserved"], where=ds.field("step") == 0)
    r = res.runs.merge(c0.rename(columns={"conserved": "c0"})[["run_id", "c0"]], on="run_id")
    assert (r.status == "ok").all() and len(r) == len(res.runs)
    # y(0)² − x(0)² of the perturbed start, as logged at step 0
    ratio = r.c0 * r.lr / 2
    gf = r[(ratio <= 0.8) & (r.lr <= 0.1)]
    eos_ = r[(ratio >= 1.2) & (ratio <= 5)]
    assert len(gf) > 50 and len(eos_) > 50
    gf_err = np.abs(gf.final_y**2 / gf.c0 - 1)
    print(f"\nGF regime: |y∞²/(y0²−x0²) − 1| max {gf_err.max():.4f}, median "
          f"{gf_err.median():.4f} ({len(gf)} runs)")
    for lr, e in gf_err.groupby(gf.lr):
        print(f"  lr={lr}: max {e.max():.4f}, median {e.median():.4f} ({len(e)} runs)")
    assert gf_err.max() < 0.02
    es = eos_.final_sharpness * eos_.lr / 2
    print(f"EoS regime: sharpness·η/2 min {es.min():.4f}, median {es.median():.4f}, max "
          f"{es.max():.4f} ({len(eos_)} runs)")
    for (lr, link), e in es.groupby([eos_.lr, eos_.link]):
        rat = ratio[e.index]
        print(f"  lr={lr} {link}: min {e.min():.4f}, median {e.median():.4f}, max {e.max():.4f}"
              f" ({len(e)} runs, ratio {rat.min():.2f}-{rat.max():.2f})")
    assert set(eos_.lr) == {0.02, 0.05, 0.1, 0.25}
    assert (ratio[eos_.index].groupby(eos_.lr).max() > 4).all()  # every η reaches ratio ~5
    assert es.min() >= 0.85 and es.max() <= 1.0
    # the conserved quantity is what GD drifts from: exactly y² − x² in the table
    np.testing.assert_allclose(r.final_conserved, r.final_y**2 - r.final_x**2, rtol=1e-9)


# ---- threshold ReLU ------------------------------------------------------------------------------
def np_threshold_relu(am, ap, b, lam, xi, y, j):
    x = xi.copy()
    x[np.arange(len(y)), j] += lam * y
    f = (am * np.maximum(-x + b, 0) + ap * np.maximum(x + b, 0)).sum(1)
    return np.mean(np.logaddexp(0, -y * f))


def test_threshold_relu_loss_and_gradient_match_numpy():
    static = {"d": 30, "n_train": 64, "n_test": 16, "dtype": jnp.float64, "batch": 0}
    data = eos._tr_make_data(jax.random.PRNGKey(3), static)
    xi, y, j = (np.asarray(data[k]) for k in ("xi", "y", "j"))
    assert set(np.unique(y)) == {-1.0, 1.0} and j.min() >= 0 and j.max() < 30
    rng = np.random.default_rng(0)
    for _ in range(5):
        am, ap, b = rng.normal(0, 0.3, 3)
        lam = rng.uniform(1, 6)
        p = {"a_minus": jnp.float64(am), "a_plus": jnp.float64(ap), "b": jnp.float64(b)}
        hp = {"lam": jnp.float64(lam)}
        ref = np_threshold_relu(am, ap, b, lam, xi[:64], y[:64], j[:64])
        assert float(eos.threshold_relu_loss(p, static, hp, data)) == pytest.approx(ref, rel=1e-12)
        g = jax.grad(eos.threshold_relu_loss)(p, static, hp, data)
        h = 1e-6
        for k, i in (("a_minus", 0), ("a_plus", 1), ("b", 2)):
            e = np.zeros(3)
            e[i] = h
            fd = (np_threshold_relu(*(np.array([am, ap, b]) + e), lam, xi[:64], y[:64], j[:64])
                  - np_threshold_relu(*(np.array([am, ap, b]) - e), lam, xi[:64], y[:64],
                                      j[:64])) / (2 * h)
            assert float(g[k]) == pytest.approx(fd, rel=1e-5, abs=1e-9)


def np_threshold_relu_grad(am, ap, b, lam, xi, y, j):
    """Mean logistic loss and its gradient in (a−, a+, b), by hand in float64: with
    f = Σ_i a−σ(−x_i + b) + a+σ(x_i + b) and ℓ = log(1 + e^{−yf}), ∂ℓ/∂f = −y/(1 + e^{yf})."""
    x = xi.copy()
    x[np.arange(len(y)), j] += lam * y
    rm, rp = np.maximum(-x + b, 0), np.maximum(x + b, 0)
    f = (am * rm + ap * rp).sum(1)
    dl = -y / (1 + np.exp(y * f))
    grad = np.array([np.mean(dl * rm.sum(1)), np.mean(dl * rp.sum(1)),
                     np.mean(dl * (am * (rm > 0).sum(1) + ap * (rp > 0).sum(1)))])
    return np.mean(np.logaddexp(0, -y * f)), grad


def test_threshold_relu_sgd_step_matches_numpy_minibatch(cli, write_sweep, tmp_path):
    """batch > 0: each step takes the gradient of the mean loss over `batch` training rows drawn
    with replacement by jax.random.randint(step key, (batch,), 0, n_train), the step key of
    step t being fold_in(fold_in(PRNGKey(seed), 1), t) (jaxdyn/engine/program.py). The experiment's step
    function and three engine steps against NumPy SGD on those rows; full-batch GD from the
    same start lands elsewhere."""
    d, n_train, n_test, batch, lam = 30, 64, 16, 8, 4.0
    static = {"d": d, "n_train": n_train, "n_test": n_test, "batch": batch,
              "dtype": jnp.float64}

    def start(seed, lr):
        key = jax.random.PRNGKey(seed)
        data = eos._tr_make_data(jax.random.fold_in(key, 2), static)
        hp = {"lr": jnp.float64(lr), "lam": jnp.float64(lam), "init_scale": jnp.float64(0.3),
              "b0": jnp.float64(0.2)}
        state = eos._tr_init(jax.random.fold_in(key, 0), static, hp, data)
        np_data = tuple(np.asarray(data[k])[:n_train] for k in ("xi", "y", "j"))
        return key, data, hp, state, np_data

    def minibatch(key, t):
        k = jax.random.fold_in(jax.random.fold_in(key, 1), t)
        return k, np.asarray(jax.random.randint(k, (batch,), 0, n_train))

    def params(state):
        return np.array([float(state["params"][k]) for k in ("a_minus", "a_plus", "b")])

    # one call of the experiment's step function
    for seed in (0, 1):
        key, data, hp, state, (xi, y, j) = start(seed, 0.05)
        k, idx = minibatch(key, 0)
        assert len(np.unique(idx)) < n_train
        p0 = params(state)
        sgd = p0 - 0.05 * np_threshold_relu_grad(*p0, lam, xi[idx], y[idx], j[idx])[1]
        gd = p0 - 0.05 * np_threshold_relu_grad(*p0, lam, xi, y, j)[1]
        got = params(eos._tr_step(state, k, static, hp, data))
        np.testing.assert_allclose(got, sgd, rtol=1e-12, atol=1e-15)
        assert np.abs(sgd - gd).max() > 1e6 * np.abs(got - sgd).max() + 1e-6
        gd_static = {**static, "batch": 0}
        np.testing.assert_allclose(params(eos._tr_step(state, k, gd_static, hp, data)), gd,
                                   rtol=1e-12, atol=1e-15)

    # three steps in the engine: a fresh minibatch each step, logged every step
    path = write_sweep(f"""
        name = "sgd"
        experiment = "eos.threshold_relu"
        steps = 3
        seeds = 2
        log = {{ every = 1 }}
        precision = "float64"
        [fixed]
        d = {d}
        n_train = {n_train}
        n_test = {n_test}
        batch = {batch}
        lam = {lam}
        init_scale = 0.3
        b0 = 0.2
        [grid]
        lr = [0.05, 0.2]
    """)
    code, _, err = cli("run", path, "--out", tmp_path, "--quiet")
    assert code == 0, err
    res = jaxdyn.load(tmp_path / "sgd")
    curves = res.curves()
    assert len(res.runs) == 4 and (res.runs.status == "ok").all()
    for r in res.runs.itertuples():
        key, data, hp, state, (xi, y, j) = start(r.seed, r.lr)
        c = curves[curves.run_id == r.run_id].set_index("step")
        p = params(state)
        gd = p.copy()
        for t in range(4):
            am, ap, b = p
            assert c.loc[t, "b"] == pytest.approx(b, rel=1e-11, abs=1e-14), (r.lr, t)
            assert c.loc[t, "a_sum"] == pytest.approx(d * (am + ap), rel=1e-11, abs=1e-14)
            assert c.loc[t, "a_diff"] == pytest.approx(ap - am, rel=1e-11, abs=1e-14)
            assert c.loc[t, "loss"] == pytest.approx(np_threshold_relu(am, ap, b, lam, xi, y, j),
                                                     rel=1e-11)
            if t == 3:
                break
            idx = minibatch(key, t)[1]
            p = p - r.lr * np_threshold_relu_grad(*p, lam, xi[idx], y[idx], j[idx])[1]
            gd = gd - r.lr * np_threshold_relu_grad(*gd, lam, xi, y, j)[1]
        assert np.abs(p - gd).max() > 1e-4, (r.lr, p, gd)  # SGD is not full-batch GD


def test_threshold_relu_large_step_learns_threshold(cli, write_sweep, tmp_path):
    """Seed Figure 2 at d = 200: after 1500 steps only η = 2.5e-3 has a clearly negative bias,
    and only its loss is non-monotone."""
    path = write_sweep("""
        name = "tr"
        experiment = "eos.threshold_relu"
        steps = 1500
        seeds = 2
        log = { every = 5 }
        [fixed]
        d = 200
        n_train = 400
        n_test = 200
        lam = 5.0
        [grid]
        lr = [2.5e-5, 2.5e-4, 2.5e-3]
    """)
    code, _, err = cli("run", path, "--out", tmp_path, "--quiet")
    assert code == 0, err
    res = jaxdyn.load(tmp_path / "tr")
    r = res.runs
    by = r.groupby("lr").final_b
    print("final b by lr:", by.mean().to_dict())
    assert by.max()[2.5e-3] < -0.5
    assert by.min()[2.5e-5] > -0.01 and by.min()[2.5e-4] > -0.05
    c = res.curves(columns=["loss"]).merge(r[["run_id", "lr"]], on="run_id")
    for lr, g in c.groupby("lr"):
        rises = [np.diff(gg.sort_values("step").loss.to_numpy()).max()
                 for _, gg in g.groupby("run_id")]
        if lr == 2.5e-3:
            assert min(rises) > 1e-3, rises  # the loss goes up, then down again
        if lr == 2.5e-5:
            assert max(rises) <= 0, rises  # monotone


def test_edge_of_stability_notebook(cli, write_sweep, tmp_path):
    runs = [
        ("sweeps/eos_mean_model.toml", ["grid.lr={start=1e-4,stop=1e-1,num=48,spacing='log'}",
                                        "seeds=1", "steps=3000", "log.every=500"]),
        ("sweeps/eos_single_neuron.toml", ["grid.y0={start=1.0,stop=23.0,num=12,spacing='log'}",
                                           "seeds=1", "steps=3000"]),
        ("sweeps/eos_threshold_relu.toml", ["seeds=1", "steps=300", "n_train=100",
                                            "n_test=100", "d=50", "log.every=20"]),
    ]
    from conftest import ROOT

    for f, sets in runs:
        args = ["run", ROOT / f, "--out", tmp_path, "--quiet"]
        for s in sets:
            args += ["--set", s]
        code, _, err = cli(*args)
        assert code == 0, err
    execute_notebook("edge_of_stability.ipynb", tmp_path)
