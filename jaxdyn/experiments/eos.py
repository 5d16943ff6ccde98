"""Edge of stability and threshold neurons (seed 002; see docs/science/eos.md).

``eos.single_neuron``: GD on f(x, y) = ℓ(x·y), ℓ convex, even, Lipschitz, ℓ''(0) = 1.
Gradient flow conserves y² − x²; near the y-axis the sharpness is ≈ y². GD with step η
converges near (0, sqrt(y0² − x0²)) when y0² − x0² < 2/η (gradient-flow regime); otherwise x
bounces across the axis while y² shrinks until the sharpness is just below 2/η (EoS regime).

``eos.threshold_relu``: the three-parameter ReLU network
f(x) = Σ_i [a− σ(−x_i + b) + a+ σ(x_i + b)] on sparse-coding data x = λ·y·e_j + ξ, trained
with the logistic loss. Large steps (EoS) drive the bias b negative: a threshold neuron.

``eos.mean_model``: gradient descent on the three parameters (a−, a+, b) of

    F(a−, a+, b) = ℓ_sym(d·(a− + a+)·g(b)),
    ℓ_sym(s) = ½[log(1 + e^{−s}) + log(1 + e^{s})],   g(b) = E[σ(ξ + b)] = b·Φ(b) + φ(b).

At the origin the top Hessian eigenvalue is d²·g(0)²·2·ℓ_sym''(0) = d²/(4π), so GD with step η
is stable there iff η < η* = 8π/d². Below η* the bias stays b∞ ≈ 0; above it GD enters the edge
of stability, a− + a+ oscillates and b is driven negative (a threshold neuron is learned).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax
from jax.scipy.special import ndtr

from jaxdyn.experiments import _checks
from jaxdyn.experiments.base import Experiment, Metric
from jaxdyn.optim import optimizer
from jaxdyn.spec import Param

_INV_SQRT_2PI = 0.3989422804014327


def l_sym(s):
    """Symmetrized logistic loss ½[log(1+e^{−s}) + log(1+e^{s})]; ℓ_sym''(0) = 1/4."""
    return 0.5 * (jax.nn.softplus(-s) + jax.nn.softplus(s))


def g_relu_mean(b):
    """g(b) = E[σ(ξ + b)], ξ ~ N(0, 1): b·Φ(b) + φ(b)."""
    return b * ndtr(b) + _INV_SQRT_2PI * jnp.exp(-0.5 * b * b)


def _mm_loss(params, d):
    return l_sym(d * (params["a_minus"] + params["a_plus"]) * g_relu_mean(params["b"]))


_INV_SQRT_2 = 0.7071067811865476


def _mm_terms(params, d):
    """The pieces every mean-model quantity is made of, each computed once.

    u = a− + a+, Φ = Φ(b) = ½·erfc(−b/√2) (accurate in both tails), φ = φ(b),
    g = g(b) = bΦ + φ, s = d·u·g, and t = tanh(s/2), so that ℓ_sym'(s) = t/2 and
    ℓ_sym''(s) = (1 − t²)/4.
    """
    b = params["b"]
    u = params["a_minus"] + params["a_plus"]
    cdf = 0.5 * jax.lax.erfc(-_INV_SQRT_2 * b)
    pdf = _INV_SQRT_2PI * jnp.exp(-0.5 * b * b)
    g = b * cdf + pdf
    s = d * u * g
    return u, cdf, pdf, g, s, jnp.tanh(0.5 * s)


def mean_model_grad(params, d):
    """∇F in closed form, the same value as ``jax.grad(_mm_loss)`` at about half the cost
    (figures in benchmarks/README.md, table of changes).

    With u = a− + a+, s = d·u·g(b), ℓ_sym'(s) = ½·tanh(s/2) and g'(b) = Φ(b):

        ∂F/∂a− = ∂F/∂a+ = ℓ_sym'(s)·d·g(b),    ∂F/∂b = ℓ_sym'(s)·d·u·Φ(b).

    Autodiff differentiates both softplus terms of ℓ_sym (two sigmoids) and jax's ``ndtr``
    (which evaluates erf and erfc and selects); here Φ(b) = ½·erfc(−b/√2), accurate in both
    tails, is computed once and shared by g and g'. Shapes: every leaf as ``params``.
    """
    u, cdf, _, g, _, t = _mm_terms(params, d)
    lp = 0.5 * t
    ga = lp * d * g
    return {"a_minus": ga, "a_plus": ga, "b": lp * d * u * cdf}


def mean_model_sharpness(params, d):
    """Top eigenvalue of the 3×3 Hessian of F, in closed form.

    F depends on (a−, a+) only through u = a− + a+, so (1, −1, 0)/√2 is a null direction
    (eigenvalue 0) and the rest of the Hessian, in the orthonormal basis
    {(1, 1, 0)/√2, (0, 0, 1)}, is [[2 F_uu, √2 F_ub], [√2 F_ub, F_bb]] with (g' = Φ, g'' = φ)

        F_uu = ℓ''·d²g²,   F_ub = ℓ''·d²ug·Φ + ℓ'·dΦ,   F_bb = ℓ''·(duΦ)² + ℓ'·du·φ.

    The top eigenvalue is the larger of 0 and that 2×2's top eigenvalue.
    """
    u, cdf, pdf, g, s, t = _mm_terms(params, d)
    l1, l2 = 0.5 * t, 0.25 * (1.0 - t * t)
    a = 2.0 * l2 * (d * g) ** 2
    c = l2 * (d * u * cdf) ** 2 + l1 * d * u * pdf
    off = jnp.sqrt(2.0) * (l2 * d * d * u * g * cdf + l1 * d * cdf)
    top = 0.5 * (a + c) + jnp.sqrt(0.25 * (a - c) ** 2 + off**2)
    return jnp.maximum(top, 0.0)


def _mm_init(key, static, hp, data):
    dt = static["dtype"]
    k1, k2 = jax.random.split(key)
    params = {  # each parameter its own scalar leaf: under vmap each is a contiguous (runs,)
        "a_minus": hp["init_scale"] * jax.random.normal(k1, (), dt),
        "a_plus": hp["init_scale"] * jax.random.normal(k2, (), dt),
        "b": hp["b0"] * jnp.ones((), dt),
    }
    return {"params": params, "opt": optimizer(static, hp).init(params)}


def _mm_step(state, key, static, hp, data):
    opt = optimizer(static, hp)  # the sweep's optimizer (default sgd(lr)), traced
    grads = mean_model_grad(state["params"], hp["d"])
    updates, opt_state = opt.update(grads, state["opt"], state["params"])
    return {"params": optax.apply_updates(state["params"], updates), "opt": opt_state}


def _mm_measure(state, static, hp, data):
    # closed forms sharing one erfc, exp and tanh: autodiff of the loss (and jax.hessian for
    # the sharpness) compiled to many times the kernels, which on a CPU cost more than the
    # steps between log points (figures in benchmarks/README.md, table of changes)
    p, d = state["params"], hp["d"]
    u, cdf, pdf, g, s, t = _mm_terms(p, d)
    sharp = mean_model_sharpness(p, d)
    return {
        "loss": jax.nn.softplus(s) - 0.5 * s,  # ℓ_sym(s), as softplus(−s) = softplus(s) − s
        "b": p["b"],
        "a_sum": d * u,
        "a_minus": p["a_minus"],
        "a_plus": p["a_plus"],
        "sharpness": sharp,
        "eta_sharpness": 0.5 * hp["lr"] * sharp,
    }


def check_mean_model(static, hp):
    """The values ``eos.mean_model`` refuses (its ``check``), before anything is compiled:

    - ``lr > 0``: the family is about GD's step size η against η* = 8π/d²; η = 0 never moves
      the parameters (nothing to measure, η·sharpness ≡ 0), η < 0 is gradient ascent. Any
      large η is legitimate: it is how the unstable side of η* is studied.
    - ``d >= 1``: the input dimension (d = 0 makes the loss constant, d < 0 is no dimension).

    ``init_scale`` and ``b0`` may be anything (0: start exactly at the origin, a fixed point).
    """
    _checks.positive_lr(hp)
    _checks.at_least("d", hp["d"], 1, "the input dimension")


mean_model = Experiment(
    name="eos.mean_model",
    doc="GD on (a−, a+, b) ↦ ℓ_sym(d·(a− + a+)·g(b)); phase transition at η* = 8π/d².",
    params=(
        Param("lr", 1e-3, float, doc="GD step size η"),
        Param("d", 100, int, doc="input dimension (scales the loss; dynamic, no recompile)"),
        Param("init_scale", 0.01, float, doc="a−(0), a+(0) ~ init_scale·N(0, 1) from the seed"),
        Param("b0", 0.0, float, doc="initial bias b(0)"),
    ),
    metrics=(
        Metric("loss", "ℓ_sym(d(a−+a+)g(b))"),
        Metric("b", "bias"),
        Metric("a_sum", "d·(a− + a+)"),
        Metric("a_minus", "a−"),
        Metric("a_plus", "a+"),
        Metric("sharpness", "top eigenvalue of the exact 3×3 Hessian"),
        Metric("eta_sharpness", "η·sharpness/2 (1 at the edge of stability)"),
    ),
    init=_mm_init,
    step=_mm_step,
    measure=_mm_measure,
    loss=lambda params, static, hp, data: _mm_loss(params, hp["d"]),
    params_of_state=lambda state: state["params"],
    check=check_mean_model,
)


# ---- eos.single_neuron -----------------------------------------------------------------------
def _logcosh(s):
    a = jnp.abs(s)
    return a + jnp.log1p(jnp.exp(-2.0 * a)) - jnp.log(2.0)


def _sqrt_link(s):
    return jnp.sqrt(1.0 + s * s) - 1.0


def _arctan_link(s):
    """ℓ(s) = s·arctan(s) − ½·log(1 + s²): ℓ' = arctan s (Lipschitz), ℓ'' = 1/(1 + s²)."""
    return s * jnp.arctan(s) - 0.5 * jnp.log1p(s * s)


LINKS = {"logcosh": _logcosh, "sqrt": _sqrt_link, "arctan": _arctan_link}


def top_eig_2x2(a, b, c):
    """Largest eigenvalue of the symmetric matrix [[a, b], [b, c]]."""
    return 0.5 * (a + c) + jnp.sqrt(0.25 * (a - c) ** 2 + b * b)


def single_neuron_loss(params, link: str):
    return LINKS[link](params["x"] * params["y"])


def single_neuron_sharpness(params, link: str):
    """Top eigenvalue of the exact 2×2 Hessian of ℓ(xy):
    [[ℓ''·y², ℓ''·xy + ℓ'], [ℓ''·xy + ℓ', ℓ''·x²]] at s = xy."""
    x, y = params["x"], params["y"]
    s = x * y
    d1 = jax.grad(LINKS[link])(s)
    d2 = jax.grad(jax.grad(LINKS[link]))(s)
    return top_eig_2x2(d2 * y * y, d2 * s + d1, d2 * x * x)


def _sn_init(key, static, hp, data):
    dt = static["dtype"]
    k1, k2 = jax.random.split(key)
    params = {"x": hp["x0"] + hp["perturb"] * jax.random.normal(k1, (), dt),
              "y": hp["y0"] + hp["perturb"] * jax.random.normal(k2, (), dt)}
    return {"params": params, "opt": optimizer(static, hp).init(params)}


def _sn_step(state, key, static, hp, data):
    opt = optimizer(static, hp)
    grads = jax.grad(single_neuron_loss)(state["params"], static["link"])
    updates, opt_state = opt.update(grads, state["opt"], state["params"])
    return {"params": optax.apply_updates(state["params"], updates), "opt": opt_state}


def _sn_measure(state, static, hp, data):
    p = state["params"]
    sharp = single_neuron_sharpness(p, static["link"])
    return {"x": p["x"], "y": p["y"], "loss": single_neuron_loss(p, static["link"]),
            "sharpness": sharp, "conserved": p["y"] ** 2 - p["x"] ** 2,
            "eta_sharpness": 0.5 * hp["lr"] * sharp}


def check_single_neuron(static, hp):
    """The values ``eos.single_neuron`` refuses (its ``check``):

    - ``lr > 0``: the regimes are set by y0² − x0² against 2/η; η = 0 never moves (x, y) and
      η < 0 is gradient ascent. Large η is legitimate (divergence).

    ``x0``, ``y0`` and ``perturb`` may be anything; ``link`` is checked against its choices.
    """
    _checks.positive_lr(hp)


single_neuron = Experiment(
    name="eos.single_neuron",
    doc="GD on ℓ(x·y); gradient-flow regime if y0² − x0² < 2/η, else EoS with sharpness → 2/η.",
    params=(
        Param("lr", 0.1, float, doc="GD step size η"),
        Param("x0", 0.3, float, doc="initial x"),
        Param("y0", 3.0, float, doc="initial y"),
        Param("perturb", 0.0, float, doc="x(0), y(0) += perturb·N(0, 1) from the seed"),
        Param("link", "logcosh", str, static=True, choices=tuple(LINKS),
              doc="ℓ: log cosh s, sqrt(1+s²)−1, or s·arctan s − ½log(1+s²)"),
    ),
    metrics=(
        Metric("x"), Metric("y"), Metric("loss", "ℓ(xy)"),
        Metric("sharpness", "top eigenvalue of the exact 2×2 Hessian"),
        Metric("conserved", "y² − x² (conserved by gradient flow)"),
        Metric("eta_sharpness", "η·sharpness/2 (1 at the edge of stability)"),
    ),
    init=_sn_init, step=_sn_step, measure=_sn_measure,
    loss=lambda params, static, hp, data: single_neuron_loss(params, static["link"]),
    params_of_state=lambda state: state["params"],
    check=check_single_neuron,
)


# ---- eos.threshold_relu ----------------------------------------------------------------------
def _tr_make_data(key, static):
    """Sparse-coding data of one seed, shared by all its runs: labels y ∈ {±1}, the signal
    coordinate j and the noise ξ ~ N(0, I_d). The signal λ is dynamic, so x = λ·y·e_j + ξ is
    never materialised: the network adds the signal term to coordinate j on the fly.

    Each sample's noise coordinates are also stored sorted, with prefix sums, so that
    Σ_i σ(±ξ_i + b) costs one binary search per sample instead of d ReLUs (below)."""
    dt = static["dtype"]
    n = static["n_train"] + static["n_test"]
    ky, kj, kx = jax.random.split(key, 3)
    y = jnp.where(jax.random.bernoulli(ky, 0.5, (n,)), 1.0, -1.0).astype(dt)
    j = jax.random.randint(kj, (n,), 0, static["d"])
    xi = jax.random.normal(kx, (n, static["d"]), dt)
    xs = jnp.sort(xi, axis=1)
    prefix = jnp.concatenate([jnp.zeros((n, 1), dt), jnp.cumsum(xs, axis=1)], axis=1)
    return {"y": y, "j": j, "xi": xi, "xi_sorted": xs, "xi_prefix": prefix,
            "xi_j": jnp.take_along_axis(xi, j[:, None], 1)[:, 0]}


def _relu_pair(a_minus, a_plus, b, x):
    return a_minus * jax.nn.relu(-x + b) + a_plus * jax.nn.relu(x + b)


def relu_sums(b, z_sorted, prefix):
    """(Σ_i σ(−z_i + b), Σ_i σ(z_i + b)) for one sample's sorted coordinates z, exactly.

    With k = #{z_i ≤ −b} and m = #{z_i < b} and prefix sums P:
        Σ σ(z_i + b) = (P_d − P_k) + b·(d − k),   Σ σ(−z_i + b) = b·m − P_m.
    The counts carry no gradient, so autodiff gives the a.e. derivatives d − k and m, exactly
    what differentiating the ReLUs gives, and the backward pass needs no (n, d) masks.
    """
    d = z_sorted.shape[-1]
    k = jnp.searchsorted(z_sorted, -b, side="right")
    m = jnp.searchsorted(z_sorted, b, side="left")
    plus = (prefix[d] - prefix[k]) + b * (d - k)
    minus = b * m - prefix[m]
    return minus, plus


def threshold_relu_output(params, lam, data, sl=slice(None)):
    """f(x) = Σ_i [a− σ(−x_i + b) + a+ σ(x_i + b)] for x = λ·y·e_j + ξ, shape (n,)."""
    am, ap, b = params["a_minus"], params["a_plus"], params["b"]
    y, xi_j = data["y"][sl], data["xi_j"][sl]
    minus, plus = jax.vmap(relu_sums, in_axes=(None, 0, 0))(
        b, data["xi_sorted"][sl], data["xi_prefix"][sl])
    noise = am * minus + ap * plus
    # replace coordinate j's noise-only term by its signal-plus-noise term
    return noise - _relu_pair(am, ap, b, xi_j) + _relu_pair(am, ap, b, xi_j + lam * y)


def threshold_relu_loss(params, static, hp, data, idx=None):
    """Mean logistic loss on the training set (or on the rows ``idx`` of it)."""
    sl = slice(0, static["n_train"])
    f = threshold_relu_output(params, hp["lam"], data, sl)
    y = data["y"][sl]
    losses = jax.nn.softplus(-y * f)
    if idx is not None:
        return losses[idx].mean()
    return losses.mean()


def _tr_init(key, static, hp, data):
    dt = static["dtype"]
    k1, k2 = jax.random.split(key)
    params = {"a_minus": hp["init_scale"] * jax.random.normal(k1, (), dt),
              "a_plus": hp["init_scale"] * jax.random.normal(k2, (), dt),
              "b": hp["b0"] * jnp.ones((), dt)}
    return {"params": params, "opt": optimizer(static, hp).init(params)}


def _tr_step(state, key, static, hp, data):
    opt = optimizer(static, hp)
    if static["batch"] > 0:  # SGD: a minibatch drawn with replacement from the step key
        idx = jax.random.randint(key, (static["batch"],), 0, static["n_train"])
        grads = jax.grad(threshold_relu_loss)(state["params"], static, hp, data, idx)
    else:
        grads = jax.grad(threshold_relu_loss)(state["params"], static, hp, data)
    updates, opt_state = opt.update(grads, state["opt"], state["params"])
    return {"params": optax.apply_updates(state["params"], updates), "opt": opt_state}


def _tr_measure(state, static, hp, data):
    p = state["params"]
    loss_fn = lambda q: threshold_relu_loss(q, static, hp, data)  # noqa: E731
    flat = jnp.stack([p["a_minus"], p["a_plus"], p["b"]])
    unflat = lambda v: {"a_minus": v[0], "a_plus": v[1], "b": v[2]}  # noqa: E731
    H = jax.hessian(lambda v: loss_fn(unflat(v)))(flat)
    test = slice(static["n_train"], None)
    f_test = threshold_relu_output(p, hp["lam"], data, test)
    return {
        "loss": loss_fn(p),
        "test_acc": jnp.mean((f_test * data["y"][test]) > 0).astype(static["dtype"]),
        "b": p["b"],
        "a_sum": static["d"] * (p["a_minus"] + p["a_plus"]),
        "a_diff": p["a_plus"] - p["a_minus"],
        "sharpness": jnp.linalg.eigvalsh(0.5 * (H + H.T))[-1],
    }


def check_threshold_relu(static, hp):
    """The values ``eos.threshold_relu`` refuses (its ``check``):

    - ``lr > 0``: the family is about large steps (EoS) driving b negative; η = 0 never moves
      the parameters, η < 0 is gradient ascent. Large η is legitimate (divergence).
    - ``d >= 1`` (the dimension), ``n_train >= 1`` (the loss is a mean over the training set).
    - ``n_test >= 0``: 0 is allowed (no test set; ``test_acc`` is then NaN).
    - ``batch >= 0`` (0: full-batch GD). ``batch > n_train`` is allowed: minibatches are
      drawn with replacement, so any size is a valid (if unusual) estimator.
    - shapes: the seed's data, three arrays of (n_train + n_test) × (d + 1), and the
      minibatch's ``batch`` indices, each at most 2**36 elements.

    ``lam`` may be anything: the theory assumes λ > 1, but λ <= 1 (weak or no signal, λ = 0
    a pure-noise control) is a legitimate regime to probe. ``init_scale``, ``b0``: anything.
    """
    _checks.positive_lr(hp)
    _checks.at_least("d", static["d"], 1, "the input dimension")
    _checks.at_least("n_train", static["n_train"], 1, "the loss is a mean over the training "
                                                      "set")
    _checks.at_least("n_test", static["n_test"], 0, "0: no test set, test_acc NaN")
    _checks.at_least("batch", static["batch"], 0, "0: full-batch GD; else the SGD minibatch "
                                                  "size")
    _checks.elements("the minibatch (batch indices per step)", static["batch"],
                     batch=static["batch"])
    n = static["n_train"] + static["n_test"]
    _checks.elements("the data (n_train + n_test) × (d + 1)", n * (static["d"] + 1),
                     n_train=static["n_train"], n_test=static["n_test"], d=static["d"])


threshold_relu = Experiment(
    name="eos.threshold_relu",
    doc="f(x) = Σ_i a−σ(−x_i+b) + a+σ(x_i+b) on sparse-coding data; large η learns b < 0.",
    params=(
        Param("lr", 2.5e-3, float, doc="step size η"),
        Param("lam", 5.0, float, doc="signal strength λ > 1"),
        Param("init_scale", 0.01, float, doc="a−(0), a+(0) ~ init_scale·N(0, 1)"),
        Param("b0", 0.0, float, doc="initial bias"),
        Param("d", 200, int, static=True, doc="dimension"),
        Param("n_train", 1000, int, static=True, doc="training samples"),
        Param("n_test", 1000, int, static=True, doc="test samples"),
        Param("batch", 0, int, static=True, doc="0: full-batch GD; else SGD minibatch size"),
    ),
    metrics=(
        Metric("loss", "train logistic loss"), Metric("test_acc", "test accuracy"),
        Metric("b", "bias"), Metric("a_sum", "d·(a− + a+)"), Metric("a_diff", "a+ − a−"),
        Metric("sharpness", "top eigenvalue of the exact 3×3 Hessian of the train loss"),
    ),
    init=_tr_init, step=_tr_step, measure=_tr_measure, make_data=_tr_make_data,
    loss=lambda params, static, hp, data: threshold_relu_loss(params, static, hp, data),
    params_of_state=lambda state: state["params"],
    check=check_threshold_relu,
)

EXPERIMENTS = {e.name: e for e in (mean_model, single_neuron, threshold_relu)}
