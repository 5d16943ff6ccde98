"""Three-layer bottleneck family (seed 003; see docs/science/bottleneck.md): the model, its
gradient and every probe against float64 NumPy references (finite differences, explicit
Jacobians), the initialisation and control schemes, an engine trajectory against a NumPy SGD
loop, the 2-D toy objective, the ν = 0.5 vs 1.5 hypothesis test, and the notebooks."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.stats import fisher_exact

import jaxdyn
from jaxdyn.experiments import bottleneck as bn

from notebook_runner import execute_notebook


# ---- float64 NumPy references ------------------------------------------------------------
def np_forward(p, X, control="none", nu=0.5):
    W = np.asarray(p["w"])
    if control == "fix_g":
        return np.sin(nu * np.pi * X @ W[0])
    z = X @ W.T
    pre = z @ np.asarray(p["u"]).T + np.asarray(p["b"])
    return np.maximum(pre, 0) @ np.asarray(p["v"])


def np_loss(p, X, y, control="none", nu=0.5, reduction="sum"):
    r = y - np_forward(p, X, control, nu)
    loss = 0.5 * np.sum(r * r)
    return loss / len(y) if reduction == "mean" else loss


def np_fd_grad(f, p, names, h=1e-6):
    """Central finite differences of the scalar f(params) for every entry of p[names]."""
    out = {}
    for n in names:
        g = np.zeros_like(p[n])
        for i in np.ndindex(p[n].shape):
            up = {k: np.array(v, copy=True) for k, v in p.items()}
            dn = {k: np.array(v, copy=True) for k, v in p.items()}
            up[n][i] += h
            dn[n][i] -= h
            g[i] = (f(up) - f(dn)) / (2 * h)
        out[n] = g
    return out


def np_jacobian(p, X, names, control="none", nu=0.5, h=1e-6):
    """(n, P) Jacobian of the outputs on X w.r.t. the entries of p[names], by central
    differences (independent of the closed-form NTK)."""
    cols = []
    for n in names:
        for i in np.ndindex(p[n].shape):
            up = {k: np.array(v, copy=True) for k, v in p.items()}
            dn = {k: np.array(v, copy=True) for k, v in p.items()}
            up[n][i] += h
            dn[n][i] -= h
            cols.append((np_forward(up, X, control, nu) - np_forward(dn, X, control, nu))
                        / (2 * h))
    return np.stack(cols, 1)


def np_grad(p, X, y, control, nu, reduction):
    """Analytic gradient in NumPy (checked against finite differences below)."""
    scale = 1 / len(y) if reduction == "mean" else 1
    W = p["w"]
    if control == "fix_g":
        z = X @ W[0]
        r = (np.sin(nu * np.pi * z) - y) * scale
        return {"w": ((r * nu * np.pi * np.cos(nu * np.pi * z)) @ X)[None, :]}
    z = X @ W.T
    pre = z @ p["u"].T + p["b"]
    h = np.maximum(pre, 0)
    r = (h @ p["v"] - y) * scale
    a = r[:, None] * (pre > 0)
    gz = a @ (p["u"] * p["v"][:, None])
    return {"w": gz.T @ X, "u": p["v"][:, None] * (a.T @ z), "b": p["v"] * a.sum(0),
            "v": h.T @ r}


TRAINED = {"none": ("w", "u", "b", "v"), "pretrain_g": ("w", "u", "b", "v"),
           "freeze_w": ("u", "b", "v"), "fix_g": ("w",)}


def static_of(**kw):
    s = dict(d=5, width=7, k=1, n_train=40, n_val=70, n_eval=30, batch=8, init="lecun",
             control="none", reduction="sum", dtype=jnp.float64, steps=20)
    s.update(kw)
    return s


def hp_of(dtype=jnp.float64, **kw):
    h = dict(nu=0.7, lr=1e-2, cos0=0.4, pretrain_steps=5, replicate=0)
    h.update(kw)
    return {k: jnp.asarray(v, dtype) for k, v in h.items()}


def random_params(rng, d, m, k):
    return {"w": rng.normal(size=(k, d)) / np.sqrt(d), "u": rng.normal(size=(m, k)),
            "b": rng.normal(size=m), "v": rng.normal(size=m) / np.sqrt(m)}


def to_jax(p):
    return {k: jnp.asarray(v) for k, v in p.items()}


# ---- model, gradient, probes ---------------------------------------------------------------
@pytest.mark.parametrize("k,control,reduction", [
    (1, "none", "sum"), (1, "none", "mean"), (3, "none", "sum"), (1, "freeze_w", "mean"),
    (1, "fix_g", "sum"), (2, "freeze_w", "sum")])
def test_model_and_gradient_match_numpy(k, control, reduction):
    rng = np.random.default_rng(k * 10 + len(control))
    d, m, n, nu = 5, 9, 12, 0.8
    static = static_of(d=d, width=m, k=k, control=control, reduction=reduction)
    for _ in range(3):
        p = random_params(rng, d, m, k)
        X = rng.normal(size=(n, d))
        y = np.sin(nu * np.pi * X @ (rng.normal(size=d) / np.sqrt(d)))
        f = bn.forward(to_jax(p), jnp.asarray(p["w"]), jnp.asarray(X), static, nu)
        np.testing.assert_allclose(f, np_forward(p, X, control, nu), rtol=1e-12, atol=1e-12)
        names = TRAINED[control]
        fd = np_fd_grad(lambda q: np_loss(q, X, y, control, nu, reduction), p, names)
        an = np_grad(p, X, y, control, nu, reduction)
        gW, gth = bn.batch_grads(to_jax(p), jnp.asarray(p["w"]), jnp.asarray(X),
                                 jnp.asarray(y), static, nu, want_w=control != "freeze_w")
        got = {**gth, **({"w": gW} if gW is not None else {})}
        auto = jax.grad(lambda q: bn.batch_loss(q, lambda r: r["w"], jnp.asarray(X),
                                                jnp.asarray(y), static, nu))(to_jax(p))
        for nm in names:
            scale = np.abs(fd[nm]).max()
            np.testing.assert_allclose(an[nm], fd[nm], rtol=1e-5, atol=1e-7 * scale)
            np.testing.assert_allclose(got[nm], an[nm], rtol=1e-10, atol=1e-12 * scale)
            np.testing.assert_allclose(auto[nm], an[nm], rtol=1e-10, atol=1e-12 * scale)


@pytest.mark.parametrize("k,control", [(1, "none"), (2, "none"), (1, "freeze_w"),
                                       (1, "fix_g"), (1, "pretrain_g")])
def test_probes_match_numpy(k, control):
    """Losses, |CosSim| (row-space projection for k > 1), the NTK of the trained parameters
    against J·Jᵀ from a finite-difference Jacobian, its extreme eigenvalues, g_θ on the grid;
    the NTK is symmetric PSD and its relative change is exactly 0 at step 0."""
    static = static_of(k=k, control=control)
    hp = hp_of(pretrain_steps=2)
    data = bn.make_data(jax.random.PRNGKey(11), static)
    state = bn.init(jax.random.PRNGKey(5), static, hp, data)
    opts = {**bn.NTK_PROBE.defaults, "n_change": 16, "n_eig": 6}
    step = jax.jit(lambda s: bn.step(s, None, static, hp, data))
    measure = jax.jit(lambda s: bn.measure(s, static, hp, data))
    probe = jax.jit(lambda s: bn._ntk_probe(None, s, static, hp, data, opts))
    g_grid = jax.jit(lambda s: bn._g_grid_probe(None, s, static, hp, data,
                                                bn.G_GRID_PROBE.defaults)["g_grid"])
    kernel = jax.jit(lambda s, W, xc: bn.ntk(s["params"], W, xc, static, 0.7))
    x = np.asarray(data["x"])
    w_star = np.asarray(data["w_star"])
    y_all = np.sin(0.7 * np.pi * x @ w_star)
    assert np.linalg.norm(w_star) == pytest.approx(1.0, abs=1e-14)
    p0 = None
    for t in range(5):
        p = {kk: np.asarray(v) for kk, v in state["params"].items()}
        W = p["w"] if control != "pretrain_g" or t >= 2 else w_star[None, :]
        pe = {**p, "w": W}
        p0 = pe if p0 is None else p0
        m = measure(state)
        tr = np.mean((y_all[:30] - np_forward(pe, x[:30], control, 0.7)) ** 2)
        va = np.mean((y_all[40:110] - np_forward(pe, x[40:110], control, 0.7)) ** 2)
        assert float(m["train_loss"]) == pytest.approx(tr, rel=1e-12)
        assert float(m["val_loss"]) == pytest.approx(va, rel=1e-12)
        proj = np.linalg.pinv(W) @ W @ w_star  # projection of w* on the row space of W
        assert float(m["cos_sim"]) == pytest.approx(np.linalg.norm(proj), rel=1e-12)
        if k == 1:
            c = W[0] @ w_star / np.linalg.norm(W[0])
            assert float(m["cos_signed"]) == pytest.approx(c, rel=1e-12)
            assert float(m["cos_sim"]) == pytest.approx(abs(c), rel=1e-12)
        # NTK of the trained parameters on the probe points, against finite differences
        names = TRAINED[control]
        xc, xe = x[40:56], x[:6]
        J = np_jacobian(pe, xc, names, control, 0.7)
        J0 = np_jacobian(p0, xc, names, control, 0.7)
        K = np.asarray(kernel(state, jnp.asarray(W), jnp.asarray(xc)))
        np.testing.assert_allclose(K, J @ J.T, rtol=1e-6, atol=1e-8 * np.abs(K).max())
        np.testing.assert_allclose(K, K.T, rtol=1e-13, atol=0)
        ev = np.linalg.eigvalsh(0.5 * (K + K.T))
        assert ev[0] >= -1e-12 * ev[-1]
        pr = probe(state)
        ref_change = np.linalg.norm(J @ J.T - J0 @ J0.T) / np.linalg.norm(J0 @ J0.T)
        if t == 0:
            assert float(pr["ntk_change"]) == 0.0
            # the re-drawn K_0 (used from t = 1 on) agrees with the initial state's K
            assert float(probe({**state, "t": state["t"] + 1})["ntk_change"]) < 1e-12
        else:
            assert float(pr["ntk_change"]) == pytest.approx(ref_change, rel=1e-5, abs=1e-9)
        Je = np_jacobian(pe, xe, names, control, 0.7)
        eve = np.linalg.eigvalsh(Je @ Je.T)
        assert float(pr["ntk_max_eig"]) == pytest.approx(eve[-1], rel=1e-6)
        assert float(pr["ntk_min_eig"]) == pytest.approx(eve[0], rel=1e-4, abs=1e-8 * eve[-1])
        g = g_grid(state)
        z = np.linspace(-3, 3, 41)
        if k > 1:
            assert np.isnan(np.asarray(g)).all()
        elif control == "fix_g":
            np.testing.assert_allclose(g, np.sin(0.7 * np.pi * z), rtol=1e-12, atol=1e-14)
        else:
            gref = np.maximum(z[:, None] * p["u"][:, 0] + p["b"], 0) @ p["v"]
            np.testing.assert_allclose(g, gref, rtol=1e-12, atol=1e-14)
        state = step(state)


@pytest.mark.parametrize("dtype", [jnp.float64, jnp.float32])
@pytest.mark.parametrize("d", [10, 100])
def test_cos_init_hits_target_and_keeps_lecun_norm(dtype, d):
    static = static_of(d=d, width=5, init="cos", dtype=dtype)
    lecun = {**static, "init": "lecun"}
    data = bn.make_data(jax.random.PRNGKey(d), static)
    w_star = np.asarray(data["w_star"], np.float64)
    for c0 in [-0.95, -0.3, 0.0, 0.1, 0.5, 0.9, 0.99, 0.999999, 1.0]:
        for rep in range(4):
            hp = hp_of(dtype, cos0=c0, replicate=rep)
            w0 = bn.init(jax.random.PRNGKey(1), static, hp, data)["params"]["w"][0]
            assert w0.dtype == dtype
            w0 = np.asarray(w0, np.float64)
            assert abs(w0 @ w_star / np.linalg.norm(w0) - c0) < 1e-6
            g = np.asarray(bn.init(jax.random.PRNGKey(1), lecun, hp, data)["params"]["w"][0],
                           np.float64)
            assert np.linalg.norm(w0) == pytest.approx(np.linalg.norm(g), rel=1e-6)
    ws = bn.init(jax.random.PRNGKey(1), {**static, "init": "w_star"}, hp_of(dtype), data)
    assert ws["params"]["w"].dtype == dtype
    np.testing.assert_array_equal(ws["params"]["w"][0], data["w_star"])


def test_controls_freeze_w_and_fix_g():
    """freeze_w: w bitwise unchanged, θ moves. fix_g: u, b, v bitwise unchanged, only w moves,
    and by the NumPy SGD step. pretrain_g: w bitwise unchanged while t < pretrain_steps and
    the model uses w* meanwhile. Float32, as in the sweeps."""
    hp = hp_of(jnp.float32, pretrain_steps=4)
    for control in ("freeze_w", "fix_g", "pretrain_g"):
        static = static_of(control=control, dtype=jnp.float32, width=16)
        data = bn.make_data(jax.random.PRNGKey(2), static)
        s0 = bn.init(jax.random.PRNGKey(3), static, hp, data)
        step = jax.jit(lambda s, st=static: bn.step(s, None, st, hp, data))
        s = s0
        for t in range(4):
            if t == 3 and control == "pretrain_g":  # still pretraining: the model uses w*
                c = float(bn.measure(s, static, hp, data)["cos_sim"])
                assert c == pytest.approx(1, abs=1e-6)
            s = step(s)
        p0, p = s0["params"], s["params"]
        if control == "freeze_w":
            assert np.array_equal(p["w"], p0["w"])
            assert all(not np.array_equal(p[n], p0[n]) for n in "ubv")
        elif control == "fix_g":
            assert all(np.array_equal(p[n], p0[n]) for n in "ubv")
            assert not np.array_equal(p["w"], p0["w"])
        else:
            assert np.array_equal(p["w"], p0["w"]) and int(s["t"]) == 4
            assert all(not np.array_equal(p[n], p0[n]) for n in "ubv")
            s5 = step(s)  # t = 4 = pretrain_steps: now w trains too
            assert not np.array_equal(s5["params"]["w"], p0["w"])
    # fix_g: one SGD step of w equals NumPy's (float64)
    static = static_of(control="fix_g", width=16)
    hp = hp_of()
    data = bn.make_data(jax.random.PRNGKey(2), static)
    s0 = bn.init(jax.random.PRNGKey(3), static, hp, data)
    s1 = bn.step(s0, None, static, hp, data)
    idx = np.asarray(data["order"][0])
    X = np.asarray(data["x"])[idx]
    y = np.sin(0.7 * np.pi * X @ np.asarray(data["w_star"]))
    p0 = {k: np.asarray(v) for k, v in s0["params"].items()}
    ref = p0["w"] - 1e-2 * np_grad(p0, X, y, "fix_g", 0.7, "sum")["w"]
    np.testing.assert_allclose(s1["params"]["w"], ref, rtol=1e-12)


def test_make_data_shared_and_batches_are_epochs():
    """Minibatches are consecutive permutations of the training set; inputs are standard
    normal and w* is a unit vector (one draw per data seed)."""
    static = static_of(n_train=40, batch=8, steps=25)
    data = bn.make_data(jax.random.PRNGKey(0), static)
    order = np.asarray(data["order"])
    assert order.shape == (25, 8) and order.dtype == np.int32
    flat = order.reshape(-1)
    for e in range(5):  # 25 * 8 = 200 = 5 epochs of 40
        assert sorted(flat[40 * e:40 * (e + 1)]) == list(range(40))
    assert not np.array_equal(flat[:40], flat[40:80])
    x = np.asarray(data["x"])
    assert x.shape == (110, 5)
    np.testing.assert_allclose(np.asarray(data["z_star"]), x @ np.asarray(data["w_star"]),
                               rtol=1e-12)
    big = bn.make_data(jax.random.PRNGKey(0), static_of(d=10, n_train=20000, n_val=0))
    assert abs(np.asarray(big["x"]).mean()) < 0.01 and abs(np.asarray(big["x"]).std() - 1) < 0.01


# ---- the engine against NumPy SGD ------------------------------------------------------------
def test_engine_trajectory_and_probes_match_numpy_sgd(cli, write_sweep, tmp_path):
    """Float64 runs through `jaxdyn run` (all four controls, cone init, two replicates)
    against a NumPy SGD loop from the same initial parameters and the same batches: losses,
    CosSim, NTK change and eigenvalues, g_grid at every logged step. freeze_w's w is bitwise
    constant in the tables; fix_g's loss uses g* exactly."""
    path = write_sweep("""
        name = "traj"
        experiment = "bottleneck.three_layer"
        steps = 24
        seeds = [3]
        log = { every = 6 }
        precision = "float64"
        probes = { ntk = { every = 12, n_change = 10, n_eig = 6 }, g_grid = { every = 6, n_grid = 9, z_max = 2.0 } }
        [fixed]
        d = 4
        width = 6
        n_train = 24
        n_val = 20
        n_eval = 16
        batch = 5
        reduction = "mean"
        init = "cos"
        nu = 0.9
        lr = 0.2
        pretrain_steps = 10
        [grid]
        control = ["none", "freeze_w", "fix_g", "pretrain_g"]
        cos0 = [0.3]
        replicate = [0, 1]
    """)
    code, _, err = cli("run", path, "--out", tmp_path, "--quiet")
    assert code == 0, err
    res = jaxdyn.load(tmp_path / "traj")
    runs, curves = res.runs, res.curves()
    assert len(runs) == 8 and (runs.status == "ok").all()
    static = static_of(d=4, width=6, n_train=24, n_val=20, n_eval=16, batch=5,
                       reduction="mean", init="cos", steps=24)
    data = bn.make_data(jax.random.fold_in(jax.random.PRNGKey(3), 2), static)
    x, w_star, order = (np.asarray(data[k]) for k in ("x", "w_star", "order"))
    y_all = np.sin(0.9 * np.pi * x @ w_star)
    zg = np.linspace(-2, 2, 9)
    for r in runs.itertuples():
        st = {**static, "control": r.control}
        hp = hp_of(nu=0.9, lr=0.2, cos0=0.3, pretrain_steps=10, replicate=r.replicate)
        s0 = bn.init(jax.random.fold_in(jax.random.PRNGKey(3), 0), st, hp, data)
        p = {k: np.asarray(v) for k, v in s0["params"].items()}
        c = curves[curves.run_id == r.run_id].set_index("step")
        names = TRAINED[r.control]
        p0e = None
        for t in range(25):
            pre = r.control == "pretrain_g" and t < 10
            pe = {**p, "w": w_star[None, :] if pre else p["w"]}
            p0e = pe if p0e is None else p0e
            if t % 6 == 0:
                row = c.loc[t]
                ctl = r.control
                tr = np.mean((y_all[:16] - np_forward(pe, x[:16], ctl, 0.9)) ** 2)
                va = np.mean((y_all[24:44] - np_forward(pe, x[24:44], ctl, 0.9)) ** 2)
                cs = abs(pe["w"][0] @ w_star) / np.linalg.norm(pe["w"][0])
                np.testing.assert_allclose([row.train_loss, row.val_loss, row.cos_sim],
                                           [tr, va, cs], rtol=1e-9)
                if ctl == "fix_g":
                    gref = np.sin(0.9 * np.pi * zg)
                else:
                    gref = np.maximum(zg[:, None] * pe["u"][:, 0] + pe["b"], 0) @ pe["v"]
                np.testing.assert_allclose(np.asarray(row.g_grid), gref, rtol=1e-9, atol=1e-12)
                if t % 12 == 0:
                    K = (lambda J: J @ J.T)(np_jacobian(pe, x[24:34], names, ctl, 0.9))
                    K0 = (lambda J: J @ J.T)(np_jacobian(p0e, x[24:34], names, ctl, 0.9))
                    ch = np.linalg.norm(K - K0) / np.linalg.norm(K0)
                    assert row.ntk_change == pytest.approx(ch, rel=1e-5, abs=1e-9)
                    Je = np_jacobian(pe, x[:6], names, ctl, 0.9)
                    ev = np.linalg.eigvalsh(Je @ Je.T)
                    assert row.ntk_max_eig == pytest.approx(ev[-1], rel=1e-6)
                    assert row.ntk_min_eig == pytest.approx(ev[0], rel=1e-4, abs=1e-8 * ev[-1])
                else:
                    assert np.isnan(row.ntk_change)
            if t == 24:
                break
            idx = order[t]
            g = np_grad(pe, x[idx], y_all[idx], r.control, 0.9, "mean")
            for n in names:
                if n == "w" and pre:
                    continue
                p = {**p, n: p[n] - 0.2 * g[n]}
        assert c.loc[0, "ntk_change"] == 0.0
        if r.control == "freeze_w":  # w never moves: its norm and cosine are bitwise constant
            assert c.w_norm.nunique() == 1 and c.cos_signed.nunique() == 1
        assert r.final_train_loss == pytest.approx(c.loc[24, "train_loss"], rel=1e-12)


