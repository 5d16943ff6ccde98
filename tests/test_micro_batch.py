"""Micro-batches: a device's runs vmapped a few at a time inside a chunk, the size measured
where a chunk's temporaries outgrow the CPU's caches. They must not change a result (bitwise
here, with the suite's 2 CPU devices: shares of 24 runs against micro-batches of 8; with one
device, 48 runs at once rounded the bottleneck's train_loss differently in the last bit),
and the measurement must be done once, then read back."""

import json

import pandas as pd
import pytest

import jaxdyn
from jaxdyn import engine, experiments, spec

from test_engine import QUAD as _registers_test_quadratic  # noqa: F401

BOTTLENECK = """
name = "bn"
experiment = "bottleneck.three_layer"
steps = 240
seeds = 2
log = { every = 80 }
[fixed]
width = 48
n_train = 300
n_val = 64
n_eval = 64
lr = 0.05
[grid]
nu = [0.5, 1.5]
replicate = { start = 0, stop = 11, num = 12 }
"""

# the mean model across its edge of stability
SCAN = """
name = "scan"
experiment = "eos.mean_model"
steps = 600
seeds = [0, 5]
log = { every = 150 }
[fixed]
d = 100
[grid]
lr = { start = 1e-3, stop = 2e-2, num = 40, spacing = "log" }
"""

# GD on h x²/2: runs with lr·h > 2 overflow float32 at different steps, inside micro-batches
# whose other runs do not
QUAD = """
name = "quad"
experiment = "test.quadratic"
steps = 400
log = { every = 50 }
[fixed]
lr = 0.1
[grid]
h = { start = 1.0, stop = 40.0, num = 64 }
"""


def tables(folder):
    res = jaxdyn.load(folder)
    runs = res.runs.set_index("run_id").sort_index()
    curves = res.curves().set_index(["run_id", "step"]).sort_index()
    return runs.drop(columns=[c for c in runs if c.startswith("wall")], errors="ignore"), curves


@pytest.mark.parametrize("text, name", [
    (BOTTLENECK, "bn"), (BOTTLENECK.replace("width = 48", "width = 48\nk = 3"), "bn"),
    (SCAN, "scan"), (QUAD, "quad")], ids=["bn", "bn-k3", "scan", "quad"])
def test_micro_batches_change_no_result(cli, write_sweep, tmp_path, text, name):
    path = write_sweep(text)
    code, _, err = cli("run", path, "--out", tmp_path / "whole", "--micro-batch", 0,
                       "--chunk-size", 48, "--quiet")
    assert code == 0, err
    code, _, err = cli("run", path, "--out", tmp_path / "micro", "--micro-batch", 8,
                       "--chunk-size", 48, "--quiet")
    assert code == 0, err
    (ra, ca), (rb, cb) = tables(tmp_path / "whole" / name), tables(tmp_path / "micro" / name)
    if name == "quad":  # the divergence path inside a micro-batch is exercised
        assert 0 < (ra.status == "diverged").sum() < len(ra)
    metrics = [c for c in ca.columns if ca[c].dtype.kind == "f"]
    assert metrics
    pd.testing.assert_frame_equal(ca[metrics], cb[metrics], check_exact=True)
    finals = [c for c in ra.columns if c.startswith("final_")]
    pd.testing.assert_frame_equal(ra[finals + ["status", "diverged_step"]],
                                  rb[finals + ["status", "diverged_step"]], check_exact=True)


def test_bad_micro_batch_refused(cli, write_sweep, tmp_path):
    code, _, err = cli("run", write_sweep(SCAN), "--out", tmp_path, "--micro-batch", -1)
    assert code == 2
    assert "--micro-batch" in err and "expected an integer >= 0" in err
    assert not (tmp_path / "scan").exists()


@pytest.mark.parametrize("rates, per_device, want", [
    ({8: 1.0, 16: 1.05, 32: 0.5}, 64, 8),          # 8 is within 10 % of the best
    ({8: 1.0, 16: 2.0, 32: 2.1, 64: 1.0}, 64, 16),  # the smallest near the peak
    ({8: 1.0, 16: 2.0, 32: 3.0}, 32, None),          # still rising at the top: all at once
    ({8: 1.0, 16: 2.0, 32: 3.0, 64: 1.0}, 24, 16),  # only sizes the share can hold
    ({8: 1.0, 16: 2.0, 32: 3.0, 64: 1.0}, 16, None),  # 16 of 16: the whole share
    ({64: 3.0, 8: 1.0}, 64, None),                    # the whole share measured best
    ({128: 0.3, 8: 1.0, 16: 0.95}, 128, 8),           # the whole share spills
])
def test_pick_micro_takes_the_smallest_size_at_saturation(rates, per_device, want):
    assert engine.pick_micro(rates, per_device) == want


def _runner(text, **kw):
    sw = spec.parse(text, experiments.params_of)
    exp = experiments.get(sw.experiment)
    group = engine.plan_groups(sw, exp, sw.runs())[0]
    return engine.ChunkRunner(exp, sw, group, **kw), group


