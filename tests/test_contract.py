"""The experiment contract: every violation in user code is one message naming the function,
the file and line (and the fix), exit status 2, and nothing written."""

import textwrap

import pytest

HEAD = '''
import jax, jax.numpy as jnp
import jaxdyn

def init(key, static, hp, data):
    w = jax.random.normal(key, (static["n"],), static["dtype"])
    return {"w": w, "opt": jaxdyn.optimizer(static, hp).init(w)}

def step(state, key, static, hp, data):
    g = state["w"]
    u, o = jaxdyn.optimizer(static, hp).update(g, state["opt"], state["w"])
    return {"w": state["w"] + u, "opt": o}

def measure(state, static, hp, data):
    return {"loss": 0.5 * jnp.sum(state["w"] ** 2)}

PARAMS = (jaxdyn.Param("n", 3, int, static=True), jaxdyn.Param("lr", 0.1, float),
          jaxdyn.Param("width", 4, int))
'''


def exp_file(body: str, **kw) -> str:
    fields = dict(name='"quad"', doc='"q"', params="PARAMS",
                  metrics='(jaxdyn.Metric("loss"),)', init="init", step="step",
                  measure="measure")
    fields.update(kw)
    args = ", ".join(f"{k}={v}" for k, v in fields.items())
    return HEAD + textwrap.dedent(body) + f"\nEXP = jaxdyn.Experiment({args})\n"


SWEEP = '''
name = "q"
experiment = "exp.py:EXP"
steps = 5
log = { every = 5 }
'''