# ---- toy objective ------------------------------------------------------------------------------
def test_toy_ring_restricted_stalls_free_escapes(cli, write_sweep, tmp_path):
    path = write_sweep("""
        name = "ring"
        experiment = "toy.ring"
        steps = 20000
        seeds = 1
        log = { every = 5000 }
        precision = "float64"
        [fixed]
        lr = 0.01
        [grid]
        mode = ["free", "restricted"]
        noise = [0.0, 0.05]
        x0 = { start = -1.9, stop = 1.9, num = 20 }
        y0 = [-1.0, -0.2, 0.0, 0.3, 1.2]
    """)
    code, _, err = cli("run", path, "--out", tmp_path, "--quiet")
    assert code == 0, err
    r = jaxdyn.load(tmp_path / "ring").runs
    assert (r.status == "ok").all()
    # critical points on y = 0: 4x(x² − 1) = 0.5
    crit = np.sort(np.roots([4, 0, -4, -0.5]).real)
    x_loc, x_bar, x_glob = crit  # ≈ −0.93 (1-D local min / 2-D saddle), −0.13, 1.06
    assert x_loc == pytest.approx(-0.93, abs=0.01) and x_glob == pytest.approx(1.06, abs=0.01)
    res = r[r["mode"] == "restricted"]
    assert (res.final_y == 0).all()
    left, right = res[res.x0 < x_bar], res[res.x0 > x_bar]
    assert len(left) >= 40 and len(right) >= 40
    print(f"restricted, left of x = {x_bar:.3f}: final x in [{left.final_x.min():.4f}, "
          f"{left.final_x.max():.4f}] (x_loc = {x_loc:.4f})")
    assert np.abs(left.final_x - x_loc).max() < 0.03
    assert np.abs(left[left.noise == 0].final_x - x_loc).max() < 1e-8
    assert np.abs(right.final_x - x_glob).max() < 0.03
    free = r[r["mode"] == "free"]
    perturbed = free[(free.y0 != 0) | (free.noise > 0)]
    print(f"free (off-axis or noisy) runs: final x in [{perturbed.final_x.min():.4f}, "
          f"{perturbed.final_x.max():.4f}], |y| <= {perturbed.final_y.abs().max():.4f}")
    assert len(perturbed) == len(free) - 20
    assert np.abs(perturbed.final_x - x_glob).max() < 0.03
    assert perturbed.final_y.abs().max() < 0.05
    # exactly on the axis without noise, the free problem is the restricted one: the saddle
    on_axis = free[(free.y0 == 0) & (free.noise == 0) & (free.x0 < x_bar)]
    assert np.abs(on_axis.final_x - x_loc).max() < 1e-8


