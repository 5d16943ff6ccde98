"""Model-agnostic probes: sharpness (top Hessian eigenvalues) from Hessian-vector products.

Everything here is a pure function of one run's parameters, so the engine vmaps it across
runs like any other metric.

    hvp(f, params, v)           = ∇²f(params)·v, forward-over-reverse (one jvp of the grad)
    lanczos_topk(mv, v0, m, k)  top-k Ritz values of a symmetric operator after m Lanczos steps
                                (full reorthogonalisation; m ≥ 2k, m ≤ dimension)
    dense_topk(f, params, k)    top-k eigenvalues of the dense Hessian (eigvalsh), for small models
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from jaxdyn.experiments.base import Probe

#: Models with at most this many parameters get the exact dense Hessian by default.
DENSE_MAX_PARAMS = 64


def hvp(f, params, v):
    """Hessian-vector product ∇²f(params)·v (pytrees), forward-over-reverse."""
    return jax.jvp(jax.grad(f), (params,), (v,))[1]


def flat_hvp(f, params):
    """``(matvec, x0)``: the HVP as a function of flat vectors, and the flat parameters."""
    x0, unravel = ravel_pytree(params)

    def mv(v):
        return ravel_pytree(hvp(f, params, unravel(v)))[0]

    return mv, x0


def lanczos_topk(matvec, v0: jax.Array, m: int, k: int) -> jax.Array:
    """Top-``k`` eigenvalues (descending) of a symmetric operator from ``m`` Lanczos steps.

    Full reorthogonalisation (twice, classical Gram-Schmidt) keeps the Krylov basis
    orthonormal, so no spurious copies of converged eigenvalues appear. Cost: ``m`` matvecs
    and O(m²·n) flops; memory O(m·n).

    Args:
      matvec: ``v -> A v`` on flat vectors of shape (n,).
      v0: start vector, shape (n,); need not be normalised.
      m: Krylov dimension (clipped to n).
      k: how many eigenvalues to return (k ≤ m).
    """
    n = v0.shape[0]
    m = int(min(m, n))
    dt = v0.dtype
    V = jnp.zeros((m + 1, n), dt).at[0].set(v0 / jnp.linalg.norm(v0))
    alpha = jnp.zeros(m, dt)
    beta = jnp.zeros(m, dt)
    tiny = jnp.finfo(dt).tiny

    def body(j, carry):
        V, alpha, beta = carry
        w = matvec(V[j])
        a = jnp.vdot(w, V[j])
        mask = (jnp.arange(m + 1) <= j).astype(dt)[:, None]
        Vj = V * mask  # only the basis built so far
        w = w - Vj.T @ (Vj @ w)
        w = w - Vj.T @ (Vj @ w)
        b = jnp.linalg.norm(w)
        V = V.at[j + 1].set(w / jnp.maximum(b, tiny))
        return V, alpha.at[j].set(a), beta.at[j].set(b)

    V, alpha, beta = jax.lax.fori_loop(0, m, body, (V, alpha, beta))
    T = jnp.diag(alpha) + jnp.diag(beta[:-1], 1) + jnp.diag(beta[:-1], -1)
    return jnp.linalg.eigvalsh(T)[::-1][:k]


def dense_topk(f, params, k: int) -> jax.Array:
    """Top-``k`` eigenvalues (descending) of the dense Hessian of ``f`` at ``params``."""
    x0, unravel = ravel_pytree(params)
    H = jax.hessian(lambda x: f(unravel(x)))(x0)
    return jnp.linalg.eigvalsh(0.5 * (H + H.T))[::-1][:k]


def sharpness_topk(f, params, k: int = 1, method: str = "auto", iters: int = 20,
                   seed: int = 0) -> jax.Array:
    """Top-``k`` Hessian eigenvalues of ``f`` at ``params``: dense when the model is small
    (or ``method="dense"``), Lanczos on HVPs otherwise."""
    x0, _ = ravel_pytree(params)
    n = x0.shape[0]
    if method == "dense" or (method == "auto" and n <= DENSE_MAX_PARAMS):
        return dense_topk(f, params, k)
    mv, _ = flat_hvp(f, params)
    # A fixed start vector: the probe is deterministic and the same for every run.
    v0 = jax.random.normal(jax.random.PRNGKey(seed), (n,), x0.dtype)
    return lanczos_topk(mv, v0, max(iters, 2 * k), k)


def _sharpness_probe(exp, state, static, hp, data, opts):
    if exp.loss is None or exp.params_of_state is None:
        raise ValueError(f"{exp.name} does not define loss/params_of_state")
    params = exp.params_of_state(state)

    def f(p):
        return exp.loss(p, static, hp, data)

    k = int(opts["k"])
    vals = sharpness_topk(f, params, k, opts["method"], int(opts["iters"]))
    return {f"sharpness_{i + 1}": vals[i] for i in range(k)}


#: the sharpness probe's methods (``auto``: dense up to DENSE_MAX_PARAMS parameters)
METHODS = ("auto", "dense", "lanczos")


def _sharpness_check(exp, state, static, opts):
    n = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(exp.params_of_state(state)))
    if opts["method"] not in METHODS:
        raise ValueError(f"method must be one of {list(METHODS)}, got {opts['method']!r}")
    if not 1 <= opts["k"] <= n:
        raise ValueError(f"k must be between 1 and the model's {n} parameters (a Hessian "
                         f"has that many eigenvalues), got {opts['k']}")
    if opts["iters"] < 1:
        raise ValueError(f"iters must be >= 1, got {opts['iters']}")


SHARPNESS = Probe(
    name="sharpness",
    doc="top-k eigenvalues of the training-loss Hessian (dense if ≤ 64 parameters, else "
        "Lanczos on forward-over-reverse HVPs); columns sharpness_1..k. Compare with 2/η.",
    fn=_sharpness_probe,
    defaults={"every": 100, "k": 1, "method": "auto", "iters": 20},
    check=_sharpness_check,
)

#: Probes any experiment with ``loss`` and ``params_of_state`` can ask for.
GENERIC = {SHARPNESS.name: SHARPNESS}
