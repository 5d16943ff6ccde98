"""A user's own model for jaxdyn: a ReLU MLP student fit to a random teacher network.

Nothing here is special to jaxdyn except the last statement: the model is plain JAX
(a pytree of arrays, a loss on a minibatch), and ``jaxdyn.supervised`` turns it into an
Experiment that sweep files name as ``experiment = "../model.py:STUDENT"``.

Data: each seed draws its own teacher and its own inputs (``data`` is a function of the
seed's data key), shared by every run of that seed, so runs of one seed differ only in
their hyperparameters (common random numbers).
"""

import jax
import jax.numpy as jnp

import jaxdyn

D_IN, N_TRAIN, N_VAL, TEACHER_WIDTH = 8, 256, 128, 4


def teacher(key, dtype):
    """The seed's teacher: a random ReLU network of width TEACHER_WIDTH."""
    w = jax.random.normal(jax.random.fold_in(key, 0), (D_IN, TEACHER_WIDTH), dtype)
    return w / jnp.sqrt(D_IN)


def labelled(key, inputs_key, n, dtype=jnp.float32):
    # every draw names its dtype: jaxdyn.run traces in x64 mode, so a draw without one would
    # be float64 there and float32 in a notebook (other numbers)
    x = jax.random.normal(inputs_key, (n, D_IN), dtype)
    return x, jnp.sum(jax.nn.relu(x @ teacher(key, dtype)), axis=1, keepdims=True)


def train_data(key, static):
    return labelled(key, jax.random.fold_in(key, 1), N_TRAIN, static["dtype"])


def val_data(key, static):  # the same teacher, fresh inputs
    return labelled(key, jax.random.fold_in(key, 2), N_VAL, static["dtype"])


def init(key, hp):
    """He-initialised two-layer ReLU network of width ``hp["width"]``."""
    k1, k2 = jax.random.split(key)
    w = hp["width"]
    dt = hp["dtype"]
    return {"w1": jax.random.normal(k1, (D_IN, w), dt) * jnp.sqrt(2.0 / D_IN),
            "b1": jnp.zeros(w, dt),
            "w2": jax.random.normal(k2, (w, 1), dt) * jnp.sqrt(1.0 / w)}


def predict(params, x):
    return jax.nn.relu(x @ params["w1"] + params["b1"]) @ params["w2"]


def mse(params, batch, hp):
    x, y = batch
    return jnp.mean((predict(params, x) - y) ** 2)


STUDENT = jaxdyn.supervised(
    "teacher_student_mlp", init=init, loss=mse, data=train_data, val_data=val_data,
    params=(jaxdyn.Param("width", 32, int, static=True, doc="student hidden width"),),
    batch_size=32, lr=1e-2,
    doc="ReLU MLP student of a random ReLU teacher (examples/teacher_student)")
