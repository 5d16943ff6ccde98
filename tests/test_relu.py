"""relu.teacher_student (seed 001; see docs/science/relu.md) against independent float64
references, and the rate fits of jaxdyn.fits.

References: NumPy Monte Carlo of the loss and gradient; the seed's textbook closed forms
(E[σ(uᵀx)σ(wᵀx)] = ‖u‖‖w‖J(cos θ)/(2π), ∇_{w_i} L = Σ_j g(w_i, w_j) − g(w_i, v)) in NumPy;
central finite differences; the n = 1 linear rate −2 ln(1 − η/2) from the Hessian I/2 at the
optimum; synthetic curves with known exponents for the fits.
"""

import math
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

import jaxdyn
from jaxdyn import fits
from jaxdyn.experiments import relu

from conftest import ROOT

QUICK = ROOT / "sweeps" / "overparam_quick.toml"


# ---- NumPy references (float64) ----------------------------------------------------------
def np_J(c):
    c = np.clip(c, -1.0, 1.0)
    return np.sqrt(1.0 - c * c) + (np.pi - np.arccos(c)) * c


def np_K(u, w):
    nu, nw = np.linalg.norm(u), np.linalg.norm(w)
    return nu * nw * np_J(u @ w / (nu * nw)) / (2 * np.pi)


def np_loss(W, v):
    """½[Σ_ij K(w_i, w_j) − 2 Σ_i K(w_i, v) + K(v, v)]: the textbook form."""
    return 0.5 * (sum(np_K(a, b) for a in W for b in W) - 2 * sum(np_K(a, v) for a in W)
                  + np_K(v, v))


def np_g(w, u):
    """The seed's ∇_w E[σ(wᵀx)σ(uᵀx)] = [(π − θ)u + ‖u‖ sin θ ŵ]/(2π)."""
    nw, nu = np.linalg.norm(w), np.linalg.norm(u)
    th = np.arccos(np.clip(w @ u / (nw * nu), -1.0, 1.0))
    return ((np.pi - th) * u + nu * np.sin(th) * w / nw) / (2 * np.pi)


def np_grad(W, v):
    return np.stack([sum(np_g(W[i], W[j]) for j in range(len(W))) - np_g(W[i], v)
                     for i in range(len(W))])


def mc_loss_grad(W, v, n_samples, seed, chunk=250_000):
    """Monte Carlo ½E[(f − y)²] and E[(f − y) 1{w_iᵀx > 0} x]."""
    rng = np.random.default_rng(seed)
    loss, grad, done = 0.0, np.zeros_like(W), 0
    while done < n_samples:
        m = min(chunk, n_samples - done)
        X = rng.standard_normal((m, W.shape[1]))
        pre = X @ W.T
        res = np.maximum(pre, 0).sum(1) - np.maximum(X @ v, 0)
        loss += 0.5 * np.sum(res**2)
        grad += ((res[:, None] * (pre > 0)).T @ X)
        done += m
    return loss / n_samples, grad / n_samples


def unit(x):
    return x / np.linalg.norm(x)


_GRADS = {}


def jgrad(W, v, fn=relu.population_loss):
    if fn not in _GRADS:
        _GRADS[fn] = jax.jit(jax.grad(fn, argnums=(0, 1)))
    gW, gv = _GRADS[fn](jnp.asarray(W), jnp.asarray(v))
    return np.asarray(gW), np.asarray(gv)


# ---- the kernel and the closed form ------------------------------------------------------
def test_J_custom_derivative_is_pi_minus_arccos_and_finite_at_the_ends():
    cs = np.linspace(-0.999, 0.999, 41)
    dJ = jax.vmap(jax.grad(relu.J))(jnp.asarray(cs))
    h = 1e-6
    fd = (np_J(cs + h) - np_J(cs - h)) / (2 * h)
    np.testing.assert_allclose(dJ, fd, rtol=1e-7, atol=1e-8)
    np.testing.assert_allclose(dJ, np.pi - np.arccos(cs), rtol=1e-12)
    np.testing.assert_allclose(relu.J(jnp.asarray(cs)), np_J(cs), rtol=1e-14)
    # at the ends the plain formula's autodiff is NaN; J's derivative is π − arccos(±1)
    assert float(jax.grad(relu.J)(1.0)) == pytest.approx(np.pi, rel=1e-15)
    assert float(jax.grad(relu.J)(-1.0)) == 0.0
    assert float(relu.J(1.0)) == pytest.approx(np.pi) and float(relu.J(-1.0)) == 0.0
    naive = jax.grad(lambda c: jnp.sqrt(1 - c * c) + (jnp.pi - jnp.arccos(c)) * c)(1.0)
    assert np.isnan(naive)  # what the custom derivative is for


