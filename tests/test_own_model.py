"""Sweeping your own model: an experiment file + a sweep file in a user's folder, run with
``jaxdyn run`` and ``jaxdyn.run``, against a plain per-run optax loop written here."""

import json
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxdyn
from jaxdyn import experiments

# A user's experiment file: a 2-layer tanh MLP on a fixed 24-sample regression set, trained
# by minibatches of 6 drawn from the step key, with the sweep's optimizer.
MLP_FILE = '''
import jax, jax.numpy as jnp, numpy as np
import jaxdyn

_rng = np.random.default_rng(0)
X = _rng.normal(size=(24, 3))
Y = np.sin(X @ np.array([1.0, -2.0, 0.5]))

def init(key, static, hp, data):
    k1, k2 = jax.random.split(key)
    w = static["width"]
    p = {"w1": jax.random.normal(k1, (3, w), static["dtype"]) / jnp.sqrt(3.0),
         "w2": jax.random.normal(k2, (w,), static["dtype"]) / jnp.sqrt(w)}
    return {"params": p, "opt": jaxdyn.optimizer(static, hp).init(p)}

def loss(p, x, y):
    return jnp.mean((jnp.tanh(x @ p["w1"]) @ p["w2"] - y) ** 2)

def step(state, key, static, hp, data):
    idx = jax.random.randint(key, (6,), 0, 24)
    x, y = jnp.asarray(X, static["dtype"])[idx], jnp.asarray(Y, static["dtype"])[idx]
    g = jax.grad(loss)(state["params"], x, y)
    opt = jaxdyn.optimizer(static, hp)
    u, o = opt.update(g, state["opt"], state["params"])
    return {"params": jax.tree.map(lambda a, b: a + b, state["params"], u), "opt": o}

def measure(state, static, hp, data):
    return {"loss": loss(state["params"], jnp.asarray(X, static["dtype"]),
                         jnp.asarray(Y, static["dtype"]))}

MLP = jaxdyn.Experiment(
    name="mymlp", doc="a user's MLP",
    params=(jaxdyn.Param("width", 5, int, static=True), jaxdyn.Param("lr", 0.05, float)),
    metrics=(jaxdyn.Metric("loss"),), init=init, step=step, measure=measure,
    params_of_state=lambda s: s["params"])
'''

SWEEP = '''
name = "mine"
experiment = "model/mymlp.py:MLP"
steps = 30
seeds = 2
log = { every = 10 }
precision = "float64"
optimizer = ["sgd", "adam", "adamw"]
save = { params = "final" }
[[grid]]
optimizer = ["sgd"]
lr = [0.05, 0.1]
momentum = [0.0, 0.9]
[[grid]]
optimizer = ["adam"]
lr = [0.01]
b1 = [0.8, 0.9]
[[grid]]
optimizer = ["adamw"]
lr = [0.01]
weight_decay = [0.0, 0.1]
'''


@pytest.fixture
def project(tmp_path):
    """A user's folder: model/mymlp.py and sweeps/mine.toml, nothing else."""
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "mymlp.py").write_text(MLP_FILE)
    (tmp_path / "mine.toml").write_text(SWEEP)
    return tmp_path


def reference_loop(user, hp: dict, seed: int, steps: int, log_steps):
    """A plain per-run optax loop: the same keys (PRNGKey(seed) folded with 0 for init, 1
    for steps, then the step number), the optimizer built by optax directly."""
    name = hp["optimizer"]
    if name == "sgd":
        opt = optax.sgd(hp["lr"], momentum=hp["momentum"])
    elif name == "adam":
        opt = optax.adam(hp["lr"], b1=hp["b1"])
    else:
        opt = optax.adamw(hp["lr"], weight_decay=hp["weight_decay"])
    key = jax.random.PRNGKey(seed)
    k_init, k_step = jax.random.fold_in(key, 0), jax.random.fold_in(key, 1)
    k1, k2 = jax.random.split(k_init)
    w = 5
    p = {"w1": jax.random.normal(k1, (3, w), jnp.float64) / jnp.sqrt(3.0),
         "w2": jax.random.normal(k2, (w,), jnp.float64) / jnp.sqrt(w)}
    s = opt.init(p)
    X, Y = jnp.asarray(user.X), jnp.asarray(user.Y)

    @jax.jit
    def one(p, s, i):
        idx = jax.random.randint(jax.random.fold_in(k_step, i), (6,), 0, 24)
        g = jax.grad(user.loss)(p, X[idx], Y[idx])
        u, s = opt.update(g, s, p)
        return optax.apply_updates(p, u), s

    out = {0: float(user.loss(p, X, Y))}
    for i in range(steps):
        p, s = one(p, s, i)
        if i + 1 in log_steps:
            out[i + 1] = float(user.loss(p, X, Y))
    return out, p


