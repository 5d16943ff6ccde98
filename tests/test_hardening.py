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
