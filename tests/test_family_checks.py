"""The built-in families' ``check(static, hp)`` hooks: every refused value is one line naming
the hyperparameter, exit status 2 and nothing written; values a researcher may use (a huge
lr, lr = 0 where it is a control, ...) pass; and every shipped sweep passes its checks.

Nothing here compiles or runs a sweep: a refused sweep stops before compiling, and the
allowed values and shipped sweeps are checked with ``prepare`` + ``check_values`` alone.
"""

import json
import time
from pathlib import Path

import pytest

from jaxdyn.contract import check_values
from jaxdyn.launch import prepare

ROOT = Path(__file__).resolve().parents[1]

#: a small valid sweep of each family (the base of every case below)
BASE = {
    "eos.mean_model": {},
    "eos.single_neuron": {},
    "eos.threshold_relu": {"d": 20, "n_train": 50, "n_test": 50},
    "dc.neuron": {},
    "relu.teacher_student": {"n": 2, "d": 5},
    "bottleneck.three_layer": {"d": 10, "width": 8, "n_train": 100, "n_val": 16,
                               "n_eval": 16, "batch": 8},
    "bottleneck.one_d": {"width": 8, "n_train": 100, "n_val": 16, "n_eval": 16, "batch": 8},
    "toy.ring": {},
}


def toml(experiment: str, fixed: dict, steps: int = 10) -> str:
    lines = ['name = "checks"', f'experiment = "{experiment}"', f"steps = {steps}",
             "seeds = 1", "[fixed]"]
    lines += [f"{k} = {json.dumps(v) if isinstance(v, str) else repr(v)}"
              for k, v in fixed.items()]
    return "\n".join(lines) + "\n"