# ---- the hypothesis test ------------------------------------------------------------------------
def test_success_at_nu_half_exceeds_nu_three_halves(cli, write_sweep, tmp_path):
    """Hypothesis 1 of the thesis (Fig. 4.3) on a reduced budget: d = 10, width 100,
    n_train = 1000, 2,000 SGD steps at batch 32 and lr 0.016 on the batch-mean loss (= lr 5e-4
    on the batch sum), 2 data seeds × 32 initialisations per ν. Success (final |CosSim| >
    0.99) is more frequent at ν = 0.5 than at ν = 1.5 (one-sided Fisher exact test p < 1e-3);
    final losses are bimodal and |CosSim| separates the modes."""
    path = write_sweep("""
        name = "hyp"
        experiment = "bottleneck.three_layer"
        steps = 2000
        seeds = 2
        log = { every = 1000 }
        [fixed]
        d = 10
        width = 100
        n_train = 1000
        n_val = 256
        n_eval = 256
        lr = 0.016
        [grid]
        nu = [0.5, 1.5]
        replicate = { start = 0, stop = 31, num = 32 }
    """)
    code, _, err = cli("run", path, "--out", tmp_path, "--quiet")
    assert code == 0, err
    r = jaxdyn.load(tmp_path / "hyp").runs
    assert len(r) == 128 and (r.status == "ok").all()
    ok = r.final_cos_sim > 0.99
    n5, n15 = (r.nu == 0.5).sum(), (r.nu == 1.5).sum()
    s5, s15 = ok[r.nu == 0.5].sum(), ok[r.nu == 1.5].sum()
    p = fisher_exact([[s5, n5 - s5], [s15, n15 - s15]], alternative="greater")[1]
    print(f"success: nu=0.5 {s5}/{n5}, nu=1.5 {s15}/{n15}; one-sided Fisher p = {p:.2e}")
    assert n5 == n15 == 64 and s5 > s15 and p < 1e-3
    # bimodal losses, separated by CosSim: every success fits well, every failure does not
    assert r[ok].final_val_loss.max() < 0.05 < 0.2 < r[~ok].final_val_loss.min()


