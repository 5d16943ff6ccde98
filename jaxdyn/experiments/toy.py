"""``toy.ring``: where (S)GD on a two-parameter landscape ends, free or restricted.

GD on f(x, y) = (x² + y² − 1)² − 0.5·x from a grid of starts, free or restricted to the line
y = 0 (y fixed at its optimal value), with optional Gaussian gradient noise (the "SGD" of the
thesis' Figure 4.12; seed 003, docs/science/bottleneck.md). Restriction turns the saddle near
(−0.93, 0) into a local minimum that traps the runs starting left of the local maximum near
(−0.13, 0); free runs escape it.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxdyn.experiments import _checks
from jaxdyn.experiments.base import Experiment, Metric
from jaxdyn.spec import Param


def ring(x, y):
    """f(x, y) = (x² + y² − 1)² − 0.5·x: one global minimum near (1.06, 0), a saddle near
    (−0.93, 0) that becomes a local minimum on the line y = 0, a local maximum near (−0.13, 0)."""
    return (x * x + y * y - 1) ** 2 - 0.5 * x


def _ring_init(key, static, hp, data):
    dt = static["dtype"]
    y0 = jnp.zeros((), dt) if static["mode"] == "restricted" else hp["y0"] * jnp.ones((), dt)
    return {"x": hp["x0"] * jnp.ones((), dt), "y": y0}


def _ring_step(state, key, static, hp, data):
    gx, gy = jax.grad(ring, argnums=(0, 1))(state["x"], state["y"])
    nx, ny = jax.random.normal(key, (2,), state["x"].dtype) * hp["noise"]
    x = state["x"] - hp["lr"] * (gx + nx)
    if static["mode"] == "restricted":
        return {"x": x, "y": state["y"]}
    return {"x": x, "y": state["y"] - hp["lr"] * (gy + ny)}


def _ring_measure(state, static, hp, data):
    x, y = state["x"], state["y"]
    gx, gy = jax.grad(ring, argnums=(0, 1))(x, y)
    if static["mode"] == "restricted":
        gy = jnp.zeros_like(gy)
    return {"x": x, "y": y, "loss": ring(x, y), "grad_norm": jnp.sqrt(gx * gx + gy * gy)}


def check_toy_ring(static, hp):
    """The values ``toy.ring`` refuses (its ``check``):

    - ``lr > 0``: the subject is where (S)GD from each start ends; lr = 0 never moves (the
      noise is scaled by lr too), lr < 0 is gradient ascent. Large lr is legitimate.

    ``x0``, ``y0`` may be anything; ``noise`` too (a negative std draws the same Gaussian).
    """
    _checks.positive_lr(hp)


toy_ring = Experiment(
    name="toy.ring",
    doc="(S)GD on (x² + y² − 1)² − 0.5x from a grid of starts, free or restricted to y = 0: "
        "fixing y at its optimal value turns the saddle near (−0.93, 0) into a trap.",
    params=(
        Param("x0", -0.5, float, doc="start x"),
        Param("y0", 0.0, float, doc="start y (ignored when restricted: y = 0)"),
        Param("lr", 0.01, float, doc="step size"),
        Param("noise", 0.0, float, doc="std of Gaussian noise added to each gradient "
                                       "component every step (SGD-like; from the seed)"),
        Param("mode", "free", str, static=True, choices=("free", "restricted"),
              doc="free: (x, y) both trained; restricted: y fixed at y* = 0"),
    ),
    metrics=(Metric("x"), Metric("y"), Metric("loss", "f(x, y)"),
             Metric("grad_norm", "norm of the gradient of the trained coordinates")),
    init=_ring_init, step=_ring_step, measure=_ring_measure,
    loss=lambda p, static, hp, data: ring(p["x"], p["y"]),
    params_of_state=lambda state: state,
    check=check_toy_ring,
)


EXPERIMENTS = {toy_ring.name: toy_ring}