#: (experiment, values over the base, needles in the message); steps = 10 unless "steps"
REFUSED = [
    # eos.mean_model
    ("eos.mean_model", {"lr": -0.1}, ["lr must be > 0", "got -0.1"]),
    ("eos.mean_model", {"lr": 0.0}, ["lr must be > 0", "got 0.0"]),
    ("eos.mean_model", {"d": 0}, ["d must be >= 1", "got 0"]),
    # eos.single_neuron
    ("eos.single_neuron", {"lr": 0.0}, ["lr must be > 0"]),
    ("eos.single_neuron", {"lr": -1.0}, ["lr must be > 0", "got -1.0"]),
    # eos.threshold_relu
    ("eos.threshold_relu", {"lr": -2.5e-3}, ["lr must be > 0"]),
    ("eos.threshold_relu", {"d": 0}, ["d must be >= 1", "got 0"]),
    ("eos.threshold_relu", {"n_train": 0}, ["n_train must be >= 1", "got 0"]),
    ("eos.threshold_relu", {"n_test": -1}, ["n_test must be >= 0", "got -1"]),
    ("eos.threshold_relu", {"batch": -1}, ["batch must be >= 0", "got -1"]),
    ("eos.threshold_relu", {"d": 10**12}, ["2**36 elements", "d = 1000000000000"]),
    ("eos.threshold_relu", {"batch": 10**12}, ["2**36 elements", "batch = 1000000000000"]),
    # dc.neuron
    ("dc.neuron", {"m": 0}, ["m must be >= 2", "got 0"]),
    ("dc.neuron", {"m": 1}, ["m must be >= 2", "got 1"]),
    ("dc.neuron", {"m": 2**31}, ["m must be <= 2**31 - 1", "got 2147483648"]),
    ("dc.neuron", {"batch": 0}, ["batch must be >= 1", "got 0"]),
    ("dc.neuron", {"batch": 10**11}, ["2**36 elements", "batch = 100000000000"]),
    ("dc.neuron", {"epochs": -1}, ["epochs must be >= 0", "got -1"]),
    ("dc.neuron", {"epochs": 1}, ["epochs = 1 needs steps = epochs × 11", "got steps = 10"]),
    ("dc.neuron", {"label_noise": 2.0}, ["label_noise must be <= 1.0", "got 2.0"]),
    ("dc.neuron", {"label_noise": -0.1}, ["label_noise must be >= 0.0", "got -0.1"]),
    ("dc.neuron", {"p_d": 1.5}, ["p_d must be in (0, 1)", "got 1.5"]),
    ("dc.neuron", {"p_d": 0.0}, ["p_d must be in (0, 1)", "got 0.0"]),
    ("dc.neuron", {"loss": "prob", "p_d": 1.0}, ["p_d must be in (0, 1)", "got 1.0"]),
    ("dc.neuron", {"r": 0.0}, ["r must be > 0", "got 0.0"]),
    ("dc.neuron", {"r": -1.0}, ["r must be > 0", "got -1.0"]),
    ("dc.neuron", {"c": -1.0}, ["c must be > r·ln(p_d) = -0.693147", "got c = -1.0"]),
    ("dc.neuron", {"lr": 0.0}, ["lr must be > 0"]),
    ("dc.neuron", {"lr": -0.01}, ["lr must be > 0", "got -0.01"]),
    # relu.teacher_student
    ("relu.teacher_student", {"n": 0}, ["n must be >= 1", "got 0"]),
    ("relu.teacher_student", {"d": 0}, ["d must be >= 1", "got 0"]),
    ("relu.teacher_student", {"mode": "empirical", "n_train": 0},
     ["n_train must be >= 1", "got 0"]),
    ("relu.teacher_student", {"lr": 0.0}, ["lr must be > 0"]),
    ("relu.teacher_student", {"lr": -0.1}, ["lr must be > 0", "got -0.1"]),
    ("relu.teacher_student", {"n": 10**6}, ["n × n must have at most 2**36", "n = 1000000"]),
    ("relu.teacher_student", {"d": 10**12}, ["n × d must have at most 2**36",
                                             "d = 1000000000000"]),
    ("relu.teacher_student", {"mode": "empirical", "n_train": 10**11},
     ["n_train × d must have at most 2**36", "n_train = 100000000000"]),
    # bottleneck.three_layer
    ("bottleneck.three_layer", {"d": 0}, ["d must be >= 1", "got 0"]),
    ("bottleneck.three_layer", {"k": 0}, ["k must be >= 1", "got 0"]),
    ("bottleneck.three_layer", {"d": 3, "k": 4},
     ["k (4) must be <= d (3): the bottleneck cannot be wider than the input"]),
    ("bottleneck.three_layer", {"control": "fix_g", "k": 2},
     ["k must be 1 with control = 'fix_g'", "got k = 2"]),
    ("bottleneck.three_layer", {"init": "cos", "d": 1}, ["d must be >= 2 with init = 'cos'",
                                                         "got d = 1"]),
    ("bottleneck.three_layer", {"init": "cos", "cos0": 1.5}, ["cos0 must be in [-1, 1]",
                                                              "got 1.5"]),
    ("bottleneck.three_layer", {"control": "pretrain_g", "pretrain_steps": -1},
     ["pretrain_steps must be >= 0", "got -1"]),
    ("bottleneck.three_layer", {"width": 0}, ["width must be >= 1", "got 0"]),
    ("bottleneck.three_layer", {"width": 10**12}, ["2**36 elements",
                                                   "width = 1000000000000"]),
    ("bottleneck.three_layer", {"d": 10**12}, ["2**36 elements", "d = 1000000000000"]),
    ("bottleneck.three_layer", {"batch": 0, "n_train": 0}, ["n_train must be >= 1", "got 0"]),
    ("bottleneck.three_layer", {"n_val": 0}, ["n_val must be >= 1", "got 0"]),
    ("bottleneck.three_layer", {"n_eval": 0}, ["n_eval must be >= 1", "got 0"]),
    ("bottleneck.three_layer", {"batch": 0}, ["batch must be >= 1", "got 0"]),
    ("bottleneck.three_layer", {"n_train": 50, "batch": 64},
     ["batch (64) must be <= n_train (50)"]),
    ("bottleneck.three_layer", {"lr": -5e-4}, ["lr must be >= 0.0", "got -0.0005"]),
    ("bottleneck.three_layer", {"replicate": -1}, ["replicate must be >= 0", "got -1"]),
    ("bottleneck.three_layer", {"replicate": 2**24},
     ["replicate must be <= 16777215", "got 16777216"]),
    # bottleneck.one_d
    ("bottleneck.one_d", {"batch": 0, "n_train": 0}, ["n_train must be >= 1", "got 0"]),
    ("bottleneck.one_d", {"n_train": 50, "batch": 64}, ["batch (64) must be <= n_train (50)"]),
    ("bottleneck.one_d", {"n_val": 0}, ["n_val must be >= 1", "got 0"]),
    ("bottleneck.one_d", {"width": 10**12}, ["2**36 elements", "width = 1000000000000"]),
    ("bottleneck.one_d", {"lr": -1.0}, ["lr must be >= 0.0", "got -1.0"]),
    # toy.ring
    ("toy.ring", {"lr": 0.0}, ["lr must be > 0"]),
    ("toy.ring", {"lr": -0.01}, ["lr must be > 0", "got -0.01"]),
]


def _id(case):
    exp, values, _ = case
    return exp + ":" + ",".join(f"{k}={v}" for k, v in values.items())


