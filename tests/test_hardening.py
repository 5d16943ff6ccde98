"""Inputs a careless user types: each refused with one message, or handled as meant."""

import pytest

import jaxdyn
from jaxdyn import experiments, spec


def _quick(tmp_path, cli, name="base"):
    f = tmp_path / "q.toml"
    f.write_text(f'name = "{name}"\nexperiment = "eos.mean_model"\nsteps = 10\nseeds = 2\n'
                 'log = {{ every = 5 }}\n[grid]\nlr = [0.01, 0.02]\n'.replace("{{", "{")
                 .replace("}}", "}"))
    code, out, err = cli("run", f, "--out", tmp_path / "res", "--quiet")
    assert code == 0, err
    return tmp_path / "res"


def test_name_with_a_newline_is_refused(tmp_path, cli):
    f = tmp_path / "s.toml"
    f.write_text('name = "evil\\n"\nexperiment = "eos.mean_model"\nsteps = 10\n')
    code, out, err = cli("run", f, "--out", tmp_path / "res")
    assert code == 2 and "key 'name'" in err and not (tmp_path / "res").exists()


def test_a_byte_order_mark_is_accepted():
    text = '\ufeffname = "b"\nexperiment = "eos.mean_model"\nsteps = 10\n'
    assert spec.parse(text, experiments.params_of).name == "b"


def test_duplicate_grid_values_are_run_once(tmp_path):
    s = jaxdyn.run({"name": "d", "experiment": "eos.mean_model", "steps": 10, "seeds": 2,
                    "log": {"every": 5}, "grid": {"lr": [0.001, 0.001, 0.002],
                                                  "d": [100, 100.0]}},
                   out=tmp_path, quiet=True)
    assert s.runs_total == 4 and s.duplicates == 8
    runs = s.load().runs
    assert len(runs) == 4 and runs.run_id.is_unique
    assert len(s.load().curves()) == 4 * 3


def test_a_sweep_named_twice_is_read_once(tmp_path, cli):
    root = _quick(tmp_path, cli)
    one = jaxdyn.query("SELECT count(*) AS n FROM runs", sweeps=["base"], root=root).n[0]
    two = jaxdyn.query("SELECT count(*) AS n FROM runs", sweeps=["base", "base"], root=root).n[0]
    assert one == two == 4
    code, out, err = cli("query", "base", "base", "SELECT count(*) AS n FROM runs", "--out", root)
    assert code == 0 and out.split()[-1] == "4"


def test_query_options_anywhere_and_max_rows_checked(tmp_path, cli):
    root = _quick(tmp_path, cli)
    code, out, err = cli("query", "base", "--out", root, "SELECT count(*) AS n FROM runs")
    assert code == 0, err
    assert out.split()[-1] == "4"
    code, out, err = cli("query", "base", "SELECT * FROM runs", "--out", root, "--max-rows",
                         "-5")
    assert code == 2 and "--max-rows" in err and out == ""


def test_python_api_raises_jaxdyn_errors_on_wrong_types(tmp_path, cli):
    root = _quick(tmp_path, cli)
    for call in (lambda: jaxdyn.load(None), lambda: jaxdyn.query(42, root=root),
                 lambda: jaxdyn.query("SELECT 1", sweeps=42, root=root)):
        with pytest.raises(jaxdyn.JaxdynError):
            call()
    res = jaxdyn.load("base", root=root)
    rid = res.runs.run_id[0]
    assert set(res.curves(run_ids=rid).run_id) == {rid}  # a string is one id


# ---- sizes: refused (or asked at a terminal) before anything is compiled or written --------
def _refused(cli, tmp_path, text, *words):
    f = tmp_path / "s.toml"
    f.write_text(text)
    code, out, err = cli("run", f, "--out", tmp_path / "res")
    assert code == 2 and out == "" and "Traceback" not in err, err
    for w in words:
        assert w in err, err
    assert not (tmp_path / "res").exists()
    return err


def test_an_int_beyond_64_bits_is_refused(tmp_path, cli):
    _refused(cli, tmp_path, 'name = "a"\nexperiment = "eos.mean_model"\nsteps = 10\n'
                            '[fixed]\nd = 99999999999999999999\n', "key 'fixed.d'", "64-bit")


def test_huge_steps_are_refused_without_a_terminal(tmp_path, cli):
    """steps = 1e12 with 5 log points used to start and run until killed."""
    _refused(cli, tmp_path, 'name = "b"\nexperiment = "eos.mean_model"\n'
                            'steps = 1000000000000\nlog = { points = 5 }\n',
             "key 'steps'", "1e+12 run·steps", "--yes")


def test_more_logged_steps_than_a_table_holds_are_refused(tmp_path, cli):
    """every = 100 over 1e12 steps used to die of a MemoryError traceback."""
    _refused(cli, tmp_path, 'name = "c"\nexperiment = "eos.mean_model"\n'
                            'steps = 1000000000000\nlog = { every = 100 }\n',
             "key 'log.every'", "10,000,000,001 logged steps")


