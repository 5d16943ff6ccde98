"""eos.mean_model against float64 NumPy references, and the phase transition at 8π/d²."""

import numpy as np
import pytest
from scipy.special import ndtr

import jaxdyn
from jaxdyn.experiments import eos


def np_loss_grad(am, ap, b, d):
    """F = ℓ_sym(d(a−+a+)g(b)) and its gradient, in float64 NumPy."""
    g = b * ndtr(b) + np.exp(-0.5 * b * b) / np.sqrt(2 * np.pi)
    u = am + ap
    s = d * u * g
    loss = 0.5 * (np.logaddexp(0, -s) + np.logaddexp(0, s))
    dl = 0.5 * np.tanh(s / 2)  # ℓ_sym'(s)
    ga = dl * d * g
    gb = dl * d * u * ndtr(b)  # g'(b) = Φ(b)
    return loss, np.array([ga, ga, gb])


def np_hessian(x, d, h=1e-6):
    """Dense Hessian by central differences of the analytic gradient (float64)."""
    H = np.zeros((3, 3))
    for i in range(3):
        e = np.zeros(3)
        e[i] = h
        H[:, i] = (np_loss_grad(*(x + e), d)[1] - np_loss_grad(*(x - e), d)[1]) / (2 * h)
    return 0.5 * (H + H.T)


def test_loss_gradient_and_sharpness_match_numpy():
    import jax
    import jax.numpy as jnp

    rng = np.random.default_rng(0)
    for _ in range(20):
        am, ap = rng.normal(0, 0.05, 2)
        b = rng.normal(0, 1.0)
        d = float(rng.choice([10, 50, 100, 200]))
        p = {"a_minus": jnp.float64(am), "a_plus": jnp.float64(ap), "b": jnp.float64(b)}
        loss, grad = np_loss_grad(am, ap, b, d)
        assert float(eos._mm_loss(p, d)) == pytest.approx(loss, rel=1e-12)
        gj = jax.grad(eos._mm_loss)(p, d)
        np.testing.assert_allclose([gj["a_minus"], gj["a_plus"], gj["b"]], grad, rtol=1e-10,
                                   atol=1e-14)
        gc = eos.mean_model_grad(p, d)  # the closed form the engine's step uses
        np.testing.assert_allclose([gc["a_minus"], gc["a_plus"], gc["b"]], grad, rtol=1e-10,
                                   atol=1e-14)
        top = np.linalg.eigvalsh(np_hessian(np.array([am, ap, b]), d))[-1]
        assert float(eos.mean_model_sharpness(p, d)) == pytest.approx(top, rel=1e-6)
        # the logged metrics are closed forms too: against the reference and jax.hessian
        m = eos._mm_measure({"params": p}, {}, {"d": d, "lr": 0.1}, None)
        assert float(m["loss"]) == pytest.approx(loss, rel=1e-12)
        x = jnp.array([am, ap, b])
        H = jax.hessian(lambda v: eos._mm_loss(dict(zip(("a_minus", "a_plus", "b"), v)), d))(x)
        top_ad = np.linalg.eigvalsh(np.asarray(H))[-1]
        assert float(m["sharpness"]) == pytest.approx(top_ad, rel=1e-10, abs=1e-12)
        assert float(m["eta_sharpness"]) == pytest.approx(0.05 * top_ad, rel=1e-10, abs=1e-12)
    # at the origin the sharpness is d²/(4π): the stability limit 2/η gives η* = 8π/d²
    z = {"a_minus": jnp.float64(0), "a_plus": jnp.float64(0), "b": jnp.float64(0)}
    assert float(eos.mean_model_sharpness(z, 100.0)) == pytest.approx(100**2 / (4 * np.pi))


def test_closed_form_gradient_float32_in_both_tails():
    """In float32 (what sweeps run in), the step's closed form, with Φ(b) = ½·erfc(−b/√2),
    is as accurate as autodiff through ``ndtr`` everywhere: where ``ndtr`` switches branches
    and in both tails (b far below 0, where g(b) = bΦ(b) + φ(b) cancels, and far above)."""
    import jax
    import jax.numpy as jnp

    rng = np.random.default_rng(1)
    for b in np.concatenate([np.linspace(-8, 8, 161), rng.normal(0, 3, 40)]):
        am, ap = rng.normal(0, 0.05, 2)
        d = float(rng.choice([50, 100, 400]))
        _, ref = np_loss_grad(am, ap, b, d)
        p = {k: jnp.float32(v) for k, v in (("a_minus", am), ("a_plus", ap), ("b", b))}
        cf = eos.mean_model_grad(p, jnp.float32(d))
        ad = jax.grad(eos._mm_loss)(p, jnp.float32(d))
        err_cf = np.abs(np.array([cf[k] for k in ("a_minus", "a_plus", "b")], float) - ref)
        err_ad = np.abs(np.array([ad[k] for k in ("a_minus", "a_plus", "b")], float) - ref)
        assert np.all(err_cf <= 4 * err_ad + 1e-6 * np.abs(ref)), (b, err_cf, err_ad, ref)