def _check_against_reference(res, project):
    import importlib.util

    spec = importlib.util.spec_from_file_location("mymlp_ref", project / "model" / "mymlp.py")
    user = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(user)
    runs = res.runs
    assert len(runs) == 16 and runs.run_id.is_unique
    assert sorted(runs.optimizer.unique()) == ["adam", "adamw", "sgd"]
    curves = res.curves()
    with jax.enable_x64(True):
        for _, r in runs.iterrows():
            hp = {k: r[k] for k in ("optimizer", "lr", "momentum", "b1", "weight_decay")}
            ref, _ = reference_loop(user, hp, int(r.seed), 30, {10, 20, 30})
            got = curves[curves.run_id == r.run_id].set_index("step")["loss"]
            assert sorted(got.index) == [0, 10, 20, 30]
            for s, v in ref.items():
                np.testing.assert_allclose(got[s], v, rtol=1e-9, err_msg=f"{hp} seed {r.seed}")
            np.testing.assert_allclose(r.final_loss, ref[30], rtol=1e-9)


def test_user_project_cli_and_api_match_plain_optax_loops(project, cli, monkeypatch):
    monkeypatch.chdir(project)  # a user's shell in their own folder
    code, out, err = cli("run", "mine.toml", "--out", "res_cli", "--quiet")
    assert code == 0, err
    assert "16 total" in out
    _check_against_reference(jaxdyn.load("mine", root=project / "res_cli"), project)

    summary = jaxdyn.run(project / "mine.toml", out=project / "res_api", quiet=True)
    assert (summary.runs_total, summary.runs_run, summary.diverged) == (16, 16, 0)
    res = summary.load()
    _check_against_reference(res, project)
    # both paths wrote the same bits
    a = jaxdyn.load("mine", root=project / "res_cli").curves()
    b = res.curves()
    np.testing.assert_array_equal(a.loss.to_numpy(), b.loss.to_numpy())
    # knobs an optimizer does not take are null, and not part of the run's identity
    runs = res.runs
    assert runs.loc[runs.optimizer == "sgd", "b1"].isna().all()
    assert runs.loc[runs.optimizer == "adam", "momentum"].isna().all()
    assert (runs.loc[runs.optimizer == "adamw", "b1"] == 0.9).all()  # adamw's default
    man = json.loads((summary.folder / "manifest.json").read_text())
    src = man["experiment_source"]
    assert src["file"].endswith("mymlp.py") and len(src["sha256"]) == 64

    # resuming does nothing; a changed experiment file refuses to resume
    again = jaxdyn.run(project / "mine.toml", out=project / "res_api", quiet=True)
    assert again.runs_run == 0 and again.runs_done_before == 16
    (project / "model" / "mymlp.py").write_text(MLP_FILE.replace("(6,)", "(7,)"))
    code, out, err = cli("run", "mine.toml", "--out", "res_api", "--quiet")
    assert code == 2
    assert "another version of its experiment code" in err and "mymlp.py" in err
    code, out, err = cli("run", "mine.toml", "--out", "res_api", "--quiet", "--force")
    assert code == 0, err
    assert len(list(project.glob("res_api/mine.replaced-*"))) == 1


def test_saved_final_params_reproduce_final_metrics(project):
    summary = jaxdyn.run(project / "mine.toml", out=project / "res", quiet=True,
                         overrides=["steps=12"])
    res = summary.load()
    runs = res.runs
    saved = res.params(list(runs.run_id))
    exp = experiments.get("model/mymlp.py:MLP", project)
    assert set(saved) == set(runs.run_id)
    with jax.enable_x64(True):
        static = {"width": 5, "dtype": jnp.float64, "steps": 12}
        for _, r in runs.iterrows():
            p = saved[r.run_id]
            assert set(p) == {"w1", "w2"} and p["w1"].shape == (3, 5)
            m = exp.measure({"params": p}, static, {"lr": r.lr}, None)
            assert float(m["loss"]) == pytest.approx(r.final_loss, rel=1e-12)
    one = res.params(runs.run_id.iloc[0])  # a string is one id
    assert list(one) == [runs.run_id.iloc[0]]


