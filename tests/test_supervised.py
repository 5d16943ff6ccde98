"""jaxdyn.supervised: an Experiment from an initializer, a loss and data, against plain
per-run optax loops (float64), with plain pytrees and with Equinox models."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxdyn

RNG = np.random.default_rng(1)
X = RNG.normal(size=(40, 3))
Y = np.tanh(X @ np.array([0.5, -1.0, 2.0]))[:, None]
XV = RNG.normal(size=(10, 3))
YV = np.tanh(XV @ np.array([0.5, -1.0, 2.0]))[:, None]


def init_pytree(key, hp):
    k1, k2 = jax.random.split(key)
    w = hp["width"]
    return {"w1": jax.random.normal(k1, (3, w)) / np.sqrt(3.0), "b1": jnp.zeros(w),
            "w2": jax.random.normal(k2, (w, 1)) / np.sqrt(w)}


def apply_pytree(p, x):
    return jnp.tanh(x @ p["w1"] + p["b1"]) @ p["w2"]


def mse_pytree(p, batch, hp):
    x, y = batch
    return jnp.mean((apply_pytree(p, x) - y) ** 2)


def mae_pytree(p, batch, hp):
    x, y = batch
    return jnp.mean(jnp.abs(apply_pytree(p, x) - y))


def reference(init, loss, hp, seed, steps, opt, batch_size, x=X, y=Y):
    """A plain optax loop with the engine's keys: init from fold_in(PRNGKey(seed), 0) (cast
    to float64), minibatch indices from fold_in(fold_in(PRNGKey(seed), 1), i)."""
    key = jax.random.PRNGKey(seed)
    k_init, k_step = jax.random.fold_in(key, 0), jax.random.fold_in(key, 1)
    model = init(k_init, hp)
    arrays, static = _split(model)
    arrays = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), arrays)
    s = opt.init(arrays)
    xs, ys = jnp.asarray(x), jnp.asarray(y)

    @jax.jit
    def one(a, s, i):
        idx = jax.random.randint(jax.random.fold_in(k_step, i), (batch_size,), 0, len(x))
        g = jax.grad(lambda a: loss(_join(a, static), (xs[idx], ys[idx]), hp))(a)
        u, s = opt.update(g, s, a)
        return optax.apply_updates(a, u), s

    for i in range(steps):
        arrays, s = one(arrays, s, i)
    return float(loss(_join(arrays, static), (xs, ys), hp)), arrays


def _split(model):
    from jaxdyn._supervised import partition

    return partition(model)


def _join(arrays, skeleton):
    from jaxdyn._supervised import combine

    return combine(arrays, skeleton)


def test_plain_pytree_matches_optax_loops(tmp_path):
    exp = jaxdyn.supervised("reg", init=init_pytree, loss=mse_pytree, data=(X, Y),
                            val_data=(XV, YV), batch_size=8,
                            params=(jaxdyn.Param("width", 6, int, static=True),),
                            metrics={"mae": mae_pytree})
    assert [m.name for m in exp.metrics] == ["train_loss", "val_loss", "train_mae", "val_mae"]
    sweep = {"name": "reg", "steps": 25, "seeds": 2, "log": {"every": 25},
             "precision": "float64", "optimizer": "adamw", "save": {"params": "final"},
             "grid": {"lr": [0.01, 0.05], "weight_decay": [0.0, 0.1]}}
    s = jaxdyn.run(sweep, experiment=exp, out=tmp_path, quiet=True)
    assert s.runs_run == 8 and s.stats["compiled_programs"] == 1
    res = s.load()
    saved = res.params(list(res.runs.run_id))
    with jax.enable_x64(True):
        for _, r in res.runs.iterrows():
            hp = {"width": 6, "lr": r.lr, "weight_decay": r.weight_decay}
            opt = optax.adamw(r.lr, weight_decay=r.weight_decay)
            want, arrays = reference(init_pytree, mse_pytree, hp, int(r.seed), 25, opt, 8)
            assert r.final_train_loss == pytest.approx(want, rel=1e-9)
            np.testing.assert_allclose(saved[r.run_id]["w1"], arrays["w1"], rtol=1e-9)
            val = float(mse_pytree(arrays, (jnp.asarray(XV), jnp.asarray(YV)), hp))
            assert r.final_val_loss == pytest.approx(val, rel=1e-9)
            assert r.final_train_mae == pytest.approx(
                float(mae_pytree(arrays, (jnp.asarray(X), jnp.asarray(Y)), hp)), rel=1e-9)


def test_data_generator_is_shared_per_seed(tmp_path):
    """``data`` as a callable: built once per chunk from the seed's data key, so runs of one
    seed train on the same set and runs of different seeds on different ones."""
    def data(key, static):
        x = jax.random.normal(key, (32, 3), static["dtype"])
        return x, jnp.sin(x[:, :1])

    exp = jaxdyn.supervised("gen", init=init_pytree, loss=mse_pytree, data=data,
                            batch_size=4, params=(jaxdyn.Param("width", 4, int, static=True),))
    s = jaxdyn.run({"name": "g", "steps": 10, "seeds": 2, "log": {"every": 10},
                    "precision": "float64", "grid": {"lr": [0.0, 0.1]}},
                   experiment=exp, out=tmp_path, quiet=True)
    runs = s.load().runs
    assert s.runs_run == 4
    with jax.enable_x64(True):
        for _, r in runs.iterrows():
            from jaxdyn.engine import data_key

            x, y = data(data_key(int(r.seed)), {"dtype": jnp.float64})
            hp = {"width": 4, "lr": r.lr}
            want, _ = reference(init_pytree, mse_pytree, hp, int(r.seed), 10,
                                optax.sgd(r.lr), 4, x=np.asarray(x), y=np.asarray(y))
            assert r.final_train_loss == pytest.approx(want, rel=1e-9)


def test_equinox_model_matches_optax_loop(tmp_path):
    eqx = pytest.importorskip("equinox")

    def init(key, hp):
        return eqx.nn.MLP(3, 1, hp["width"], depth=2, activation=jax.nn.tanh, key=key)

    def loss(model, batch, hp):
        x, y = batch
        return jnp.mean((jax.vmap(model)(x) - y) ** 2)

    exp = jaxdyn.supervised("eqx", init=init, loss=loss, data=(X, Y), batch_size=8,
                            params=(jaxdyn.Param("width", 5, int, static=True),))
    sweep = {"name": "e", "steps": 20, "seeds": 2, "log": {"every": 20},
             "precision": "float64", "optimizer": "sgd", "save": {"params": "final"},
             "grid": {"lr": [0.05], "momentum": [0.0, 0.9]}}
    s = jaxdyn.run(sweep, experiment=exp, out=tmp_path, quiet=True)
    res = s.load()
    with jax.enable_x64(True):
        for _, r in res.runs.iterrows():
            hp = {"width": 5, "lr": r.lr}
            opt = optax.sgd(r.lr, momentum=r.momentum)
            want, arrays = reference(init, loss, hp, int(r.seed), 20, opt, 8)
            assert r.final_train_loss == pytest.approx(want, rel=1e-9)
        # the saved parameters fill the user's own model back
        rid = res.runs.run_id.iloc[0]
        template, skeleton = _split(init(jax.random.PRNGKey(0), {"width": 5}))
        arrays = res.params([rid], like=template)[rid]
        model = _join(arrays, skeleton)
        got = float(loss(model, (jnp.asarray(X), jnp.asarray(Y)), {}))
        assert got == pytest.approx(res.runs.final_train_loss.iloc[0], rel=1e-9)
