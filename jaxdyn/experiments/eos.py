"""Edge of stability and threshold neurons (SCIENCE.md §1; seed 002).

``eos.mean_model`` (§1c): gradient descent on the three parameters (a−, a+, b) of

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

from jaxdyn.experiments.base import Experiment, Metric
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


def _mm_loss_ub(u, b, d):
    return l_sym(d * u * g_relu_mean(b))


def mean_model_sharpness(params, d):
    """Top eigenvalue of the 3×3 Hessian of F, exactly.

    F depends on (a−, a+) only through u = a− + a+, so (1, −1, 0)/√2 is a null direction
    and the rest of the Hessian, in the orthonormal basis {(1, 1, 0)/√2, (0, 0, 1)}, is
    [[2 F_uu, √2 F_ub], [√2 F_ub, F_bb]]: a 2×2 whose top eigenvalue has a closed form.
    """
    u = params["a_minus"] + params["a_plus"]
    h = jax.hessian(_mm_loss_ub, argnums=(0, 1))(u, params["b"], d)
    a, c = 2.0 * h[0][0], h[1][1]
    off = jnp.sqrt(2.0) * h[0][1]
    return 0.5 * (a + c) + jnp.sqrt(0.25 * (a - c) ** 2 + off**2)


def _mm_init(key, static, hp, data):
    dt = static["dtype"]
    k1, k2 = jax.random.split(key)
    params = {  # each parameter its own scalar leaf: under vmap each is a contiguous (runs,)
        "a_minus": hp["init_scale"] * jax.random.normal(k1, (), dt),
        "a_plus": hp["init_scale"] * jax.random.normal(k2, (), dt),
        "b": hp["b0"] * jnp.ones((), dt),
    }
    return {"params": params, "opt": optax.sgd(hp["lr"]).init(params)}


def _mm_step(state, key, static, hp, data):
    opt = optax.sgd(hp["lr"])  # built from the traced lr: an lr sweep never recompiles
    grads = jax.grad(_mm_loss)(state["params"], hp["d"])
    updates, opt_state = opt.update(grads, state["opt"], state["params"])
    return {"params": optax.apply_updates(state["params"], updates), "opt": opt_state}


def _mm_measure(state, static, hp, data):
    p, d = state["params"], hp["d"]
    sharp = mean_model_sharpness(p, d)
    return {
        "loss": _mm_loss(p, d),
        "b": p["b"],
        "a_sum": d * (p["a_minus"] + p["a_plus"]),
        "a_minus": p["a_minus"],
        "a_plus": p["a_plus"],
        "sharpness": sharp,
        "eta_sharpness": 0.5 * hp["lr"] * sharp,
    }


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
)

EXPERIMENTS = {mean_model.name: mean_model}