def test_saved_log_params_reproduce_the_curve(tmp_path):
    """``save = { params = "log" }`` on a built-in family: the mean model's parameters at
    every logged step give that step's logged loss back through ``measure``."""
    sweep = {"name": "mm", "experiment": "eos.mean_model", "steps": 40, "seeds": 2,
             "log": {"every": 10}, "precision": "float64", "save": {"params": "log"},
             "grid": {"lr": [0.5, 2.0], "d": [10, 40]}}
    res = jaxdyn.run(sweep, out=tmp_path, quiet=True).load()
    exp = experiments.get("eos.mean_model")
    curves = res.curves(columns=["loss"])
    runs = res.runs.set_index("run_id")
    with jax.enable_x64(True):
        for rid in runs.index[:4]:
            for step in (0, 20, 40):
                p = res.params([rid], step=step)[rid]
                hp = {k: runs.loc[rid, k] for k in exp.dynamic_names}
                m = exp.measure({"params": p}, {"dtype": jnp.float64, "steps": 40}, hp, None)
                want = curves[(curves.run_id == rid) & (curves.step == step)].loss.item()
                assert float(m["loss"]) == pytest.approx(want, rel=1e-12)


def _count_programs(summary) -> int:
    return summary.stats["compiled_programs"]


def test_optimizer_knob_grid_compiles_once_and_optimizers_split_groups(tmp_path):
    base = {"name": "k", "experiment": "eos.mean_model", "steps": 20, "seeds": 2,
            "log": {"every": 10}, "optimizer": "adamw"}
    one = jaxdyn.run({**base, "grid": {"weight_decay": [0.0]}}, out=tmp_path / "a",
                     quiet=True)
    many = jaxdyn.run({**base, "grid": {"weight_decay": [0.0, 1e-3, 1e-2, 0.1],
                                        "b1": [0.8, 0.9]}}, out=tmp_path / "b", quiet=True)
    assert _count_programs(one) == _count_programs(many) == 1
    assert many.runs_run == 16
    assert many.load().runs.group.nunique() == 1
    both = jaxdyn.run({**base, "optimizer": ["sgd", "adam"], "grid": {"lr": [0.1, 0.2]}},
                      out=tmp_path / "c", quiet=True)
    assert _count_programs(both) == 2
    groups = both.load().runs.groupby("group").optimizer.unique()
    assert len(groups) == 2 and sorted(g[0] for g in groups) == ["adam", "sgd"]


def test_no_optimizer_named_keeps_plain_sgd_and_run_ids(tmp_path):
    """A sweep that names no optimizer gets optax.sgd(lr) and the same run_ids as before;
    naming sgd explicitly gives the same trajectories (momentum 0 adds exactly 0)."""
    base = {"name": "p", "experiment": "eos.mean_model", "steps": 30, "seeds": 2,
            "log": {"every": 10}, "precision": "float64", "grid": {"lr": [0.5, 4.0]}}
    plain = jaxdyn.run(base, out=tmp_path / "a", quiet=True).load()
    named = jaxdyn.run({**base, "optimizer": "sgd"}, out=tmp_path / "b", quiet=True).load()
    assert "optimizer" not in plain.runs.columns
    from jaxdyn import spec

    sw = spec.validate(dict(base), experiments.params_of)
    assert sorted(plain.runs.run_id) == sorted(r.run_id for r in sw.runs())
    a = plain.curves().sort_values(["run_id", "step"])
    b = named.curves()
    b = b.assign(key=b.run_id.map(dict(zip(named.runs.run_id, named.runs.seed.astype(str)
                                            + named.runs.lr.astype(str)))))
    a = a.assign(key=a.run_id.map(dict(zip(plain.runs.run_id, plain.runs.seed.astype(str)
                                           + plain.runs.lr.astype(str)))))
    a, b = a.sort_values(["key", "step"]), b.sort_values(["key", "step"])
    np.testing.assert_array_equal(a.loss.to_numpy(), b.loss.to_numpy())


@pytest.mark.parametrize("name", ["sgd", "adam", "adamw", "rmsprop", "adagrad", "lion",
                                  "lamb", "nadam"])
