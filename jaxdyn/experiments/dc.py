"""Differential capability (DC): a single neuron trained with a Gompertz-law loss
(seed 000_898e9d6ee5480e55; see docs/science/dc.md).

``dc.neuron``. Data: m points in R², two Gaussian blobs with means ±sep·u (u a random unit
vector per data seed), unit covariance, labels y = ±1 (m/2 each), optional label noise
(each label flipped with probability ``label_noise``), a random 80/20 train/test split.
Model: θ ∈ R² (+ optional bias β), margin t = y·(θᵀx + β). SGD, mean loss over minibatches
of ``batch`` points, a fresh permutation of the training set every epoch, the last batch of
an epoch partial (800 = 10·75 + 50: 11 steps per epoch, 1500 epochs = 16 500 steps).

The DC response, eq. (3) of the seed (2PL IRT item response with a Gompertz law):

    P(t) = a·exp(b·exp(−r(t − d))),   a = e^ε, ε = c/r, b = ln P_d − ε   (b < 0, P(d) = P_d)

static ``loss``:
    nll       ℓ(t) = −log P(t) = −ε − b·e^{−r(t−d)}       ℓ'(t) = b·r·e^{−r(t−d)}
    prob      ℓ(t) = 1 − P(t)                              ℓ'(t) = b·r·e^{−r(t−d)}·P(t)
    logistic  ℓ(t) = log(1 + e^{−t})                       ℓ'(t) = −1/(1 + e^{t})

Theory: the convergence rate g^DC(z) = d + (W0(b·e^{−z}) + z)/r, z = ln t, with W0 the
principal branch of Lambert's W (``lambertw0``, ``g_dc`` below); the default rate is z.
g^DC is the inverse of f(t) = r(t − d) − b·e^{−r(t−d)}, the exponent of ℓ'(t) ∝ −e^{−f(t)} for
``prob``; for ``nll`` f(t) = r(t − d) + const, which g^DC approaches as z → ∞.

Performance design (the point of this module): every run of a chunk shares its seed (the
engine never lets a chunk span seeds when make_data is set), hence its data and minibatch
order, which ``make_data`` draws once: the whole chunk then does one (runs × batch) block of
element-wise work and one (runs × batch)·(batch × 4) matrix product per step. The blob
separation ``sep`` is dynamic yet the data are shared: the data keep the seed's base noise z,
labels and direction u, and a run forms its margins as t_i = sep·s_i·(θ·u) + θ·w_i + β·y_i
with w_i = y_i z_i and s_i = y_i·y_true,i (1 without label noise).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.custom_batching import custom_vmap

from jaxdyn.experiments import _checks
from jaxdyn.experiments.base import Experiment, Metric
from jaxdyn.optim import optimizer
from jaxdyn.spec import Param

LOSSES = ("nll", "prob", "logistic")
#: columns of the train/test tables: w = y·z (two), s = y·y_true, y (observed label)
W0_COL, W1_COL, S_COL, Y_COL = range(4)
#: largest number of convex-hull vertices kept per data set (800 Gaussian points have ~15)
HULL_MAX = 64


# ---- Lambert W0 and the convergence rate g^DC ---------------------------------------------
# 1/e as an unevaluated sum hi + lo for each precision: x + 1/e is then exact to the last
# bit near the branch point x = −1/e (Sterbenz), which fixes W0's accuracy there.
_INV_E = {np.dtype(np.float64): (0.36787944117144233, -1.2428753672788363e-17),
          np.dtype(np.float32): (0.3678794503211975, -9.149755188170102e-09)}
# W0(x) = Σ μ_k p^k, p = sqrt(2(e·x + 1)) (Corless et al. 1996, eq. 4.22)
_BRANCH_SERIES = (-1.0, 1.0, -1.0 / 3.0, 11.0 / 72.0, -43.0 / 540.0, 769.0 / 17280.0,
                  -221.0 / 8505.0, 680863.0 / 43545600.0, -1963.0 / 204120.0,
                  226287557.0 / 37623398400.0)


def _branch_series(p):
    acc = jnp.full_like(p, _BRANCH_SERIES[-1])
    for coef in _BRANCH_SERIES[-2::-1]:
        acc = acc * p + coef
    return acc


def lambertw0(x):
    """Principal branch W0 of Lambert's W (w·e^w = x, w ≥ −1), element-wise, in x's precision.

    Domain [−1/e, ∞): NaN below −1/e, W0(−1/e) = −1, W0(0) = 0, W0(∞) = ∞. Near the branch
    point (p = sqrt(2(e·x + 1)) < 0.05) the series in p to p⁹; elsewhere a start value (that
    series for x < −0.25, log1p-based in between, the asymptotic ln x − ln ln x for x > 3)
    refined by fixed Halley steps on w·e^w − x (x ≤ 20) or Fritsch steps on w + ln w − ln x
    (x > 20, no overflow up to the largest float). Jit-, vmap- and dtype-friendly.
    """
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        x = x.astype(jnp.float64 if jax.config.jax_enable_x64 else jnp.float32)
    dt = x.dtype
    hi, lo = _INV_E.get(np.dtype(dt), _INV_E[np.dtype(np.float32)])
    # x + 1/e; the barrier stops XLA from folding hi + lo into one (rounded) constant
    q = jax.lax.optimization_barrier(x + jnp.asarray(hi, dt)) + jnp.asarray(lo, dt)
    # the float nearest to −1/e lies just below it: accept it (and anything rounding to
    # it) as the branch point, W0 = −1, like SciPy
    below = x < -jnp.asarray(hi, dt)
    q = jnp.maximum(q, 0.0)
    p = jnp.sqrt((2.0 * math.e * q).astype(dt))
    w_branch = _branch_series(p)

    # start values
    xs = jnp.maximum(x, -0.25)
    l1 = jnp.log1p(xs)
    w_mid = l1 * (1.0 - jnp.log1p(l1) / (2.0 + l1))              # Winitzki (2003)
    xl = jnp.maximum(x, 3.0)
    L1 = jnp.log(xl)
    L2 = jnp.log(L1)
    w_big = L1 - L2 + L2 / L1
    w = jnp.where(x < -0.25, w_branch, jnp.where(x <= 3.0, w_mid, w_big))

    # Halley on f(w) = w e^w − x for x ≤ 20 (e^w ≤ e^2.2: no overflow)
    n_iter = 6 if np.dtype(dt).itemsize >= 8 else 4
    wh = jnp.where(x <= 20.0, w, 0.0)
    for _ in range(n_iter):
        ew = jnp.exp(wh)
        f = wh * ew - x
        wp1 = wh + 1.0
        den = ew * wp1 - (wh + 2.0) * f / (2.0 * wp1)
        wh = wh - jnp.where(den != 0, f / jnp.where(den != 0, den, 1.0), 0.0)
    # Fritsch et al. (1973) on w + ln w = ln x for x > 20 (w > 2)
    wf = jnp.where(x > 20.0, w, 3.0)
    lx = jnp.log(jnp.maximum(x, 20.0))
    for _ in range(3):
        zn = lx - jnp.log(wf) - wf
        qn = 2.0 * (1.0 + wf) * (1.0 + wf + 2.0 * zn / 3.0)
        wf = wf * (1.0 + zn / (1.0 + wf) * (qn - zn) / (qn - 2.0 * zn))

    out = jnp.where(x <= 20.0, wh, wf)
    out = jnp.where(p < 0.05, w_branch, out)
    out = jnp.where(x == 0, jnp.zeros_like(x), out)
    out = jnp.where(x == jnp.inf, x, out)
    return jnp.where(below | jnp.isnan(x), jnp.nan, out).astype(dt)


def dc_b(p_d, r, c):
    """b = ln P_d − c/r (< 0 for 0 < P_d < 1, c ≥ 0)."""
    return jnp.log(p_d) - c / r


def g_dc(z, d=0.0, p_d=0.5, r=1.0, c=0.0):
    """The seed's convergence rate (eq. 4 of seed 000; see docs/science/dc.md):
    g^DC(z) = d + (W0(b·e^{−z}) + z)/r, z = ln t.

    Defined where b·e^{−z} ≥ −1/e, i.e. z ≥ 1 + ln(−b) (NaN below). Broadcasts over all
    arguments. ``dg/dz = 1/(r·(1 + W0(b·e^{−z})))`` → 1/r as z → ∞.
    """
    z = jnp.asarray(z)
    b = dc_b(jnp.asarray(p_d, z.dtype), jnp.asarray(r, z.dtype), jnp.asarray(c, z.dtype))
    return d + (lambertw0(b * jnp.exp(-z)) + z) / r


def f_dc(t, d=0.0, p_d=0.5, r=1.0, c=0.0):
    """f(t) = r(t − d) − b·e^{−r(t−d)}, the exponent in ℓ'_prob(t) = −a|b|r·e^{−f(t)}; g^DC = f⁻¹."""
    b = dc_b(p_d, r, c)
    return r * (t - d) - b * jnp.exp(-r * (t - d))