CASES = {
    "undeclared metric": (exp_file('''
        def measure2(state, static, hp, data):
            return {"loss": jnp.sum(state["w"]), "extra": jnp.sum(state["w"])}
        ''', measure="measure2"), ["returned but not declared: ['extra']", "exp.py"]),
    "missing metric": (exp_file("", metrics='(jaxdyn.Metric("loss"), jaxdyn.Metric("acc"))'),
                       ["declared but not returned: ['acc']"]),
    "metric shape": (exp_file("", metrics='(jaxdyn.Metric("loss", shape=(2,)),)'),
                     ["metric 'loss' is declared with shape (2,)", "shape ()"]),
    "dynamic as shape": (exp_file('''
        def init2(key, static, hp, data):
            w = jnp.zeros((hp["width"],), static["dtype"])[:static["n"]]
            return {"w": w, "opt": jaxdyn.optimizer(static, hp).init(w)}
        ''', init="init2"), ["init uses the dynamic hyperparameter 'width'",
                             "Param('width', ..., static=True)", "exp.py:"]),
    "dynamic read from static": (exp_file('''
        def init3(key, static, hp, data):
            w = jnp.zeros((static["width"],), static["dtype"])
            return {"w": w, "opt": jaxdyn.optimizer(static, hp).init(w)}
        ''', init="init3"), ["init reads 'width' from static", "dynamic hyperparameter"]),
    "bug in step": (exp_file('''
        def step2(state, key, static, hp, data):
            return {"w": state["w"] @ jnp.ones((7, 2)), "opt": state["opt"]}
        ''', step="step2"), ["step raised TypeError", "exp.py:"]),
    "step changes the state": (exp_file('''
        def step3(state, key, static, hp, data):
            return {"w": state["w"].astype(jnp.float16), "opt": state["opt"]}
        ''', step="step3"), ["step must return a state like init's", "float16"]),
    "bug in measure": (exp_file('''
        def measure3(state, static, hp, data):
            return {"loss": undefined_name}
        ''', measure="measure3"), ["measure raised NameError", "undefined_name"]),
    "bug in make_data": (exp_file('''
        def make_data(key, static):
            raise RuntimeError("no data here")
        ''', make_data="make_data"), ["make_data raised RuntimeError", "no data here"]),
    "python if on a traced value": (exp_file('''
        def step4(state, key, static, hp, data):
            if hp["lr"] > 1:
                return state
            return step(state, key, static, hp, data)
        ''', step="step4"), ["step uses the dynamic hyperparameter 'lr'"]),
    "check hook": (exp_file('''
        def check(static, hp):
            if hp["lr"] <= 0:
                raise ValueError(f"lr must be > 0, got {hp['lr']}")
        ''', check="check"), ["lr must be > 0, got -0.1"]),
    "bug in check": (exp_file('''
        def check(static, hp):
            return len(hp["lr"])
        ''', check="check"), ["its check raised TypeError", "exp.py:", "a bug in check"]),
    "import error": ("import jax\nraise ImportError('missing thing')\n",
                     ["importing", "ImportError", "missing thing", "exp.py:2"]),
    "not an experiment": ("EXP = 3\n", ["EXP is a int, not a jaxdyn.Experiment"]),
    "misspelt name": (exp_file("").replace("EXP = ", "EXPERIMENT = "),
                      ["has no 'EXP'", "did you mean 'EXPERIMENT'"]),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_contract_violation_is_one_message(case, tmp_path, cli):
    body, needles = CASES[case]
    (tmp_path / "exp.py").write_text(body)
    sweep = SWEEP + ('[fixed]\nlr = -0.1\n' if case == "check hook" else "")
    (tmp_path / "s.toml").write_text(sweep)
    code, out, err = cli("run", tmp_path / "s.toml", "--out", tmp_path / "res", "--quiet")
    assert code == 2, err
    assert err.startswith("jaxdyn: error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err
    for n in needles:
        assert n in err, (n, err)
    assert not (tmp_path / "res").exists()  # nothing written


def test_the_valid_file_runs(tmp_path, cli):
    """The base of every case above is itself a valid experiment (so the cases test what
    they say)."""
    (tmp_path / "exp.py").write_text(exp_file(""))
    (tmp_path / "s.toml").write_text(SWEEP)
    code, out, err = cli("run", tmp_path / "s.toml", "--out", tmp_path / "res", "--quiet")
    assert code == 0, err
    code, out, err = cli("list", tmp_path / "exp.py")
    assert code == 0 and "exp.py:EXP" in out and "width" in out


def test_module_reference_and_entry_points(tmp_path, cli, monkeypatch):
    """``package.module:NAME`` from an importable module, and names registered through the
    ``jaxdyn.experiments`` entry-point group (jaxdyn list shows them)."""
    pkg = tmp_path / "userpkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "models.py").write_text(exp_file(""))
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "s.toml").write_text(SWEEP.replace("exp.py:EXP", "userpkg.models:EXP"))
    code, out, err = cli("run", tmp_path / "s.toml", "--out", tmp_path / "res", "--quiet")
    assert code == 0, err
    (tmp_path / "s2.toml").write_text(SWEEP.replace("exp.py:EXP", "nopkg.models:EXP"))
    code, out, err = cli("run", tmp_path / "s2.toml", "--out", tmp_path / "res2", "--quiet")
    assert code == 2 and "no module named 'nopkg'" in err

    # an installed distribution's entry point
    from importlib.metadata import EntryPoint

    from jaxdyn import experiments

    ep = EntryPoint(name="lab.quadratic", value="userpkg.models:EXP",
                    group=experiments.ENTRY_POINT_GROUP)
    monkeypatch.setattr(experiments, "_entry_points", lambda: {ep.name: ep})
    code, out, err = cli("list")
    assert code == 0 and "lab.quadratic" in out
    (tmp_path / "s3.toml").write_text(SWEEP.replace("exp.py:EXP", "lab.quadratic"))
    code, out, err = cli("run", tmp_path / "s3.toml", "--out", tmp_path / "res3", "--quiet")
    assert code == 0, err


def test_api_raises_jaxdyn_errors(tmp_path):
    import jaxdyn

    (tmp_path / "exp.py").write_text(CASES["bug in step"][0])
    (tmp_path / "s.toml").write_text(SWEEP)
    with pytest.raises(jaxdyn.JaxdynError, match="step raised TypeError"):
        jaxdyn.run(tmp_path / "s.toml", out=tmp_path / "res", quiet=True)
    with pytest.raises(jaxdyn.JaxdynError, match="expected a path, a dict"):
        jaxdyn.run(42)
    with pytest.raises(jaxdyn.JaxdynError, match="chunk_size"):
        jaxdyn.run(tmp_path / "s.toml", chunk_size=0)
    assert not (tmp_path / "res").exists()


def test_probe_column_clashing_with_a_metric_is_refused(tmp_path, cli):
    """A probe whose column has a metric's name would overwrite it silently; refused."""
    (tmp_path / "exp.py").write_text(exp_file('''
        def loss(params, static, hp, data):
            return 0.5 * jnp.sum(params ** 2)

        def sharp_probe(exp, state, static, hp, data, opts):
            return {"loss": jnp.sum(state["w"])}
        PROBE = jaxdyn.Probe("shadow", "clashes", sharp_probe, {"every": 1})
        ''', probes="(PROBE,)"))
    (tmp_path / "s.toml").write_text(SWEEP + "probes = { shadow = { every = 1 } }\n")
    code, out, err = cli("run", tmp_path / "s.toml", "--out", tmp_path / "res", "--quiet")
    assert code == 2 and "probe 'shadow' writes the column(s) ['loss']" in err, err
    assert not (tmp_path / "res").exists()