@pytest.mark.parametrize("n,d,scale", [(1, 3, 0.8), (3, 5, 0.5), (4, 10, 0.3), (2, 20, 1.5)])
def test_closed_form_matches_monte_carlo(n, d, scale):
    """Loss within 1 % of a 2e6-sample Monte Carlo estimate, gradient within 2 % of its norm;
    the textbook form through J gives the same value."""
    rng = np.random.default_rng(n * 100 + d)
    W = scale * rng.standard_normal((n, d)) / np.sqrt(d)
    W[0] += 0.5 * unit(rng.standard_normal(d))
    v = unit(rng.standard_normal(d))
    L = float(relu.population_loss(jnp.asarray(W), jnp.asarray(v)))
    mc_l, mc_g = mc_loss_grad(W, v, 2_000_000, seed=d)
    print(f"n={n} d={d}: closed form {L:.6f}, Monte Carlo {mc_l:.6f} "
          f"({(mc_l - L) / L:+.2e} relative)")
    assert abs(mc_l - L) <= 0.01 * L
    assert L == pytest.approx(np_loss(W, v), rel=1e-12)
    assert L == pytest.approx(float(relu.population_loss_textbook(jnp.asarray(W),
                                                                  jnp.asarray(v))), rel=1e-12)
    g = jgrad(W, v)[0]
    assert np.linalg.norm(g - mc_g) <= 0.02 * np.linalg.norm(g)