def test_each_common_optimizer_matches_optax(name):
    """jaxdyn.optimizer with traced knobs = optax's alias with the same Python values."""
    from jaxdyn import optim

    kn = optim.knobs(name)
    static = {"optimizer": name, "steps": 10, **{k: v for k, v in kn.items()
                                                  if not isinstance(v, float)}}
    vals = {k: (v * 0.9 + 0.01 if k != "momentum" else 0.5) for k, v in kn.items()
            if isinstance(v, float)}
    params = {"w": jnp.array([1.0, -2.0, 3.0])}
    grads = [{"w": jnp.array([0.3, -0.1, 0.2]) * (i + 1)} for i in range(4)]

    def go(opt):
        s, p = opt.init(params), params
        for g in grads:
            u, s = opt.update(g, s, p)
            p = optax.apply_updates(p, u)
        return p["w"]

    traced = jax.jit(lambda hp: go(optim.optimizer(static, hp)))({"lr": 0.1, **vals})
    ref = go(getattr(optax, name)(0.1, **{**{k: static[k] for k in static
                                               if k in kn}, **vals}))
    np.testing.assert_allclose(traced, ref, rtol=1e-6)


@pytest.mark.parametrize("sched,opt_fn,kw", [
    ("cosine", "cosine_decay_schedule", {"alpha": 0.1}),
    ("warmup_cosine", "warmup_cosine_decay_schedule",
     {"init_value": 0.01, "warmup_steps": 20.0, "end_value": 0.05}),
    ("linear", "linear_schedule", {"end_value": 0.02, "transition_steps": 60.0}),
    ("exponential", "exponential_decay", {"decay_rate": 0.5, "transition_steps": 25.0}),
])
def test_schedules_match_optax(sched, opt_fn, kw):
    from jaxdyn import optim

    steps, lr = 100, 0.3
    f = jax.jit(lambda hp, c: optim.schedule_fn(sched, hp["lr"], hp, steps)(c))
    if sched == "cosine":
        ref = optax.cosine_decay_schedule(lr, steps, alpha=kw["alpha"])
    elif sched == "warmup_cosine":
        ref = optax.warmup_cosine_decay_schedule(kw["init_value"], lr, int(kw["warmup_steps"]),
                                                 steps, kw["end_value"])
    elif sched == "linear":
        ref = optax.linear_schedule(lr, kw["end_value"], int(kw["transition_steps"]))
    else:
        ref = optax.exponential_decay(lr, int(kw["transition_steps"]), kw["decay_rate"])
    for c in (0, 1, 10, 19, 20, 21, 50, 99, 100, 150):
        np.testing.assert_allclose(f({"lr": lr, **kw}, c), ref(c), rtol=1e-5, atol=1e-9)


def test_schedule_in_a_sweep(tmp_path):
    """A cosine schedule on the mean model: the step size decays (final lr = alpha * lr),
    and a traced alpha grid is one program."""
    s = jaxdyn.run({"name": "c", "experiment": "eos.mean_model", "steps": 20, "seeds": 1,
                    "log": {"every": 10}, "schedule": "cosine",
                    "grid": {"alpha": [0.0, 0.5, 1.0]}}, out=tmp_path, quiet=True)
    assert s.stats["compiled_programs"] == 1
    runs = s.load().runs.sort_values("alpha")
    b = runs.final_b.to_numpy()
    assert np.all(np.diff(b) != 0)  # alpha changes the trajectory


def test_optimizer_spec_errors(write_sweep, cli, tmp_path):
    head = 'name = "x"\nexperiment = "eos.mean_model"\nsteps = 10\n'
    cases = [
        ('optimizer = "adamm"', "key 'optimizer'", "did you mean 'adam'"),
        ('optimizer = "sgd"\n[grid]\nb1 = [0.9]', "grid.b1", "knob of adam"),
        ('optimizer = ["sgd", "adam"]\n[grid]\nmomentum = [0.9]', "grid.momentum",
         "optimizer 'adam' takes no 'momentum'"),
        ('schedule = "cosin"', "key 'schedule'", "did you mean 'cosine'"),
        ('optimizer = "adam"\n[fixed]\nweight_decay = 0.1', "fixed.weight_decay",
         "knob of adamw"),
        ('save = { params = "all" }', "save.params", "expected one of"),
        ('[[grid]]\nlr = [0.1]\n[[grid]]\nlrr = [0.2]', "grid[1].lrr", "did you mean 'lr'"),
    ]
    for body, key, msg in cases:
        f = write_sweep(head + body)
        code, out, err = cli("run", f, "--out", tmp_path / "o", "--quiet")
        assert code == 2, (body, err)
        assert key in err and msg in err, (body, err)
        assert not (tmp_path / "o").exists()


def test_grid_union_is_deduplicated(tmp_path):
    s = jaxdyn.run({"name": "u", "experiment": "eos.mean_model", "steps": 10, "seeds": 2,
                    "log": {"every": 5},
                    "grid": [{"lr": [0.1, 0.2], "d": [10]}, {"lr": [0.2, 0.3], "d": [10]}]},
                   out=tmp_path, quiet=True)
    assert s.runs_total == 6 and s.duplicates == 2
    runs = s.load().runs
    assert runs.run_id.is_unique and sorted(runs.lr.unique()) == [0.1, 0.2, 0.3]