# ---- the losses ---------------------------------------------------------------------------
def dc_loss(t, kind: str, hp):
    """ℓ(t) for margin(s) t; ``hp`` holds d, p_d, r, c (ignored by ``logistic``)."""
    if kind == "logistic":
        return jax.nn.softplus(-t)
    r, d = hp["r"], hp["d"]
    eps = hp["c"] / r
    b = jnp.log(hp["p_d"]) - eps
    ex = jnp.exp(-r * (t - d))
    if kind == "nll":
        return -eps - b * ex
    if kind == "prob":
        return 1.0 - jnp.exp(eps + b * ex)   # e^{ε + b·e^x}: 0, not NaN, when e^x overflows
    raise ValueError(f"unknown loss {kind!r}; expected one of {LOSSES}")


def dc_dloss(t, kind: str, hp):
    """ℓ'(t), written out (the step uses it; the tests check it against autodiff and NumPy)."""
    if kind == "logistic":
        return -jax.nn.sigmoid(-t)
    r, d = hp["r"], hp["d"]
    br = r * jnp.log(hp["p_d"]) - hp["c"]   # b·r
    x = -r * (t - d)
    if kind == "nll":
        return br * jnp.exp(x)
    if kind == "prob":
        eps = hp["c"] / r
        b = jnp.log(hp["p_d"]) - eps
        return br * jnp.exp(x + eps + b * jnp.exp(x))
    raise ValueError(f"unknown loss {kind!r}; expected one of {LOSSES}")