def test_gradient_matches_finite_differences_and_the_seed_formula():
    rng = np.random.default_rng(7)
    for n, d in [(1, 4), (2, 3), (3, 10), (5, 7)]:
        W = rng.standard_normal((n, d)) * 0.6
        v = unit(rng.standard_normal(d))
        gW, gv = jgrad(W, v)
        # the seed's closed-form gradient
        np.testing.assert_allclose(gW, np_grad(W, v), rtol=1e-10, atol=1e-13)
        # float64 central differences of the NumPy textbook loss, in W and in v
        h = 1e-6
        fd = np.zeros_like(W)
        for idx in np.ndindex(W.shape):
            e = np.zeros_like(W)
            e[idx] = h
            fd[idx] = (np_loss(W + e, v) - np_loss(W - e, v)) / (2 * h)
        np.testing.assert_allclose(gW, fd, rtol=1e-6, atol=1e-9)
        fdv = np.array([(np_loss(W, v + h * np.eye(d)[k]) - np_loss(W, v - h * np.eye(d)[k]))
                        / (2 * h) for k in range(d)])
        np.testing.assert_allclose(gv, fdv, rtol=1e-6, atol=1e-9)
        # the textbook loss differentiated through J's custom derivative agrees
        gW_J, gv_J = jgrad(W, v, relu.population_loss_textbook)
        np.testing.assert_allclose(gW_J, gW, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(gv_J, gv, rtol=1e-9, atol=1e-12)


def test_no_nan_at_exact_alignment():
    """Student == teacher, two equal students, students on the teacher ray (the optimum),
    antiparallel students: loss and gradient finite (both closed forms) and equal to the seed's
    formula, which is finite there."""
    rng = np.random.default_rng(3)
    v = unit(rng.standard_normal(6))
    u = unit(rng.standard_normal(6))
    cases = {
        "student == teacher": np.stack([v]),
        "two equal students": np.stack([0.4 * u, 0.4 * u]),
        "optimum on the teacher ray": np.stack([0.3 * v, 0.7 * v]),
        "equal students on the teacher ray": np.stack([0.2 * v, 0.2 * v, 0.5 * v]),
        "antiparallel": np.stack([0.5 * v, -0.5 * v, 0.3 * u]),
    }
    for name, W in cases.items():
        for fn in (relu.population_loss, relu.population_loss_textbook):
            L = float(fn(jnp.asarray(W), jnp.asarray(v)))
            gW, gv = jgrad(W, v, fn)
            assert np.isfinite(L) and np.isfinite(gW).all() and np.isfinite(gv).all(), name
            assert L == pytest.approx(np_loss(W, v), abs=1e-14), name
            np.testing.assert_allclose(gW, np_grad(W, v), atol=1e-13, err_msg=name)
        if name.startswith("optimum") or name == "student == teacher":
            assert abs(float(relu.population_loss(jnp.asarray(W), jnp.asarray(v)))) < 1e-30
            assert np.abs(jgrad(W, v)[0]).max() < 1e-15
    # the experiment's own step and metrics at exact alignment
    static = {"mode": "population", "n": 2, "d": 6, "dtype": jnp.float64}
    hp = {"lr": jnp.float64(0.1), "init_scale": jnp.float64(0.01)}
    state = relu._init(jax.random.PRNGKey(0), static, hp, None)
    state["params"]["w"] = jnp.asarray(cases["two equal students"])
    new = relu._step(state, None, static, hp, {"v": jnp.asarray(v)})
    m = relu._measure(new, static, hp, {"v": jnp.asarray(v)})
    assert np.isfinite(np.asarray(new["params"]["w"])).all()
    assert all(np.isfinite(float(x)) for x in m.values())


def test_small_angles_keep_their_precision():
    """One student at angle θ from the teacher, norm ρ: L = ¼[(ρ − 1)² + 4ρ sin²(θ/2)] −
    ρ κ(θ)/(2π), κ(θ) = θ³/3 − θ⁵/30 + … . The closed form keeps ~1e-10 relative precision
    down to θ = 1e-7, where the textbook form (O(1) terms that cancel) is off by far more."""
    for th in (1e-2, 1e-4, 1e-6, 1e-7):
        for rho in (0.5, 1.0):
            W = np.array([[rho * math.cos(th), rho * math.sin(th), 0.0]])
            v = np.array([1.0, 0.0, 0.0])
            t = math.atan2(W[0, 1], W[0, 0])  # the angle of the rounded W
            r = math.hypot(W[0, 0], W[0, 1])
            kap = t**3 / 3 - t**5 / 30 + t**7 / 840
            ref = 0.25 * ((r - 1) ** 2 + 4 * r * math.sin(t / 2) ** 2) - r * kap / (2 * math.pi)
            got = float(relu.population_loss(jnp.asarray(W), jnp.asarray(v)))
            assert got == pytest.approx(ref, rel=1e-10), (th, rho)
            angle = float(relu.angles_to(jnp.asarray(W), jnp.asarray(v))[0])
            assert angle == pytest.approx(t, rel=1e-12)
    textbook = float(relu.population_loss_textbook(jnp.asarray(W), jnp.asarray(v)))
    print(f"θ = 1e-7, ρ = 1: L = {ref:.6e}; closed form off by {abs(got - ref):.1e}, textbook form "
          f"by {abs(textbook - ref):.1e}")
    assert abs(textbook - ref) > 1e3 * abs(got - ref)


# ---- the engine runs it -------------------------------------------------------------------
def _reference_start(seed, static, hp):
    """w(0), v (and X, y) as the engine draws them: PRNGKey(seed) folded with 0 for init and 2
    for data (jaxdyn/engine/program.py)."""
    key = jax.random.PRNGKey(seed)
    st = {**static, "dtype": jnp.float64}
    data = relu._make_data(jax.random.fold_in(key, 2), st)
    w0 = relu._init(jax.random.fold_in(key, 0), st,
                    {k: jnp.float64(x) for k, x in hp.items()}, data)["params"]["w"]
    return np.asarray(w0), {k: np.asarray(x) for k, x in data.items()}


def _perp_angle(w, v):
    """θ(w, v) for a unit v from the projection: atan2(‖w − (wᵀv)v‖, wᵀv)."""
    p = w @ v
    return math.atan2(np.linalg.norm(w - p * v), p)


def np_metrics(W, v, X=None, y=None):
    if X is None:
        loss, g = np_loss(W, v), np_grad(W, v)
    else:
        pre = X @ W.T
        res = np.maximum(pre, 0).sum(1) - y
        loss, g = 0.5 * np.mean(res**2), ((res[:, None] * (pre > 0)).T @ X) / len(X)
    return {"loss": loss, "pop_loss": np_loss(W, v),
            "max_angle": max(_perp_angle(w, v) for w in W),
            "norm_sum": np.linalg.norm(W, axis=1).sum(), "residual": np.linalg.norm(W.sum(0) - v),
            "proj_gap": np.linalg.norm(v) - (W @ v).sum() / np.linalg.norm(v),
            "grad_norm": np.linalg.norm(g)}, g


EMPIRICAL = ROOT / "sweeps" / "overparam_empirical.toml"
#: the reduced version of sweeps/overparam_empirical.toml the tests run (and the notebook reads)
EMP_SETS = ["n=2", "lr=0.5", "init_scale=0.01", "seeds=4", "steps=600", "log.points=30",
            'zip.mode=["population", "empirical", "empirical", "empirical"]',
            "zip.n_train=[1000, 100, 1000, 10000]"]


@pytest.fixture(scope="module")
def emp_out(tmp_path_factory):
    """The reduced sweeps/overparam_empirical.toml: one results root holding it."""
    from jaxdyn.cli import main

    out = tmp_path_factory.mktemp("emp")
    args = ["run", str(EMPIRICAL), "--out", str(out), "--quiet"]
    for s in EMP_SETS:
        args += ["--set", s]
    assert main(args) == 0
    return out


@pytest.fixture(scope="module")
def emp(emp_out):
    res = jaxdyn.load(emp_out / "overparam_empirical")
    assert set(res.runs.d) == {10} and set(res.runs.lr) == {0.5}
    return res.runs, res.curves()


def test_engine_trajectories_match_numpy_gd(emp):
    """Population and empirical runs of the engine against NumPy GD from the same w(0), v and
    samples, with the seed's textbook gradient: every metric at every logged step."""
    runs, curves = emp
    assert len(runs) == 16 and (runs.status == "ok").all()
    assert curves["loss"].dtype == np.float64
    metrics = ["loss", "pop_loss", "max_angle", "norm_sum", "residual", "proj_gap", "grad_norm"]
    checked = 0
    for r in runs.itertuples():
        if r.mode == "empirical" and r.n_train == 1000:
            continue
        static = {"n": r.n, "d": r.d, "mode": r.mode, "n_train": r.n_train}
        W, data = _reference_start(r.seed, static, {"lr": r.lr, "init_scale": r.init_scale})
        c = curves[curves.run_id == r.run_id].set_index("step")
        for t in range(601):
            m, g = np_metrics(W, data["v"], data.get("X"), data.get("y"))
            if t in c.index:
                for k in metrics:
                    assert c.loc[t, k] == pytest.approx(m[k], rel=1e-8, abs=1e-13), \
                        (r.mode, r.n_train, t, k)
                checked += 1
            W = W - r.lr * g
        assert r.final_loss == pytest.approx(c.loc[600, "loss"], rel=1e-12)
    assert checked > 12 * 25


def test_empirical_mode_approaches_population_mode(emp):
    """Same seed → same teacher and w(0) in both modes; the empirical trajectory's distance to
    the population one shrinks as n_train grows (∝ n_train^{-1/2}). Numbers recorded in
    benchmarks/results/relu_empirical_vs_population.md."""
    runs, curves = emp
    c = curves.join(runs.set_index("run_id")[["seed", "mode", "n_train"]], on="run_id")
    pop = c[c["mode"] == "population"].set_index(["seed", "step"])
    dist = {}
    for nt in (100, 1000, 10000):
        e = c[(c["mode"] == "empirical") & (c.n_train == nt)].set_index(["seed", "step"])
        np.testing.assert_allclose(e.xs(0, level="step").pop_loss.sort_index(),
                                   pop.xs(0, level="step").loss.sort_index(),
                                   rtol=1e-12)  # same v, w(0)
        per_seed = pd.DataFrame({
            "residual": (e.residual - pop.residual).abs(),
            "angle": (e.max_angle - pop.max_angle).abs(),
            "pop_loss": (e.pop_loss - pop.loss).abs() / pop.loss,
        }).groupby(level="seed").max()
        dist[nt] = per_seed.median()
        print(f"n_train={nt}: median over seeds of max_T |Δ residual| {dist[nt].residual:.2e}, "
              f"|Δ max angle| {dist[nt].angle:.2e}, max_T relative Δ population loss "
              f"{dist[nt].pop_loss:.2e}")
    for k in ("residual", "angle", "pop_loss"):
        assert dist[100][k] > dist[1000][k] > dist[10000][k], k
    for k in ("residual", "angle"):
        assert dist[10000][k] < 0.2 * dist[100][k], k  # n_train^{-1/2} gives 0.1
    assert dist[10000]["residual"] < 0.02


def test_float32_stays_float32():
    static = {"n": 3, "d": 4, "mode": "population", "n_train": 16, "dtype": jnp.float32}
    hp = {"lr": jnp.float32(0.1), "init_scale": jnp.float32(0.1)}

    @jax.jit
    def go(key):
        data = relu._make_data(key, static)
        state = relu._init(key, static, hp, data)
        state = relu._step(state, key, static, hp, data)
        return data, state, relu._measure(state, static, hp, data)

    for mode in ("population", "empirical"):
        static["mode"] = mode
        leaves = jax.tree.leaves(go(jax.random.PRNGKey(0)))
        assert leaves and all(x.dtype == jnp.float32 for x in leaves), mode


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    """sweeps/overparam_quick.toml as shipped, under the name the notebook reads."""
    from jaxdyn.cli import main

    out = tmp_path_factory.mktemp("overparam")
    assert main(["run", str(QUICK), "--out", str(out), "--quiet",
                 "--set", "name=overparam_rate"]) == 0
    res = jaxdyn.load(out / "overparam_rate")
    fitted = fits.with_fits(res.runs, res.curves(columns=["loss"]))
    return out, fitted


def test_overparameterized_tail_is_T_minus_3(quick):
    """n ≥ 2: most fitted tail exponents within −3 ± 0.3; none of these runs is linear."""
    _, fitted = quick
    over = fitted[fitted.n >= 2]
    assert len(over) >= 96
    for (n, d), g in over.groupby(["n", "d"]):
        s = g.fit_tail_slope
        within = float((np.abs(s + 3) <= 0.3).mean())  # NaN (no tail window) counts as out
        q1, med, q3 = np.nanpercentile(s, [25, 50, 75])
        print(f"n={n} d={d}: {len(s)} runs, median {med:.3f}, IQR [{q1:.3f}, {q3:.3f}], "
              f"within ±0.3: {within:.2f}, no window: {s.isna().mean():.2f}")
        assert within >= 0.75, (n, d)
        assert abs(med + 3) <= 0.15, (n, d)
        assert (g.fit_kind != "linear").all()
    assert float((np.abs(over.fit_tail_slope + 3) <= 0.3).mean()) >= 0.85


def test_single_student_converges_linearly_at_rate_from_the_hessian(quick):
    """n = 1: L ∝ (1 − η/2)^{2T} near the optimum, so the fitted log-linear rate is
    −2 ln(1 − η/2) per step; no power-law tail is found."""
    _, fitted = quick
    one = fitted[fitted.n == 1]
    assert len(one) >= 16
    theory = -2 * np.log(1 - one.lr / 2)
    rel = (one.fit_lin_rate - theory) / theory
    for lr, g in one.assign(rel=rel).groupby("lr"):
        print(f"n=1 lr={lr}: fitted rate median {g.fit_lin_rate.median():.5f}/step, "
              f"theory {-2 * np.log(1 - lr / 2):.5f}, max |rel. error| {g.rel.abs().max():.1e}, "
              f"loss decades covered {g.fit_lin_drop.min():.1f}-{g.fit_lin_drop.max():.1f}")
    assert (one.fit_kind == "linear").all()
    assert rel.abs().max() < 0.01
    assert one.fit_tail_slope.isna().all()
    assert (one.fit_lin_drop >= 10).all()  # at least ten decades of linear convergence


# ---- fits ------------------------------------------------------------------------------
def _log_steps(total, points=120):
    return np.unique(np.r_[0, np.round(np.geomspace(1, total, points)).astype(int)])


def test_fits_recover_known_exponents_and_rates():
    t = _log_steps(100_000)
    # a pure power law: the window is the whole curve and the slope exact
    f = fits.fit_curve(t, 5.0 * np.maximum(t, 1) ** -3.0)
    assert f["fit_kind"] == "power" and f["fit_tail_slope"] == pytest.approx(-3, abs=1e-9)
    assert f["fit_tail_t0"] == 1 and f["fit_tail_t1"] == 100_000
    assert f["fit_tail_slope_se"] < 1e-9
    # a shifted power law (T + T0)^−3: the window starts later for a later onset, and the
    # fitted slope lands within the tolerance of −3
    starts = []
    for T0 in (10, 100, 1000):
        f = fits.fit_curve(t, 1e-3 * (t + T0) ** -3.0)
        assert f["fit_kind"] == "power"
        assert abs(f["fit_tail_slope"] + 3) < 0.15 and abs(f["fit_tail_local_end"] + 3) < 0.05
        starts.append(f["fit_tail_t0"])
    assert starts[0] < starts[1] < starts[2]
    # |local slope + 3| = 3 T0/(T + T0): inside the 0.15 tolerance from T ≈ 19 T0 on
    for T0, t0 in zip((10, 100, 1000), starts):
        assert 10 * T0 <= t0 <= 30 * T0, (T0, t0)
    # linear convergence that hits a flat floor: the floor is found and left out
    t = _log_steps(3000)
    L = np.maximum(0.3 * np.exp(-0.2 * t), 4e-31)
    f = fits.fit_curve(t, L)
    assert f["fit_kind"] == "linear"
    assert f["fit_lin_rate"] == pytest.approx(0.2, rel=1e-9)
    assert f["fit_floor_loss"] == pytest.approx(4e-31)
    assert f["fit_lin_t1"] < f["fit_floor_step"] <= math.log(0.3 / 4e-31) / 0.2 + 50
    assert math.isnan(f["fit_tail_slope"])
    # a slow phase then an exponential one: the linear window is only the exponential part
    t = np.arange(0, 2001, 5)
    L = np.where(t < 1000, 1.0 / (1 + t), 1.0 / 1001 * np.exp(-0.01 * (t - 1000)))
    f = fits.fit_curve(t, L)
    assert f["fit_lin_rate"] == pytest.approx(0.01, rel=1e-6) and f["fit_lin_t0"] >= 1000
    # too short a regime: no fit rather than a fit of a transient
    t = _log_steps(1000)
    L = np.where(t < 900, 1.0 / (1 + t) ** 0.5, 1.0 / 901**0.5 * ((1 + t) / 901.0) ** -3)
    f = fits.fit_curve(t, L)
    assert math.isnan(f["fit_tail_slope"]) and f["fit_kind"] == "none"


def test_fit_rates_one_row_per_run_and_joins_next_to_runs():
    t = _log_steps(10_000, 60)
    curves = pd.concat([
        pd.DataFrame({"run_id": "b", "step": t, "loss": 2.0 * np.maximum(t, 1) ** -3.0}),
        pd.DataFrame({"run_id": "a", "step": t[::-1],
                      "loss": np.maximum(np.exp(-0.3 * t[::-1]), 1e-25)}),
    ])
    runs = pd.DataFrame({"run_id": ["a", "b", "c"], "n": [1, 2, 2]})
    out = fits.fit_rates(curves, runs)
    assert list(out.run_id) == ["a", "b", "c"]
    assert list(out.columns) == ["run_id", *fits.COLUMNS]
    assert out.set_index("run_id").fit_kind.to_dict() == {"a": "linear", "b": "power",
                                                          "c": "none"}
    assert out.fit_lin_rate[0] == pytest.approx(0.3, rel=1e-6)
    assert out.fit_tail_slope[1] == pytest.approx(-3.0, abs=1e-9)
    joined = fits.with_fits(runs, curves)
    assert list(joined.columns[:2]) == ["run_id", "n"] and len(joined) == 3


def test_fits_do_not_import_jax():
    code = "import sys, jaxdyn.fits; assert 'jax' not in sys.modules, 'jax imported'"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=ROOT)
    assert proc.returncode == 0, proc.stderr


# ---- the notebook --------------------------------------------------------------------------
def test_notebook_runs_on_the_quick_sweep(quick, emp_out, tmp_path):
    """The notebook on overparam_quick.toml (as overparam_rate) and, for its empirical-mode
    panel, on the reduced overparam_empirical.toml that the tests above already ran."""
    from notebook_runner import execute_notebook

    out, _ = quick
    root = tmp_path / "results"
    root.mkdir()
    (root / "overparam_rate").symlink_to(out / "overparam_rate", target_is_directory=True)
    (root / "overparam_empirical").symlink_to(emp_out / "overparam_empirical",
                                              target_is_directory=True)
    nb = execute_notebook("overparam_rate.ipynb", root)
    last = nb.cells[-1]
    text = "".join(o.get("text", "") for o in last.outputs if o.get("output_type") == "stream")
    assert "max over T of the gap" in text and "no overparam_empirical" not in text