def test_import_changes_no_jax_setting(tmp_path):
    """``import jaxdyn`` (and everything on the analysis side) leaves every JAX flag as it
    was; ``jaxdyn.run`` of a float64 sweep gives float64 results and restores x64."""
    import subprocess
    import sys

    code = textwrap.dedent(f"""
        import jax
        before = dict(jax.config.values)
        import jaxdyn, jaxdyn.experiments
        jaxdyn.experiments.get("eos.mean_model")
        assert dict(jax.config.values) == before, [k for k in before
            if jax.config.values[k] != before[k]]
        assert not jax.config.jax_enable_x64
        s = jaxdyn.run({{"name": "f", "experiment": "eos.mean_model", "steps": 10,
                         "log": {{"every": 5}}, "precision": "float64"}},
                       out={str(tmp_path)!r}, quiet=True)
        assert not jax.config.jax_enable_x64
        import pyarrow.parquet as pq, glob
        t = pq.read_table(glob.glob({str(tmp_path)!r} + "/f/curves/*.parquet")[0])
        assert str(t.schema.field("loss").type) == "double", t.schema
        print("ok")
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       env={**__import__("os").environ,
                            "JAXDYN_CACHE_DIR": str(tmp_path / "cache")})
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "ok"


def test_notice_when_jax_started_first(tmp_path):
    """In a notebook whose JAX already runs on one CPU device, jaxdyn.run says once why it
    cannot use one device per core, and runs anyway."""
    import subprocess
    import sys

    code = textwrap.dedent(f"""
        import jax, jax.numpy as jnp
        jnp.zeros(3).block_until_ready()          # the notebook's own JAX work first
        import jaxdyn
        for i in range(2):
            jaxdyn.run({{"name": f"n{{i}}", "experiment": "eos.mean_model", "steps": 10,
                         "log": {{"every": 5}}}}, out={str(tmp_path)!r}, quiet=True)
        print(len(jax.devices()))
    """)
    env = {k: v for k, v in __import__("os").environ.items()
           if k not in ("XLA_FLAGS", "JAXDYN_CPU_DEVICES")}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       env={**env, "JAXDYN_CACHE_DIR": str(tmp_path / "cache")})
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "1"
    if (__import__("os").cpu_count() or 1) > 1:
        assert r.stderr.count("JAX was already started with 1 CPU device") == 1, r.stderr


def test_heavy_ball_stability_threshold(tmp_path):
    """Momentum as a sweep axis, against a closed form: gradient descent with heavy-ball
    momentum β on f(w) = λw²/2 is stable iff λ·lr < 2(1 + β). Runs just below the threshold
    converge, runs just above diverge (and are flagged), for β in {0, 0.5, 0.9}."""
    lam = 4.0

    def init(key, static, hp, data):
        w = jnp.ones((), static["dtype"])
        return {"w": w, "opt": jaxdyn.optimizer(static, hp).init(w)}

    def step(state, key, static, hp, data):
        u, o = jaxdyn.optimizer(static, hp).update(lam * state["w"], state["opt"], state["w"])
        return {"w": state["w"] + u, "opt": o}

    exp = jaxdyn.Experiment(
        name="quadratic", doc="f(w) = λw²/2", params=(jaxdyn.Param("lr", 0.1, float),),
        metrics=(jaxdyn.Metric("w"),), init=init, step=step,
        measure=lambda s, static, hp, data: {"w": s["w"]})
    betas = [0.0, 0.5, 0.9]
    lrs = [f * 2 * (1 + b) / lam for b in betas for f in (0.97, 1.03)]
    s = jaxdyn.run({"name": "hb", "steps": 3000, "log": {"every": 3000},
                    "precision": "float64", "optimizer": "sgd", "diverge_above": 1e6,
                    "zip": {"lr": lrs, "momentum": [b for b in betas for _ in (0, 1)]}},
                   experiment=exp, out=tmp_path, quiet=True)
    runs = s.load().runs
    thresh = 2 * (1 + runs.momentum) / lam
    below, above = runs[runs.lr < thresh], runs[runs.lr > thresh]
    assert len(below) == len(above) == 3
    assert (below.status == "ok").all() and (below.final_w.abs() < 1e-3).all()
    assert (above.status == "diverged").all()
