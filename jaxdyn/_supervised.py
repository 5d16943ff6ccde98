"""The short path: an :class:`Experiment` from a parameter initializer, a loss and data.

For the common case, a model trained by minibatch gradient descent on a fixed data set::

    exp = jaxdyn.supervised(
        "mlp",
        init=lambda key, hp: init_mlp(key, hp["width"]),        # any pytree, or an Equinox model
        loss=lambda model, batch, hp: mse(model, *batch),       # a scalar: the batch's mean loss
        data=(x_train, y_train),                                # arrays, leading axis = samples
        val_data=(x_val, y_val),
        params=(jaxdyn.Param("width", 128, int, static=True),),
        batch_size=64)

builds, for every run of a sweep,

    θ₀ = init(k_init, hp)                       (inexact leaves cast to the sweep's precision)
    B_t = (i₁ … i_b),  i_j ~ Uniform{0 … n−1}   (from the run's step key: common random numbers)
    g_t = ∇_θ loss(θ_t, data[B_t], hp),  (u_t, s_{t+1}) = opt.update(g_t, s_t, θ_t),
    θ_{t+1} = θ_t + u_t,

with ``opt = jaxdyn.optimizer(static, hp)`` (the sweep's ``optimizer``, ``sgd`` by default),
and logs ``train_loss`` (the loss on the whole training set), ``val_loss`` (with
``val_data``) and ``train_<m>``/``val_<m>`` for each extra metric. Minibatches are drawn with
replacement, independently per step, from the run's seed alone: runs of one seed see the same
batches across the grid.

Data are shared, never copied per run: arrays are constants of the compiled program (one
copy per device); a callable ``data(key, static) -> pytree`` is called once per chunk with the
seed's data key (runs of a seed share it, ``make_data``).

Precision: ``jaxdyn.run`` traces with JAX's x64 mode on, so an array made without a dtype
(``jax.random.normal(key, shape)``) is float64 inside a sweep and float32 outside it: draw
data with ``static["dtype"]`` (and parameters with ``hp["dtype"]``) to get the same numbers
when you rebuild them in a notebook. Parameters are cast to the sweep's precision anyway.

Models: any pytree whose inexact-array leaves are the parameters; other leaves (activation
functions of an Equinox module, Python ints) are kept as they are, outside the traced state,
as ``equinox.partition`` does. Flax Linen's variable dicts are plain pytrees.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from jaxdyn.experiments.base import Experiment, Metric
from jaxdyn.optim import optimizer
from jaxdyn.spec import Param

_ARRAY = object()  # marks an array leaf's place in a skeleton


def _is_array(x) -> bool:
    return isinstance(x, (jax.Array, np.ndarray, np.generic)) and \
        jnp.issubdtype(jnp.result_type(x), jnp.inexact)


def partition(tree) -> tuple[Any, tuple]:
    """``(arrays, skeleton)``: ``arrays`` is ``tree`` with every non-array leaf replaced by
    None (a pytree of the parameters alone); ``skeleton`` rebuilds ``tree`` with
    :func:`combine`."""
    leaves, treedef = jax.tree.flatten(tree)
    arrays = [x if _is_array(x) else None for x in leaves]
    static = tuple(_ARRAY if _is_array(x) else x for x in leaves)
    return jax.tree.unflatten(treedef, arrays), (treedef, static)


def combine(arrays, skeleton) -> Any:
    treedef, static = skeleton
    it = iter(jax.tree.leaves(arrays))
    return jax.tree.unflatten(treedef, [next(it) if s is _ARRAY else s for s in static])


def supervised(name: str, *, init: Callable, loss: Callable, data, val_data=None,
               params: tuple[Param, ...] = (), batch_size: int = 32,
               metrics: Mapping[str, Callable] | None = None, lr: float = 1e-2,
               doc: str = "") -> Experiment:
    """An :class:`Experiment` for minibatch training of ``init``'s model on ``data``.

    Args:
      name: the experiment's name (``jaxdyn list``, the manifest).
      init: ``init(key, hp) -> model``; ``hp`` holds every hyperparameter, static ones as
        Python values, dynamic ones traced, and ``dtype`` (the sweep's precision).
      loss: ``loss(model, batch, hp) -> scalar``, the mean loss of a batch (a pytree of arrays
        with a leading sample axis, like ``data``).
      data: the training set, a pytree of arrays with a common leading axis of ``n`` samples;
        or ``data(key, static) -> pytree``, built once per chunk from the seed's data key.
      val_data: the validation set, in the same form (optional). As a function it gets
        the same key as ``data``, so both can draw one teacher; draw the validation inputs
        from another ``fold_in`` of it.
      params: your hyperparameters; ``lr`` (float, default ``lr``) and ``batch_size``
        (static int, default ``batch_size``) are added unless you declare them.
      batch_size: the default minibatch size.
      metrics: ``{name: fn(model, split, hp) -> scalar}``, logged as ``train_<name>`` (and
        ``val_<name>``).
      lr: the default step size.
      doc: a line for ``jaxdyn list``.

    Returns:
      an Experiment; run it with ``jaxdyn.run(sweep_dict, experiment=exp)`` or name it in a
      sweep file as ``"file.py:VARIABLE"``.
    """
    metrics = dict(metrics or {})
    names = {p.name for p in params}
    all_params = tuple(params)
    if "lr" not in names:
        all_params += (Param("lr", float(lr), float, doc="step size (peak of a schedule)"),)
    if "batch_size" not in names:
        all_params += (Param("batch_size", int(batch_size), int, static=True,
                             doc="minibatch size"),)
    static_names = {p.name for p in all_params if p.static}
    splits = ["train"] + (["val"] if val_data is not None else [])
    declared = tuple(Metric(f"{s}_loss", f"mean loss on the {s} set") for s in splits) + \
        tuple(Metric(f"{s}_{m}", f"{m} on the {s} set") for m in metrics for s in splits)
    shared = callable(data)
    if shared and val_data is not None and not callable(val_data):
        raise TypeError("supervised: give val_data in the same form as data (both arrays, "
                        "or both callables)")
    skeletons: dict[str, tuple] = {}

    def sig(static):
        return repr(sorted((k, v) for k, v in static.items() if k in static_names))

    def cast(tree, dt):
        return jax.tree.map(lambda a: jnp.asarray(a, dt) if _is_array(a) else jnp.asarray(a),
                            tree)

    def get_data(static, d):
        if shared:
            return d
        dt = static["dtype"]
        out = {"train": cast(data, dt)}
        if val_data is not None:
            out["val"] = cast(val_data, dt)
        return out

    def make_data(key, static):
        dt = static["dtype"]
        out = {"train": cast(data(key, static), dt)}
        if val_data is not None:
            out["val"] = cast(val_data(key, static), dt)
        return out

    def cfg(static, hp):
        return {**{k: static[k] for k in static_names}, "dtype": static["dtype"], **hp}

    def _init(key, static, hp, d):
        model = init(key, cfg(static, hp))
        arrays, skel = partition(model)
        skeletons[sig(static)] = skel
        arrays = jax.tree.map(lambda a: jnp.asarray(a, static["dtype"]), arrays)
        return {"params": arrays, "opt": optimizer(static, hp).init(arrays)}

    def model_of(static, arrays):
        return combine(arrays, skeletons[sig(static)])

    def _step(state, key, static, hp, d):
        train = get_data(static, d)["train"]
        n = jax.tree.leaves(train)[0].shape[0]
        idx = jax.random.randint(key, (static["batch_size"],), 0, n)
        batch = jax.tree.map(lambda a: a[idx], train)
        c = cfg(static, hp)
        grads = jax.grad(lambda p: loss(model_of(static, p), batch, c))(state["params"])
        updates, opt_state = optimizer(static, hp).update(grads, state["opt"],
                                                          state["params"])
        new = jax.tree.map(lambda p, u: p + u.astype(p.dtype), state["params"], updates)
        return {"params": new, "opt": opt_state}

    def _measure(state, static, hp, d):
        splits_data = get_data(static, d)
        model, c = model_of(static, state["params"]), cfg(static, hp)
        out = {}
        for s in splits:
            out[f"{s}_loss"] = loss(model, splits_data[s], c)
        for m, fn in metrics.items():
            for s in splits:
                out[f"{s}_{m}"] = fn(model, splits_data[s], c)
        return out

    def _loss(p, static, hp, d):
        return loss(model_of(static, p), get_data(static, d)["train"], cfg(static, hp))

    return Experiment(
        name=name, doc=doc or f"{name}: minibatch training (jaxdyn.supervised)",
        params=all_params, metrics=declared, init=_init, step=_step, measure=_measure,
        make_data=make_data if shared else None, loss=_loss,
        params_of_state=lambda state: state["params"])
