"""Over-parameterized ReLU student, single-neuron teacher (seed 001; see docs/science/relu.md).

Teacher σ(vᵀx) with ‖v‖ = 1, x ~ N(0, I_d); student f(x) = Σ_{i=1..n} σ(w_iᵀx); square loss

    L(w) = ½ E[(f(x) − σ(vᵀx))²].

Closed form. E[σ(uᵀx) σ(wᵀx)] = ‖u‖‖w‖/(2π) · J(cos θ), J(c) = √(1 − c²) + (π − arccos c)·c
(:func:`J`, with the custom derivative J'(c) = π − arccos c: autodiff of the formula is NaN at
c = ±1). Writing J(cos θ) = π cos θ + κ(θ), κ(θ) = sin θ − θ cos θ ≈ θ³/3, the loss regroups as

    L(w) = ¼‖Σ_i w_i − v‖² + 1/(4π) [Σ_{i,j} ‖w_i‖‖w_j‖ κ(θ_ij) − 2 Σ_i ‖w_i‖‖v‖ κ(θ_i)]

(θ_ij = θ(w_i, w_j), θ_i = θ(w_i, v)): the textbook ½[Σ K_ij − 2 Σ K_iv + K_vv] with its O(1)
terms cancelled exactly, so that near the optimum every term is O(‖r‖²) or O(θ³) and the
loss is resolved far below 1e-16 (down to ~1e-30 in float64). Angles come from
2·atan2(‖â − b̂‖, ‖â + b̂‖), never from arccos of a cosine, which loses half the digits at small
angles. The gradient is in closed form too (the seed's ∇_{w_i} L = Σ_j g(w_i, w_j) −
g(w_i, v), regrouped the same way): GD steps use it directly, and it is the custom JVP of
:func:`population_loss`, so ``jax.grad`` (tests, Hessian probes) gets the same numbers —
finite when a student aligns exactly with the teacher or with another student.
:func:`population_loss_textbook` is the same loss through J, kept as a cross-check.

``relu.teacher_student``: full-batch GD with step η on the population loss (``mode =
"population"``) or on the empirical loss over ``n_train`` Gaussian samples generated on the
device (``mode = "empirical"``). The teacher v is a random unit vector from the data seed
(``make_data``), so every run of a seed — both modes — learns the same teacher; the
empirical samples come from the same key. Init w_i(0) ~ N(0, σ0²·I/d), σ0 = ``init_scale``,
from the run's init key, so the two modes of one seed also start from the same w(0).
Claimed by seed 001 (see docs/science/relu.md): n = 1 converges linearly (near the optimum
the Hessian is I/2, so L ∝ (1 − η/2)^{2T}); n ≥ 2 converges at rate Θ(T⁻³).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import optax

from jaxdyn.experiments import _checks
from jaxdyn.experiments.base import Experiment, Metric
from jaxdyn.optim import optimizer
from jaxdyn.spec import Param

_PI = math.pi


# ---- the arc-cosine kernel --------------------------------------------------------------
def _clip1(c):
    return jnp.clip(c, -1.0, 1.0)


@jax.custom_jvp
def J(c):
    """J(c) = √(1 − c²) + (π − arccos c)·c, so that E[σ(uᵀx)σ(wᵀx)] = ‖u‖‖w‖ J(cos θ)/(2π).

    ``c`` is clipped to [−1, 1] (rounding can put a cosine just outside). Derivative
    J'(c) = π − arccos c, finite everywhere (autodiff of the formula is NaN at c = ±1).
    """
    c = _clip1(c)
    return jnp.sqrt(1.0 - c * c) + (_PI - jnp.arccos(c)) * c


@J.defjvp
def _J_jvp(primals, tangents):
    (c,), (dc,) = primals, tangents
    return J(c), (_PI - jnp.arccos(_clip1(c))) * dc


def _safe_norm(x, axis=-1):
    """‖x‖ along ``axis`` with a finite gradient (zero) at x = 0."""
    return _safe_sqrt(jnp.sum(x * x, axis=axis))


def _nonzero(x):
    return jnp.where(x > 0, x, 1.0)


def _safe_sqrt(x):
    """√x for x ≥ 0 with a finite derivative (zero) at x = 0."""
    pos = x > 0
    return jnp.where(pos, jnp.sqrt(jnp.where(pos, x, 1.0)), 0.0)


def _angle_sin(m2):
    """θ and sin θ between two unit vectors from m2 = ‖â − b̂‖², accurate at small angles:
    ‖â − b̂‖ = 2 sin(θ/2) and ‖â + b̂‖ = 2 cos(θ/2) = √(4 − m2), so θ = 2·atan2(‖â − b̂‖,
    ‖â + b̂‖) and sin θ = ‖â − b̂‖·‖â + b̂‖/2. (arccos of the cosine loses half the digits at
    small angles: at θ = 3e-7 it is off by 1e-3 relative, which bends the T⁻³ tail once
    L < 1e-13 in d = 2.)"""
    m2 = jnp.clip(m2, 0.0, 4.0)
    m, p = _safe_sqrt(m2), _safe_sqrt(4.0 - m2)
    return 2.0 * jnp.arctan2(m, p), 0.5 * m * p


def _unit_geometry(W, v):
    """Norms, unit vectors, and θ, sin θ for every pair of students and for each student
    and the teacher. Squared distances between unit vectors are taken in coordinates
    centred on v̂ (e_i = ŵ_i − v̂): near the optimum they are O(θ²) and keep their relative
    precision, where the Gram matrix 2 − 2ŵ_iᵀŵ_j would cancel."""
    a = _safe_norm(W)
    b = _safe_norm(v)
    Wh = W / _nonzero(a)[:, None]
    vh = v / _nonzero(b)
    E = Wh - vh[None, :]
    q = jnp.sum(E * E, axis=-1)                       # ‖ŵ_i − v̂‖²
    m2 = q[:, None] + q[None, :] - 2.0 * (E @ E.T)    # ‖ŵ_i − ŵ_j‖²
    m2 = jnp.where(jnp.eye(W.shape[0], dtype=bool), 0.0, m2)
    th, s = _angle_sin(m2)
    tv, sv = _angle_sin(q)
    return a, b, Wh, vh, th, s, tv, sv


def _kappa_theta(theta, sin):
    """κ as a function of the angle: sin θ − θ cos θ, by its series θ³/3 − θ⁵/30 + θ⁷/840 −
    θ⁹/45360 below θ = 0.05 (relative error < 1e-14 there), where the difference of two
    ≈ θ terms would cancel."""
    t2 = theta * theta
    series = theta * t2 * (1.0 / 3.0 - t2 * (1.0 / 30.0 - t2 * (1.0 / 840.0 - t2 / 45360.0)))
    return jnp.where(theta < 0.05, series, sin - theta * jnp.cos(theta))


def _population_parts(W, v):
    """Loss and its gradients with respect to W and v, in closed form.

    With a_i = ‖w_i‖, b = ‖v‖, θ_ij = θ(w_i, w_j), θ_i = θ(w_i, v), r = Σ_i w_i − v:
      L = ¼‖r‖² + 1/(4π) [Σ_ij a_i a_j κ(θ_ij) − 2b Σ_i a_i κ(θ_i)]
      ∇_{w_i} L = ½ r + 1/(2π) [Σ_j a_j (sin θ_ij ŵ_i − θ_ij ŵ_j) − b (sin θ_i ŵ_i − θ_i v̂)]
      ∇_v L = −½ r − 1/(2π) Σ_i a_i (sin θ_i v̂ − θ_i ŵ_i)
    which is the seed's ∇_{w_i} L = Σ_j g(w_i, w_j) − g(w_i, v), g(w, u) = [(π − θ)u +
    ‖u‖ sin θ ŵ]/(2π), regrouped so that its O(1) terms cancel exactly, in ½r.
    """
    r = jnp.sum(W, axis=0) - v
    a, b, Wh, vh, th, s, tv, sv = _unit_geometry(W, v)
    pair = jnp.sum(a[:, None] * a[None, :] * _kappa_theta(th, s))
    cross = b * jnp.sum(a * _kappa_theta(tv, sv))
    loss = 0.25 * jnp.dot(r, r) + (pair - 2.0 * cross) / (4.0 * _PI)
    gW = 0.5 * r[None, :] + ((s @ a)[:, None] * Wh - (th * a[None, :]) @ Wh
                             - b * (sv[:, None] * Wh - tv[:, None] * vh[None, :])) / (2.0 * _PI)
    gv = -0.5 * r - (jnp.sum(a * sv) * vh - (a * tv) @ Wh) / (2.0 * _PI)
    return loss, gW, gv


@jax.custom_jvp
def population_loss(W, v):
    """L(W) in closed form, cancellation-free (module docstring). W: (n, d), v: (d,).

    Its derivative is the closed-form gradient of :func:`_population_parts` (custom JVP):
    finite when students align exactly with the teacher or with each other.
    """
    return _population_parts(W, v)[0]


@population_loss.defjvp
def _population_loss_jvp(primals, tangents):
    (W, v), (dW, dv) = primals, tangents
    loss, gW, gv = _population_parts(W, v)
    return loss, jnp.sum(gW * dW) + jnp.dot(gv, dv)


def population_loss_textbook(W, v):
    """The same loss written as ½[Σ_ij K(w_i, w_j) − 2 Σ_i K(w_i, v) + K(v, v)] through J.

    Loses absolute precision ~1e-16 to cancellation; kept as a cross-check of
    :func:`population_loss` and of J's custom derivative.
    """
    def K(a, b):
        na, nb = _safe_norm(a), _safe_norm(b)
        c = jnp.sum(a * b, -1) / (_nonzero(na) * _nonzero(nb))
        return na * nb * J(c) / (2.0 * _PI)

    kww = K(W[:, None, :], W[None, :, :])
    kwv = K(W, v[None, :])
    kvv = K(v, v)
    return 0.5 * (jnp.sum(kww) - 2.0 * jnp.sum(kwv) + kvv)


def empirical_loss(W, X, y):
    """½ mean_k (Σ_i σ(w_iᵀx_k) − y_k)², y_k = σ(vᵀx_k). X: (m, d)."""
    pred = jnp.sum(jax.nn.relu(X @ W.T), axis=-1)
    return 0.5 * jnp.mean((pred - y) ** 2)


def angles_to(W, v):
    """θ(w_i, v) for each row, accurate for small angles: 2·atan2(‖ŵ − v̂‖, ‖ŵ + v̂‖)."""
    wh = W / _nonzero(_safe_norm(W))[:, None]
    vh = v / _nonzero(_safe_norm(v))
    e = wh - vh[None, :]
    return _angle_sin(jnp.sum(e * e, axis=-1))[0]


# ---- the experiment ---------------------------------------------------------------------
def _make_data(key, static):
    """Teacher v (unit, from the data seed) and, in empirical mode, the n_train samples."""
    dt, d = static["dtype"], static["d"]
    kv, kx = jax.random.split(key)
    v = jax.random.normal(kv, (d,), dt)
    data = {"v": v / jnp.linalg.norm(v)}
    if static["mode"] == "empirical":
        X = jax.random.normal(kx, (static["n_train"], d), dt)
        data["X"] = X
        data["y"] = jax.nn.relu(X @ data["v"])
    return data


def _train_loss(params, static, hp, data):
    if static["mode"] == "population":
        return population_loss(params["w"], data["v"])
    return empirical_loss(params["w"], data["X"], data["y"])


def _loss_and_grad(W, static, data):
    """Training loss and its gradient in W. Population mode calls the closed form directly
    (the same numbers as differentiating :func:`population_loss`, a smaller program)."""
    if static["mode"] == "population":
        loss, gW, _ = _population_parts(W, data["v"])
        return loss, gW
    return jax.value_and_grad(empirical_loss)(W, data["X"], data["y"])


def _init(key, static, hp, data):
    dt, n, d = static["dtype"], static["n"], static["d"]
    # w_i(0) ~ N(0, σ0² I/d)
    w = hp["init_scale"] / jnp.sqrt(jnp.asarray(d, dt)) * jax.random.normal(key, (n, d), dt)
    params = {"w": w}
    return {"params": params, "opt": optimizer(static, hp).init(params)}


def _step(state, key, static, hp, data):
    opt = optimizer(static, hp)  # the sweep's optimizer (default sgd(lr)), traced
    _, g = _loss_and_grad(state["params"]["w"], static, data)
    updates, opt_state = opt.update({"w": g}, state["opt"], state["params"])
    return {"params": optax.apply_updates(state["params"], updates), "opt": opt_state}


def _measure(state, static, hp, data):
    W, v = state["params"]["w"], data["v"]
    loss, g = _loss_and_grad(W, static, data)
    pop = loss if static["mode"] == "population" else _population_parts(W, v)[0]
    r = jnp.sum(W, axis=0) - v
    return {
        "loss": loss,
        "pop_loss": pop,
        "max_angle": jnp.max(angles_to(W, v)),
        "norm_sum": jnp.sum(_safe_norm(W)),
        "residual": _safe_norm(r),
        "proj_gap": -jnp.dot(r, v / _nonzero(_safe_norm(v))),  # ‖v‖ − Σ w_iᵀv̂, no cancellation
        "grad_norm": _safe_norm(g.reshape(-1)),
    }


def check_teacher_student(static, hp):
    """The values ``relu.teacher_student`` refuses (its ``check``), before anything is compiled:

    - ``n >= 1`` student neurons, ``d >= 1`` input dimensions (n = 0: no student at all).
    - ``mode = "empirical"``: ``n_train >= 1`` (the loss is a mean over the samples; 0 gives
      NaN). Population mode ignores n_train.
    - ``lr > 0``: the subject is GD's convergence rate in T (linear for n = 1, T⁻³ for
      n >= 2); lr = 0 never moves w, lr < 0 is gradient ascent. Large lr is legitimate.
    - shapes: the students W (n × d) and the per-run pair matrices (n × n); in empirical mode
      the samples X (n_train × d) and the per-run activations (n_train × n), each at most
      2**36 elements.

    ``init_scale`` may be anything (0: every student starts at the origin, a symmetric start).
    """
    n, d = static["n"], static["d"]
    _checks.at_least("n", n, 1, "the number of student neurons")
    _checks.at_least("d", d, 1, "the input dimension")
    if static["mode"] == "empirical":
        _checks.at_least("n_train", static["n_train"], 1, "mode = 'empirical': the loss is a "
                                                          "mean over n_train samples")
    _checks.positive_lr(hp)
    _checks.elements("the students n × d", n * d, n=n, d=d)
    _checks.elements("the student pairs n × n", n * n, n=n)
    if static["mode"] == "empirical":
        nt = static["n_train"]
        _checks.elements("the samples n_train × d", nt * d, n_train=nt, d=d)
        _checks.elements("the activations n_train × n", nt * n, n_train=nt, n=n)


teacher_student = Experiment(
    name="relu.teacher_student",
    doc="GD on ½E[(Σ_i σ(w_iᵀx) − σ(vᵀx))²], x ~ N(0, I_d): n = 1 linear, n ≥ 2 at rate T⁻³.",
    params=(
        Param("n", 2, int, static=True, doc="student neurons"),
        Param("d", 10, int, static=True, doc="input dimension"),
        Param("mode", "population", str, static=True, choices=("population", "empirical"),
              doc="closed-form population loss, or the empirical loss on n_train samples"),
        Param("n_train", 1000, int, static=True,
              doc="samples of the empirical loss (drawn on the device from the data seed)"),
        Param("lr", 0.1, float, doc="GD step size η"),
        Param("init_scale", 1e-2, float, doc="σ0: w_i(0) ~ N(0, σ0² I/d)"),
    ),
    metrics=(
        Metric("loss", "training loss (population, or empirical on n_train samples)"),
        Metric("pop_loss", "population loss at the current weights (= loss in population mode)"),
        Metric("max_angle", "max_i θ(w_i, v) in radians"),
        Metric("norm_sum", "Σ_i ‖w_i‖"),
        Metric("residual", "‖Σ_i w_i − v‖"),
        Metric("proj_gap", "H = ‖v‖ − Σ_i w_iᵀv̂: the error along the teacher (phase 2 kills it)"),
        Metric("grad_norm", "‖∇ loss‖ over all students"),
    ),
    init=_init,
    step=_step,
    measure=_measure,
    make_data=_make_data,
    loss=_train_loss,
    params_of_state=lambda state: state["params"],
    # Only the empirical mode has data worth sharing (X, y); the population mode's teacher
    # is d numbers that each run draws from its own data key (same key, same v). The engine
    # reads this (engine.shares_data): empirical-mode groups get make_data once per chunk and
    # are chunked per seed; population-mode groups are chunked across seeds, each run calling
    # make_data itself (batched across seeds, population-mode runs were measured faster than
    # in 8-run per-seed chunks; figures in benchmarks/README.md, table of changes).
    shares_data=lambda static: static["mode"] == "empirical",
    check=check_teacher_student,
)

EXPERIMENTS = {teacher_student.name: teacher_student}