def test_micro_batch_measured_once_then_read_back(monkeypatch, tmp_path):
    table = tmp_path / "tuning.json"
    monkeypatch.setattr(engine.tuning, "_tuning_file", lambda: table)
    monkeypatch.setattr(engine.tuning, "MICRO_TUNE_ABOVE_BYTES", 0)  # measure even this small net
    monkeypatch.setattr(engine.tuning, "MICRO_TUNE_MIN_VALUE", 0)
    monkeypatch.setattr(engine.tuning, "MICRO_TUNE_BUDGET", float("inf"))  # the whole ladder
    text = BOTTLENECK.replace("replicate = { start = 0, stop = 11, num = 12 }",
                              "replicate = { start = 0, stop = 63, num = 64 }")
    runner, group = _runner(text)
    per_seed = 64
    runner.choose_chunk(per_seed, None)
    assert runner.tune_s > 0
    rates = runner.micro_rates
    share = -(-per_seed // runner.n_devices)
    assert all(r > 0 for r in rates.values())
    assert share in rates and 8 in rates  # the whole share and the smallest batch
    ladder = sorted(k for k in rates if k != share)
    assert ladder == [8 << i for i in range(len(ladder))]  # then from the bottom up
    assert runner.micro == engine.pick_micro(rates, share)
    if runner.micro is not None:
        assert runner.batch % (runner.micro * runner.n_devices) == 0
    saved = json.loads(table.read_text())
    (entry,) = saved.values()
    assert {int(k): v for k, v in entry["rates"].items()} == rates

    again, _ = _runner(text)
    again.choose_chunk(per_seed, None)
    assert again.tune_s == 0  # read back, not measured
    assert again.micro == runner.micro and again.micro_rates == rates


def test_short_sweeps_stop_measuring_at_the_budget(monkeypatch, tmp_path):
    """After the whole share and 8 runs, measuring stops once it costs more than
    MICRO_TUNE_BUDGET of the group's run time; the short measurement is read back by the
    next sweep of the same length (not by a longer one)."""
    table = tmp_path / "tuning.json"
    monkeypatch.setattr(engine.tuning, "_tuning_file", lambda: table)
    monkeypatch.setattr(engine.tuning, "MICRO_TUNE_ABOVE_BYTES", 0)
    monkeypatch.setattr(engine.tuning, "MICRO_TUNE_MIN_VALUE", 0)
    monkeypatch.setattr(engine.tuning, "MICRO_TUNE_BUDGET", 0.0)
    text = BOTTLENECK.replace("replicate = { start = 0, stop = 11, num = 12 }",
                              "replicate = { start = 0, stop = 63, num = 64 }")
    runner, _ = _runner(text)
    runner.choose_chunk(64, None)
    share = -(-64 // runner.n_devices)
    assert list(runner.micro_rates) == [share, 8] and runner.tune_s > 0  # the two that matter
    assert runner.micro == engine.pick_micro(runner.micro_rates, share)
    (entry,) = json.loads(table.read_text()).values()
    assert entry["ended"] == "budget"
    again, _ = _runner(text)
    again.choose_chunk(64, None)
    assert again.tune_s == 0 and again.micro == runner.micro
    longer, _ = _runner(text.replace("steps = 240", "steps = 2400"))
    longer.choose_chunk(64, None)
    assert longer.tune_s > 0  # a longer sweep measures again


def test_only_runs_with_large_values_are_measured(monkeypatch, tmp_path):
    """The gate is the largest value one step makes, from its jaxpr: the bottleneck
    network's (batch, width) activations, the mean model's scalars."""
    table = tmp_path / "tuning.json"
    monkeypatch.setattr(engine.tuning, "_tuning_file", lambda: table)
    thesis = BOTTLENECK.replace("width = 48", "width = 1000").replace("n_train = 300",
                                                                       "n_train = 10000")
    runner, _ = _runner(thesis)
    assert engine.largest_step_value(runner.exp, runner.static, runner.per_seed) \
        == 32 * 1000 * 4  # one float32 (batch, width) activation
    runner, group = _runner(SCAN)
    assert engine.largest_step_value(runner.exp, runner.static, runner.per_seed) \
        < engine.tuning.MICRO_TUNE_MIN_VALUE
    runner.choose_chunk(len(group.runs), None)
    assert runner.micro is None and runner.micro_rates == {} and runner.tune_s == 0
    assert not table.exists()  # nothing was measured


def test_second_invocation_compiles_nothing(write_sweep, tmp_path):
    """The persistent compilation cache and the stored micro-batch measurement: a second
    `jaxdyn run` of the same sweep (into a new folder) adds no cache entry and measures
    nothing. (XLA only caches programs that took >= 0.5 s to compile, as the bottleneck
    network's chunk program does.)"""
    from conftest import run_subprocess

    cache = tmp_path / "cache"
    env = {"JAXDYN_CACHE_DIR": str(cache), "JAXDYN_CPU_DEVICES": "2"}
    # width 128: one (batch, width) activation is 16 KiB, so the micro-batch question is asked
    path = write_sweep(BOTTLENECK.replace("width = 48", "width = 128"))
    first = run_subprocess(["run", path, "--out", tmp_path / "a"], env)
    assert first.returncode == 0, first.stderr
    assert "measured in" in first.stdout
    assert (cache / "jaxdyn-micro-batch.json").is_file()
    entries = {p.name for p in cache.iterdir()}
    assert len(entries) >= 1
    second = run_subprocess(["run", path, "--out", tmp_path / "b"], env)
    assert second.returncode == 0, second.stderr
    assert {p.name for p in cache.iterdir()} == entries  # no new compiled program
    assert "measured in" not in second.stdout
    a, b = tables(tmp_path / "a" / "bn"), tables(tmp_path / "b" / "bn")
    pd.testing.assert_frame_equal(a[1], b[1], check_exact=True)