def test_engine_trajectory_matches_numpy_gd(cli, write_sweep, tmp_path):
    path = write_sweep("""
        name = "traj"
        experiment = "eos.mean_model"
        steps = 300
        seeds = 2
        precision = "float64"
        log = { every = 50 }
        [grid]
        lr = [1e-3, 4e-3, 2e-2]
        d = [100]
    """)
    code, _, err = cli("run", path, "--out", tmp_path, "--quiet")
    assert code == 0, err
    res = jaxdyn.load(tmp_path / "traj")
    runs = res.runs
    curves = res.curves()
    assert curves["b"].dtype == np.float64
    for r in runs.itertuples():
        c = curves[curves.run_id == r.run_id].set_index("step")
        x = c.loc[0, ["a_minus", "a_plus", "b"]].to_numpy(float)
        for t in range(1, 301):
            x = x - r.lr * np_loss_grad(*x, r.d)[1]
            if t % 50 == 0:
                np.testing.assert_allclose(c.loc[t, ["a_minus", "a_plus", "b"]].to_numpy(float),
                                           x, rtol=1e-9, atol=1e-12)
        assert r.final_b == pytest.approx(x[2], rel=1e-9, abs=1e-12)
        assert r.final_a_sum == pytest.approx(r.d * (x[0] + x[1]), rel=1e-9, abs=1e-12)


def crossing(lr, b, threshold=-0.01):
    """Smallest η where b∞ falls below ``threshold``, interpolated in log η."""
    order = np.argsort(lr)
    lr, b = np.asarray(lr)[order], np.asarray(b)[order]
    i = int(np.argmax(b < threshold))
    assert i > 0 and (b[i:] < threshold).all(), "final b must turn negative once and stay"
    w = (threshold - b[i - 1]) / (b[i] - b[i - 1])
    return float(np.exp(np.log(lr[i - 1]) + w * (np.log(lr[i]) - np.log(lr[i - 1]))))


def test_phase_transition_at_8pi_over_d2(cli, write_sweep, tmp_path):
    """For each d in {50, 100, 200, 400}, final b ≈ 0 well below η* = 8π/d², clearly negative well above, and the
    η where it turns lands within 5 % of η*."""
    path = write_sweep("""
        name = "phase"
        experiment = "eos.mean_model"
        steps = 10000
        seeds = 2
        log = { every = 1000 }
        [fixed]
        init_scale = 0.01
        [grid]
        d = [50, 100, 200, 400]
        lr = { start = 7.5e-5, stop = 2.1e-2, num = 420, spacing = "log" }
    """)
    code, _, err = cli("run", path, "--out", tmp_path, "--quiet")
    assert code == 0, err
    runs = jaxdyn.load(tmp_path / "phase").runs
    assert (runs.status == "ok").all()
    for d, g in runs.groupby("d"):
        eta_star = 8 * np.pi / d**2
        mean_b = g.groupby("lr").final_b.mean()
        lr, b = mean_b.index.to_numpy(), mean_b.to_numpy()
        below, above = lr <= 0.8 * eta_star, lr >= 1.25 * eta_star
        assert below.sum() >= 5 and above.sum() >= 5
        assert np.abs(b[below]).max() < 2e-3, (d, b[below])
        assert b[above].max() < -0.05, (d, b[above])
        x = crossing(lr, b)
        print(f"d={d}: crossing {x:.4e}, 8π/d² = {eta_star:.4e}, ratio {x / eta_star:.4f}")
        assert abs(x / eta_star - 1) < 0.05


def test_same_seed_shares_initialization_across_the_grid(cli, write_sweep, tmp_path):
    """Common random numbers: a−(0), a+(0) come from the seed alone, so they are identical
    for every lr (and d) with the same seed, and differ between seeds; the trajectories then
    differ with lr."""
    path = write_sweep("""
        name = "crn"
        experiment = "eos.mean_model"
        steps = 20
        seeds = [0, 1, 7]
        log = { every = 10 }
        [grid]
        lr = [1e-3, 1e-2, 5e-2, 0.2]
        d = [50, 100]
    """)
    code, _, err = cli("run", path, "--out", tmp_path, "--chunk-size", 5, "--quiet")
    assert code == 0, err
    res = jaxdyn.load(tmp_path / "crn")
    c = res.curves(columns=["a_minus", "a_plus"]).merge(
        res.runs[["run_id", "seed", "lr", "d"]], on="run_id")
    init = c[c.step == 0]
    assert len(init) == 3 * 4 * 2
    per_seed = init.groupby("seed")[["a_minus", "a_plus"]].nunique()
    assert (per_seed == 1).all().all(), per_seed  # one value per seed across all 8 points
    first = init.groupby("seed")[["a_minus", "a_plus"]].first()
    assert first.a_minus.nunique() == 3 and first.a_plus.nunique() == 3  # seeds differ
    assert (first.a_minus != first.a_plus).all()  # two independent draws per seed
    assert (first.abs() > 0).all().all()
    later = c[(c.step == 20) & (c.seed == 0) & (c.d == 100)]
    assert later.a_minus.nunique() == 4  # and then lr matters