# ---- notebooks ----------------------------------------------------------------------------------
QUICK = ["steps=1500", "seeds=1", "width=64", "lr=0.02", "n_val=128", "n_eval=128",
         "log.every=250"]
NOTEBOOK_SWEEPS = [
    ("bottleneck_success.toml", QUICK + ["n_train=500", "grid.nu=[0.5,1.5]",
                                         "grid.replicate={start=0,stop=11,num=12}"]),
    ("bottleneck_cos_init.toml", QUICK + ["n_train=500", "grid.nu=[0.5,1.5]",
                                          "grid.cos0=[0.1,0.9]",
                                          "grid.replicate={start=0,stop=5,num=6}"]),
    ("bottleneck_w_star.toml", QUICK + ["n_train=500", "grid.nu=[0.5,1.5]",
                                        "grid.replicate={start=0,stop=3,num=4}"]),
    ("bottleneck_one_d.toml", QUICK + ["n_train=500", "grid.nu=[0.5,1.5]",
                                       "grid.replicate={start=0,stop=3,num=4}"]),
    ("bottleneck_fix_g.toml", QUICK + ["n_train=500", "grid.nu=[0.5,1.5]",
                                       "grid.cos0=[0.1,0.9]",
                                       "grid.replicate={start=0,stop=5,num=6}"]),
    ("bottleneck_pretrain_g.toml", QUICK + ["n_train=500", "pretrain_steps=500",
                                            "grid.nu=[0.5,1.5]", "grid.cos0=[0.1,0.9]",
                                            "grid.replicate={start=0,stop=5,num=6}"]),
    ("bottleneck_phases.toml", QUICK + ["n_train=500", "init=lecun", "grid.nu=[0.5,1.0]",
                                        "grid.replicate={start=0,stop=3,num=4}",
                                        "probes.ntk.every=250", "probes.g_grid.every=500"]),
    ("bottleneck_k.toml", QUICK + ["n_train=500", "grid.k=[1,2]", "grid.nu=[0.5,1.5]",
                                   "grid.replicate={start=0,stop=3,num=4}"]),
    ("bottleneck_ntrain_d100.toml", QUICK + ["grid.n_train=[100,1000]",
                                             "grid.replicate={start=0,stop=1,num=2}"]),
    ("toy_ring.toml", ["steps=5000", "grid.x0={start=-2.0,stop=2.0,num=9}",
                       "grid.y0={start=-2.0,stop=2.0,num=5}"]),
]


@pytest.fixture(scope="module")
def notebook_results(tmp_path_factory):
    from conftest import ROOT
    from jaxdyn.cli import main

    out = tmp_path_factory.mktemp("bottleneck_results")
    for f, sets in NOTEBOOK_SWEEPS:
        args = ["run", str(ROOT / "sweeps" / f), "--out", str(out), "--quiet"]
        for s in sets:
            args += ["--set", s]
        assert main(args) == 0, f
    return out


@pytest.mark.parametrize("nb", ["bottleneck_hypotheses.ipynb", "bottleneck_phases.ipynb",
                                "bottleneck_control.ipynb", "bottleneck_scaling.ipynb"])
def test_bottleneck_notebooks(nb, notebook_results):
    execute_notebook(nb, notebook_results)