@pytest.mark.parametrize("answer", ["n", "y"])
def test_a_huge_sweep_is_asked_at_a_terminal(answer, tmp_path, cli, monkeypatch):
    import sys

    monkeypatch.setattr(spec, "MAX_RUN_STEPS_UNCONFIRMED", 50)  # 4 runs x 20 steps = 80
    monkeypatch.setattr(sys.stdin, "isatty", lambda: True, raising=False)
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    asked = []
    monkeypatch.setattr("builtins.input", lambda prompt: asked.append(prompt) or answer)
    f = tmp_path / "s.toml"
    f.write_text('name = "h"\nexperiment = "eos.mean_model"\nsteps = 20\nseeds = 2\n'
                 'log = { every = 10 }\n[grid]\nlr = [0.01, 0.02]\n')
    code, out, err = cli("run", f, "--out", tmp_path / "res", "--quiet")
    assert asked == ["run it anyway? [y/N] "] and "80 run·steps" in err
    if answer == "n":
        assert code == 2 and "not started" in err and not (tmp_path / "res").exists()
    else:
        assert code == 0 and "4 run now" in out


def test_a_run_that_cannot_fit_in_memory_is_refused_with_the_figure(tmp_path):
    """A huge width used to abort inside XLA (exit 134)."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    def init(key, hp):
        return {"w": jax.random.normal(key, (16, hp["width"]))}

    def loss(p, batch, hp):
        return jnp.mean((batch[0] @ p["w"]).sum(1) - batch[1][:, 0]) ** 2

    exp = jaxdyn.supervised("big", init=init, loss=loss,
                            data=(np.zeros((32, 16)), np.zeros((32, 1))), batch_size=8,
                            params=(jaxdyn.Param("width", 8, int, static=True),))
    sweep = {"name": "big", "steps": 5, "fixed": {"width": 1_000_000_000}}
    for call in (jaxdyn.check, lambda s, **kw: jaxdyn.run(s, out=tmp_path / "res", **kw)):
        # 3 copies (state, new state, gradients) of 16e9 float32 = 179 GiB
        with pytest.raises(jaxdyn.JaxdynError, match=r"needs about 179 GiB \(state 179 GiB"):
            call(sweep, experiment=exp)
    assert not (tmp_path / "res").exists()
    info = jaxdyn.check({**sweep, "fixed": {"width": 1000}}, experiment=exp)
    assert info["runs"] == 1 and info["run_bytes"] >= 3 * 16 * 1000 * 4  # float32: 3 copies of w


def test_check_command_validates_without_writing(tmp_path, cli):
    code, out, err = cli("check", "sweeps/quickstart.toml")
    assert code == 0 and "1,024 runs" in out, err
    f = tmp_path / "s.toml"
    f.write_text('name = "a"\nexperiment = "eos.mean_model"\nsteps = 10\n[fixed]\nd = 0\n')
    code, out, err = cli("check", f)
    assert code == 2 and "d" in err and out == ""


@pytest.mark.parametrize("opts,needles", [
    ("k = 0", ["probes.sharpness.k", "between 1 and the model's 2 parameters", "got 0"]),
    ("k = 5", ["probes.sharpness.k", "between 1 and the model's 2 parameters", "got 5"]),
    ('method = "qr"', ["probes.sharpness.method", "'auto', 'dense', 'lanczos'", "'qr'"]),
    ("iters = 0", ["probes.sharpness.iters", "got 0"]),
])
def test_probe_options_are_checked_against_the_model(opts, needles, tmp_path, cli):
    """k > parameter count used to give made-up sharpness_3..5 copies (JAX clamps indices)."""
    _refused(cli, tmp_path, 'name = "p"\nexperiment = "eos.single_neuron"\nsteps = 10\n'
                            f'probes = {{ sharpness = {{ {opts}, every = 5 }} }}\n', *needles)


def test_bottleneck_probe_options_are_checked(tmp_path, cli):
    _refused(cli, tmp_path, 'name = "p"\nexperiment = "bottleneck.three_layer"\nsteps = 10\n'
                            'probes = { ntk = { n_eig = 0 } }\n[fixed]\nd = 4\nwidth = 8\n'
                            'n_train = 64\nbatch = 8\n', "probes.ntk.n_eig", "got 0")


def test_a_sample_count_larger_than_the_grid_is_refused(tmp_path, cli):
    _refused(cli, tmp_path, 'name = "s"\nexperiment = "eos.mean_model"\nsteps = 10\n'
                            '[grid]\nlr = [0.01, 0.02]\n[sample]\ncount = 5\n',
             "key 'sample.count'", "5 points asked of a grid of 2")


def test_a_repeated_zip_point_is_run_once(tmp_path, cli):
    f = tmp_path / "z.toml"
    f.write_text('name = "z"\nexperiment = "eos.mean_model"\nsteps = 10\nseeds = 2\n'
                 'log = { every = 5 }\n[zip]\nlr = [0.01, 0.01, 0.02]\nd = [100, 100, 200]\n')
    code, out, err = cli("check", f)
    assert code == 0 and "4 runs" in out and "2 duplicate" in out, out + err
    code, out, err = cli("run", f, "--out", tmp_path / "res", "--quiet")
    assert code == 0 and "4 total" in out, err
    runs = jaxdyn.load("z", root=tmp_path / "res").runs
    assert len(runs) == 4 and runs.run_id.is_unique


def test_plot_from_python_speaks_of_its_arguments(tmp_path, cli):
    from jaxdyn.results import QueryError, plot

    root = _quick(tmp_path, cli)
    with pytest.raises(QueryError, match=r"^y='nope': no such column") as e:
        plot("base", "step", "nope", tmp_path / "p.png", root=root)
    assert "--" not in str(e.value)
    code, out, err = cli("plot", "base", "--x", "step", "--y", "nope", "-o", tmp_path / "p.png",
                         "--out", root)
    assert code == 2 and "--y nope: no such column" in err