@pytest.mark.parametrize("case", REFUSED, ids=[_id(c) for c in REFUSED])
def test_a_refused_value_is_one_line_exit_2_nothing_written(case, cli, write_sweep, tmp_path):
    exp, values, needles = case
    # the base of the case is itself valid (so the case tests the value it changes)
    base = write_sweep(toml(exp, BASE[exp]), "base.toml")
    sweep, e, _ = prepare(base)
    check_values(e, sweep)
    path = write_sweep(toml(exp, {**BASE[exp], **values}))
    code, out, err = cli("run", path, "--out", tmp_path / "o", "--quiet")
    assert code == 2, err
    assert err.startswith(f"jaxdyn: error: {path}: ") and err.count("\n") == 1, err
    assert "Traceback" not in err and "(at " in err, err
    for n in needles:
        assert n in err, (n, err)
    name = list(values)[-1]   # the value a case breaks comes last
    assert name in err.split("(at ")[0], (name, err)   # the message itself names it
    assert not (tmp_path / "o").exists()


def test_a_refused_grid_point_is_named(cli, write_sweep, tmp_path):
    """One bad value among a grid's: the whole sweep is refused, at that point."""
    path = write_sweep(toml("dc.neuron", {}) + "[grid]\np_d = [0.1, 0.5, 1.5]\n")
    code, _, err = cli("run", path, "--out", tmp_path / "o", "--quiet")
    assert code == 2 and "p_d must be in (0, 1)" in err and "got 1.5 (at p_d=1.5)" in err, err
    assert not (tmp_path / "o").exists()


#: values that look odd but are legitimate (or harmless): they must pass the checks
ALLOWED = [
    ("eos.mean_model", {"lr": 1e3}),                 # divergence is studied
    ("eos.mean_model", {"init_scale": 0.0, "b0": -3.0}),
    ("eos.single_neuron", {"lr": 50.0, "perturb": 0.0}),
    ("eos.threshold_relu", {"batch": 200}),          # with replacement: any size
    ("eos.threshold_relu", {"n_test": 0}),           # no test set: test_acc NaN
    ("eos.threshold_relu", {"lam": 0.0}),            # a pure-noise control
    ("dc.neuron", {"lr": 100.0}),
    ("dc.neuron", {"batch": 2000}),                  # > 800 training points: full batch
    ("dc.neuron", {"m": 2}),
    ("dc.neuron", {"label_noise": 1.0}),
    ("dc.neuron", {"epochs": 0}),
    ("dc.neuron", {"c": -0.5}),                      # b = ln 0.5 + 0.5 < 0 still
    ("dc.neuron", {"loss": "logistic", "p_d": 1.5, "r": 0.0}),   # ignored by logistic
    ("dc.neuron", {"sep": 0.0, "init_scale": 0.0, "d": -3.0}),
    ("relu.teacher_student", {"lr": 10.0, "init_scale": 0.0}),
    ("relu.teacher_student", {"mode": "population", "n_train": 0}),  # ignored there
    ("bottleneck.three_layer", {"lr": 0.0}),         # the initialisation's baseline
    ("bottleneck.three_layer", {"lr": 10.0, "nu": 0.0}),
    ("bottleneck.three_layer", {"n_train": 8, "batch": 8}),
    ("bottleneck.three_layer", {"d": 4, "k": 4}),
    ("bottleneck.three_layer", {"init": "cos", "cos0": -1.0}),
    ("bottleneck.three_layer", {"cos0": 7.0}),       # ignored by init = "lecun"
    ("bottleneck.three_layer", {"control": "pretrain_g", "pretrain_steps": 10**6}),
    ("bottleneck.three_layer", {"pretrain_steps": -1}),   # ignored without pretrain_g
    ("bottleneck.three_layer", {"replicate": 2**24 - 1}),
    ("bottleneck.one_d", {"lr": 0.0}),
    ("toy.ring", {"lr": 5.0, "noise": 0.0}),
]


@pytest.mark.parametrize("case", ALLOWED, ids=[_id((*c, None)) for c in ALLOWED])
def test_legitimate_values_pass(case, write_sweep):
    exp, values = case
    sweep, e, _ = prepare(write_sweep(toml(exp, {**BASE[exp], **values})))
    assert e.check is not None
    check_values(e, sweep)


def test_every_builtin_family_has_a_check():
    from jaxdyn.experiments import resolve

    for name in BASE:
        assert resolve(name, None)[0].check is not None, name


@pytest.mark.parametrize("path", sorted((ROOT / "sweeps").glob("*.toml")), ids=lambda p: p.name)
def test_shipped_sweeps_pass_their_checks(path):
    sweep, exp, _ = prepare(path, max_runs=None)
    assert exp.check is not None
    t = time.perf_counter()
    check_values(exp, sweep)
    # dc_paper (35,937 grid points, 359,370 runs) took 0.4 s on a shared 2-core machine
    assert time.perf_counter() - t < 30, path.name