# ---- data -----------------------------------------------------------------------------------
def split_sizes(static) -> tuple[int, int]:
    m = int(static["m"])
    n_train = int(round(0.8 * m))
    return n_train, m - n_train


def steps_per_epoch(static) -> int:
    return -(-split_sizes(static)[0] // int(static["batch"]))


def check_epochs(static) -> None:
    """``epochs``: 0 (no check) or > 0, and then ``steps`` = epochs × steps per epoch."""
    epochs, steps = int(static.get("epochs", 0) or 0), int(static["steps"])
    _checks.at_least("epochs", epochs, 0, "0: no check; else steps must be epochs × the steps "
                                          "per epoch")
    if epochs:
        nb = steps_per_epoch(static)
        if epochs * nb != steps:
            raise ValueError(f"epochs = {epochs} needs steps = epochs × {nb} steps per epoch "
                             f"(⌈{split_sizes(static)[0]} training points / batch "
                             f"{static['batch']}⌉) = {epochs * nb}, got steps = {steps}")


def _hull_ccw(P, valid, kmax: int = HULL_MAX):
    """Convex hull of the valid rows of P (n, 2), counter-clockwise from the lowest point, by
    gift wrapping with a fixed number of steps: ``(V (kmax, 2), closed)``. After the hull
    closes the sequence stays at its first vertex (zero-length edges), so consecutive rows
    (cyclically) are exactly the hull's edges. ``closed`` is False if it has > kmax vertices."""
    dt = P.dtype
    i0 = jnp.argmin(jnp.where(valid, P[:, 1], jnp.inf))
    two_pi = jnp.asarray(2 * math.pi, dt)

    def body(carry, _):
        cur, dvec, done = carry
        v = P - P[cur]
        ang = jnp.arctan2(dvec[0] * v[:, 1] - dvec[1] * v[:, 0],
                          dvec[0] * v[:, 0] + dvec[1] * v[:, 1])
        ang = jnp.where(ang < 0, ang + two_pi, ang)
        dist2 = v[:, 0] ** 2 + v[:, 1] ** 2
        # (a point collinear with an edge may become a vertex in its middle: harmless)
        ang = jnp.where(valid & (dist2 > 0), ang, jnp.inf)
        nxt = jnp.argmin(ang)
        step = v[nxt] / jnp.sqrt(jnp.maximum(dist2[nxt], jnp.finfo(dt).tiny))
        # back at the start (by coordinates: P may hold duplicates): stay there
        done = done | jnp.all(P[nxt] == P[i0])
        nxt = jnp.where(done, i0, nxt)
        dvec = jnp.where(done, dvec, step)
        return (nxt, dvec, done), P[nxt]

    init = (i0, jnp.asarray([1.0, 0.0], dt), jnp.asarray(False))
    (_, _, done), rest = jax.lax.scan(body, init, None, length=kmax - 1)
    V = jnp.concatenate([P[i0][None], rest])
    # closed iff the walk came back to the start within kmax vertices (the last row is
    # then the start again, or the hull has exactly kmax vertices and closes on the roll)
    return V, done


def _permutations(key, rows: int, n: int):
    """``rows`` random permutations of range(n): argsort of 32-bit random keys (one sort;
    compiles in a fraction of jax.random.permutation's time, which sorts several rounds)."""
    return jnp.argsort(jax.random.bits(key, (rows, n), jnp.uint32), axis=1).astype(jnp.int32)


def make_data(key, static):
    """The seed's data set and minibatch order, drawn once per data seed (shared by every
    run of that seed, whatever their dynamic hyperparameters)."""
    dt = static["dtype"]
    m, B = int(static["m"]), int(static["batch"])
    n_train, n_test = split_sizes(static)
    nb = steps_per_epoch(static)
    steps = int(static["steps"])
    check_epochs(static)  # jaxdyn.run checks it first (check_neuron); direct callers here
    n_epochs = -(-steps // nb)
    k_u, k_z, k_noise, k_split, k_order = jax.random.split(key, 5)

    phi = jax.random.uniform(k_u, (), dt, 0.0, 2 * math.pi)
    u = jnp.stack([jnp.cos(phi), jnp.sin(phi)])
    y_true = jnp.where(jnp.arange(m) < m // 2, 1.0, -1.0).astype(dt)
    z = jax.random.normal(k_z, (m, 2), dt)
    noise = float(static["label_noise"])
    if noise > 0:
        flip = jax.random.uniform(k_noise, (m,), dt) < noise
        y = jnp.where(flip, -y_true, y_true)
    else:
        y = y_true
    table = jnp.stack([y * z[:, 0], y * z[:, 1], y * y_true, y], axis=1).astype(dt)
    perm = _permutations(k_split, 1, m)[0]
    train, test = table[perm[:n_train]], table[perm[n_train:]]

    # every epoch's permutation of the training set, padded to nb·B (weight 0)
    order = jnp.pad(_permutations(k_order, n_epochs, n_train), ((0, 0), (0, nb * B - n_train)))
    pos = np.arange(nb * B)
    sizes = np.minimum(B, n_train - (pos // B) * B)
    wts = jnp.asarray(np.where(pos < n_train, 1.0 / sizes, 0.0), dt)

    # max-margin geometry: with margins p_i = s_i·sep·u + w_i (no bias) the max-margin
    # direction is that of the min-norm point of hull{p_i} = sep·u + hull{w_i} (s_i = 1);
    # with a bias, of hull{x_i − x_j : y_i = 1, y_j = −1} = 2·sep·u + hull(W+) ⊕ hull(W−)
    w = train[:, :2]
    ytr = train[:, Y_COL]
    clean = jnp.all(train[:, S_COL] > 0)  # a flipped training label: not separable (a.s.)
    if static["bias"]:
        Hp, okp = _hull_ccw(w, ytr > 0)
        Hm, okm = _hull_ccw(w, ytr < 0)
        cand = (Hp[:, None, :] + Hm[None, :, :]).reshape(-1, 2)
        hull, ok = _hull_ccw(cand, jnp.ones(cand.shape[0], bool))
        ok = ok & okp & okm
    else:
        hull, ok = _hull_ccw(w, jnp.ones(n_train, bool))
    return {"u": u, "train": train, "test": test, "order": order, "wts": wts,
            "hull": hull, "hull_ok": ok & clean}


# ---- the model ------------------------------------------------------------------------------
@custom_vmap
def _chunk_step_index(k):
    return k


@_chunk_step_index.def_vmap
def _chunk_step_index_vmap(axis_size, in_batched, k):
    # The step counter is a state leaf, so the engine's per-run freeze makes it batched,
    # though every live run of a chunk holds the same value (runs only ever freeze, they
    # never run ahead). Its max over the batch is that value, unbatched: the minibatch
    # gather stays one shared (batch, 4) slice, not a per-run gather. A frozen run's new
    # state is discarded anyway, so nothing it computes with this index matters.
    return (jnp.max(k, axis=0) if in_batched[0] else k), False


def margins(params, hp, table, u, static):
    """t_i = y_i(θᵀx_i + β) = sep·s_i·(θ·u) + θ·w_i + β·y_i for the rows of ``table``."""
    tu = hp["sep"] * (params["w0"] * u[0] + params["w1"] * u[1])
    t = params["w0"] * table[:, W0_COL] + params["w1"] * table[:, W1_COL]
    t = t + (tu * table[:, S_COL] if float(static["label_noise"]) > 0 else tu)
    if static["bias"]:
        t = t + params["b"] * table[:, Y_COL]
    return t


def batch_loss(params, hp, rows, wts, u, static):
    """Σ_i wts_i·ℓ(t_i) (the minibatch mean for wts = 1/|batch|)."""
    return jnp.sum(wts * dc_loss(margins(params, hp, rows, u, static), static["loss"], hp))


def batch_grad(params, hp, rows, wts, u, static):
    """∇ of ``batch_loss``, by hand, arranged for speed.

    ℓ'(t) = scale·h(x) with x = α·t + β affine in the margin (nll, prob: α = −r, β = r·d,
    scale = b·r; logistic: α = 1, β = 0, scale = −1), so x_i = A·(w_i, s_i, y_i) with
    per-run coefficients A = α·(θ, sep·θ·u, β_bias) (+ β): the per-point work is two or
    three multiply-adds and the exponential(s) of h. Then Σ_i wts_i·h(x_i)·(w_i, s_i, y_i) is
    one (batch,)·(batch, 4) product (under vmap one matrix product for the whole chunk), and
    ∂t_i/∂θ = sep·s_i·u + w_i, ∂t_i/∂β = y_i finish the gradient."""
    kind = static["loss"]
    th0, th1 = params["w0"], params["w1"]
    tu = hp["sep"] * (th0 * u[0] + th1 * u[1])
    if kind == "logistic":
        alpha, beta, scale = 1.0, 0.0, -1.0
    else:
        r = hp["r"]
        alpha, beta = -r, r * hp["d"]
        scale = r * jnp.log(hp["p_d"]) - hp["c"]          # b·r
    x = (alpha * th0) * rows[:, W0_COL] + (alpha * th1) * rows[:, W1_COL]
    if float(static["label_noise"]) > 0:
        x = x + (alpha * tu) * rows[:, S_COL] + beta
    else:
        x = x + (alpha * tu + beta)
    if static["bias"]:
        x = x + (alpha * params["b"]) * rows[:, Y_COL]
    if kind == "nll":
        h = jnp.exp(x)
    elif kind == "prob":
        eps = hp["c"] / hp["r"]
        b = jnp.log(hp["p_d"]) - eps
        h = jnp.exp(x + eps + b * jnp.exp(x))   # 0, not NaN, when e^x overflows
    else:
        h = 1.0 / (1.0 + jnp.exp(x))
    S = scale * (h @ (rows * wts[:, None]))        # (4,): under vmap one matrix product
    gs = hp["sep"] * S[S_COL]
    out = {"w0": S[W0_COL] + gs * u[0], "w1": S[W1_COL] + gs * u[1]}
    if static["bias"]:
        out["b"] = S[Y_COL]
    return out


def _params(state):
    return state["params"]


def _init(key, static, hp, data):
    dt = static["dtype"]
    th = hp["init_scale"] * jax.random.normal(key, (2,), dt)
    params = {"w0": th[0], "w1": th[1]}   # one scalar leaf each: contiguous (runs,) arrays
    if static["bias"]:
        params["b"] = jnp.zeros((), dt)
    return {"params": params, "opt": optimizer(static, hp).init(params),
            "k": jnp.zeros((), jnp.int32)}


def _step(state, key, static, hp, data):
    B = int(static["batch"])
    nb = steps_per_epoch(static)
    k = _chunk_step_index(state["k"])
    e, j = k // nb, k % nb
    idx = jax.lax.dynamic_slice(data["order"], (e, j * B), (1, B))[0]
    rows = data["train"][idx]                                   # (B, 4), shared by the chunk
    wts = jax.lax.dynamic_slice(data["wts"], (j * B,), (B,))
    grads = batch_grad(state["params"], hp, rows, wts, data["u"], static)
    opt = optimizer(static, hp)  # the sweep's optimizer (default sgd(lr)), traced
    updates, opt_state = opt.update(grads, state["opt"], state["params"])
    return {"params": optax.apply_updates(state["params"], updates), "opt": opt_state,
            "k": state["k"] + 1}


def max_margin(hp, data, static):
    """(unit max-margin direction θ̂/‖θ̂‖ (2,), geometric margin γ = 1/‖θ̂‖) of the run's
    training set; NaN if it is not separable (through the origin, or with a bias)."""
    cf = 2.0 if static["bias"] else 1.0
    A = data["hull"] + cf * hp["sep"] * data["u"]
    E = jnp.roll(A, -1, axis=0) - A
    L2 = jnp.sum(E * E, axis=1)
    tt = jnp.clip(-jnp.sum(A * E, axis=1) / jnp.where(L2 > 0, L2, 1.0), 0.0, 1.0)
    Q = A + tt[:, None] * E
    n2 = jnp.sum(Q * Q, axis=1)
    q = Q[jnp.argmin(n2)]
    nq = jnp.sqrt(jnp.min(n2))
    outside = jnp.any(A[:, 0] * E[:, 1] - A[:, 1] * E[:, 0] < 0)   # 0 right of some edge
    ok = data["hull_ok"] & outside & (nq > 0)
    nan = jnp.asarray(jnp.nan, A.dtype)
    return jnp.where(ok, q / jnp.where(nq > 0, nq, 1.0), nan), jnp.where(ok, nq / cf, nan)


def _measure(state, static, hp, data):
    p = state["params"]
    u = data["u"]
    t_tr = margins(p, hp, data["train"], u, static)
    t_te = margins(p, hp, data["test"], u, static)
    dt = t_tr.dtype
    qhat, gamma = max_margin(hp, data, static)
    cross = p["w0"] * qhat[1] - p["w1"] * qhat[0]
    dot = p["w0"] * qhat[0] + p["w1"] * qhat[1]
    return {
        "loss": jnp.mean(dc_loss(t_tr, static["loss"], hp)),
        "train_acc": jnp.mean((t_tr > 0).astype(dt)),
        "test_acc": jnp.mean((t_te > 0).astype(dt)),
        "theta_norm": jnp.sqrt(p["w0"] ** 2 + p["w1"] ** 2),
        "theta": jnp.stack([p["w0"], p["w1"]]),
        "min_margin": jnp.min(t_tr),
        "angle_to_max_margin": jnp.arctan2(jnp.abs(cross), dot),
        "max_margin": gamma,
        "bias": p["b"] if static["bias"] else jnp.zeros((), dt),
    }


def _full_loss(params, static, hp, data):
    """Mean training loss over the whole training set (for the generic probes)."""
    t = margins(params, hp, data["train"], data["u"], static)
    return jnp.mean(dc_loss(t, static["loss"], hp))


def check_neuron(static, hp):
    """The values ``dc.neuron`` refuses (its ``check``), before anything is compiled:

    - ``m >= 2``: two blobs of m/2 points each need a point each (m = 0 divides by zero), and
      ``m <= 2**31 - 1`` (the split and the epochs' permutations are int32 indices). A small
      m whose 80/20 split leaves no test point (m = 2) is allowed: test_acc is then NaN.
    - ``batch >= 1``. ``batch`` above the 0.8·m training points is allowed: an epoch is then
      one (partial) batch, i.e. full-batch GD, exactly as the last batch of an epoch is.
    - ``epochs >= 0``, and if > 0, ``steps`` = epochs × ⌈0.8·m / batch⌉ (the sweep's own
      check of its step count; before, this failed inside make_data as a JAX traceback).
    - ``0 <= label_noise <= 1``: a flip probability (a negative value silently meant none).
    - ``lr > 0``: the subject is how ‖θ‖ grows under SGD; lr = 0 never moves θ, lr < 0 is
      gradient ascent. Large lr is legitimate (much of dc_paper's grid diverges, on purpose).
    - for the DC losses (``nll``, ``prob``; ``logistic`` ignores d, p_d, r, c):
      ``0 < p_d < 1`` (a probability; log(p_d) is taken), ``r > 0`` (r = 0 divides by zero:
      NaN losses; r < 0 turns the response around), and b = ln(p_d) − c/r < 0, i.e.
      ``c > r·ln(p_d)`` (b >= 0: P(t) no longer increases with the margin, the loss is flat or
      rewards negative margins). c >= 0, the seed's range, always satisfies it; a negative c
      (an asymptote a = e^{c/r} below 1) that keeps b < 0 is allowed.
    - the epochs' minibatch order, about steps × batch int32 indices, at most 2**36.

    ``d``, ``sep`` and ``init_scale`` may be anything (sep = 0: no signal, a control).
    """
    m, batch = static["m"], static["batch"]
    _checks.at_least("m", m, 2, "two blobs of m/2 points each")
    _checks.int32_size("m", m, "the train/test split")
    _checks.at_least("batch", batch, 1, "the minibatch size")
    _checks.at_least("label_noise", static["label_noise"], 0.0, "a flip probability")
    _checks.at_most("label_noise", static["label_noise"], 1.0, "a flip probability")
    check_epochs(static)
    _checks.positive_lr(hp)
    if static["loss"] != "logistic":
        p_d, r, c = hp["p_d"], hp["r"], hp["c"]
        if not 0.0 < p_d < 1.0:
            raise ValueError(f"p_d must be in (0, 1) (the response probability at t = d), "
                             f"got {p_d!r}")
        _checks.positive("r", r, "the growth rate; r = 0 divides by zero")
        if not c > r * math.log(p_d):
            raise ValueError(f"c must be > r·ln(p_d) = {r * math.log(p_d):.6g} so that "
                             f"b = ln(p_d) − c/r < 0 (P(t) increasing in the margin), got "
                             f"c = {c!r} (r = {r!r}, p_d = {p_d!r})")
    nb = steps_per_epoch(static)
    n_epochs = -(-max(int(static["steps"]), 1) // nb)
    _checks.elements("the minibatch order (epochs × steps per epoch × batch indices)",
                     n_epochs * nb * batch, steps=static["steps"], m=m, batch=batch)


neuron = Experiment(
    name="dc.neuron",
    doc="single neuron on 2-D Gaussian blobs, SGD on the differential-capability loss "
        "(Gompertz-law 2PL IRT response); ‖θ‖ vs the convergence rate g^DC",
    params=(
        Param("loss", "nll", str, static=True, choices=LOSSES,
              doc="nll: −log P(t); prob: 1 − P(t); logistic: log(1 + e^{−t}) (no DC)"),
        Param("bias", False, bool, static=True, doc="train a bias β too (margin y(θᵀx + β))"),
        Param("m", 1000, int, static=True, doc="data set size (80 % train, 20 % test)"),
        Param("batch", 75, int, static=True, doc="minibatch size (last batch of an epoch "
                                                  "partial)"),
        Param("epochs", 0, int, static=True,
              doc="if > 0, a check: steps must equal epochs × ⌈0.8·m / batch⌉"),
        Param("label_noise", 0.0, float, static=True,
              doc="probability of flipping each label (static: it decides which points "
                  "are in which class, hence the shared data and their max-margin geometry)"),
        Param("d", 0.0, float, doc="difficulty d (P(d) = P_d)"),
        Param("p_d", 0.5, float, doc="P_d ∈ (0, 1): response probability at t = d"),
        Param("r", 1.0, float, doc="growth rate r > 0 of differential capability"),
        Param("c", 0.0, float, doc="decay rate c ≥ 0 (ε = c/r, a = e^ε, b = ln P_d − ε)"),
        Param("lr", 0.01, float, doc="SGD step size"),
        Param("sep", 2.0, float, doc="blob means ±sep·u (unit covariance)"),
        Param("init_scale", 0.01, float, doc="θ(0) ~ init_scale·N(0, I) from the seed"),
    ),
    metrics=(
        Metric("loss", "mean training loss ℓ(t) over the 80 % training set"),
        Metric("train_acc", "fraction of training points with margin t > 0"),
        Metric("test_acc", "fraction of test points with margin t > 0"),
        Metric("theta_norm", "‖θ‖ (weights, not the bias)"),
        Metric("theta", "θ = (θ1, θ2)", shape=(2,)),
        Metric("min_margin", "min over training points of t = y(θᵀx + β), unnormalised "
                             "(≈ g(t) late in separable training)"),
        Metric("angle_to_max_margin", "angle (rad) between θ and the max-margin direction of "
                                      "the training set; NaN if not separable"),
        Metric("max_margin", "geometric max margin γ = 1/‖θ̂‖ of the training set (constant "
                             "in time; NaN if not separable)"),
        Metric("bias", "β (0 without a bias)"),
    ),
    init=_init,
    step=_step,
    measure=_measure,
    make_data=make_data,
    loss=_full_loss,
    params_of_state=_params,
    check=check_neuron,
)

EXPERIMENTS = {neuron.name: neuron}
