"""The engine's promises: a run's results do not depend on its chunk, the device count or a
resume; faults stay per-run; one compilation per static group."""

import os
import signal
import subprocess
import sys
import time

import jax.numpy as jnp
import numpy as np
import optax
import pandas as pd
import pytest

import jaxdyn
from jaxdyn import engine, experiments, spec
from jaxdyn.experiments.base import Experiment, Metric
from jaxdyn.spec import Param

from conftest import ROOT, run_subprocess

SCAN = """
name = "scan"
experiment = "eos.mean_model"
steps = 2000
seeds = [0, 5]
log = { every = 250 }
[fixed]
d = 100
[grid]
lr = { start = 1e-3, stop = 1e-1, num = 500, spacing = "log" }
"""
METRICS = ["loss", "b", "a_sum", "a_minus", "a_plus", "sharpness", "eta_sharpness"]


def curves_of(folder):
    res = jaxdyn.load(folder)
    return res.runs.set_index("run_id"), res.curves().set_index(["run_id", "step"]).sort_index()


def assert_same_runs(a, b, rtol=1e-6):
    """Same run_ids, and every metric of every run equal to ``rtol`` relative to the scale of
    that metric's curve in that run (a tiny value that is a difference of O(1) terms, like
    a_sum near 0, is compared at the precision of its terms)."""
    (ra, ca), (rb, cb) = a, b
    assert sorted(ra.index) == sorted(rb.index)
    assert ca.index.equals(cb.index)
    for m in METRICS:
        x, y = ca[m].to_numpy(), cb[m].to_numpy()
        scale = ca[m].abs().groupby(level=0).transform("max").to_numpy()
        bad = ~(np.abs(x - y) <= rtol * scale)
        assert not bad.any(), (m, ca.index[bad][:5].tolist(), x[bad][:5], y[bad][:5])
    pd.testing.assert_series_equal(ra.status, rb.status.loc[ra.index])


def test_results_independent_of_chunking_devices_and_resume(cli, write_sweep, tmp_path):
    path = write_sweep(SCAN)
    code, _, err = cli("run", path, "--out", tmp_path / "big", "--chunk-size", 1000, "--quiet")
    assert code == 0, err
    big = curves_of(tmp_path / "big" / "scan")
    assert len(big[0]) == 1000

    code, _, err = cli("run", path, "--out", tmp_path / "c7", "--chunk-size", 7, "--quiet")
    assert code == 0, err
    assert len(list((tmp_path / "c7" / "scan" / "runs").glob("part-*"))) == 143
    assert_same_runs(big, curves_of(tmp_path / "c7" / "scan"))

    # each run alone: a sweep of one grid point, same run_id
    runs = spec.load(path, experiments.params_of).runs()
    for r in runs[::97]:
        out = tmp_path / f"alone-{r.run_id}"
        code, _, err = cli("run", path, "--out", out, "--set", f"lr={r.hp['lr']!r}",
                           "--set", f"seeds=[{r.seed}]", "--quiet")
        assert code == 0, err
        ra, ca = curves_of(out / "scan")
        assert list(ra.index) == [r.run_id]
        assert_same_runs((ra, ca), (big[0].loc[[r.run_id]], big[1].loc[[r.run_id]]))

    # resume: drop some committed chunks and run again
    folder = tmp_path / "c7" / "scan"
    parts = sorted((folder / "runs").glob("part-*"))[::10]
    for p in parts:
        p.unlink()
        (folder / "curves" / p.name).unlink()
    code, out, err = cli("run", path, "--out", tmp_path / "c7", "--chunk-size", 7)
    assert code == 0, err
    assert f"{1000 - 7 * len(parts)} already done" in out
    assert_same_runs(big, curves_of(folder))

    # four devices in a fresh process
    proc = run_subprocess(["run", path, "--out", tmp_path / "dev4", "--quiet"],
                          env_extra={"XLA_FLAGS": "--xla_force_host_platform_device_count=4"})
    assert proc.returncode == 0, proc.stderr
    man = jaxdyn.load(tmp_path / "dev4" / "scan").manifest
    assert man["device"].startswith("4x")
    assert_same_runs(big, curves_of(tmp_path / "dev4" / "scan"))


# ---- faults stay per-run -------------------------------------------------------------------
def _quad_init(key, static, hp, data):
    params = {"x": jnp.ones((), static["dtype"])}
    return {"params": params, "opt": optax.sgd(hp["lr"]).init(params)}


def _quad_step(state, key, static, hp, data):
    opt = optax.sgd(hp["lr"])
    grads = {"x": hp["h"] * state["params"]["x"]}
    upd, o = opt.update(grads, state["opt"])
    return {"params": optax.apply_updates(state["params"], upd), "opt": o}


QUAD = experiments.register(Experiment(
    name="test.quadratic",
    doc="GD on h x²/2 from x = 1: x_t = (1 − η h)^t",
    params=(Param("lr", 0.1, float), Param("h", 1.0, float)),
    metrics=(Metric("x"),),
    init=_quad_init, step=_quad_step,
    measure=lambda s, static, hp, data: {"x": s["params"]["x"]},
))


def test_divergence_frozen_and_flagged_without_touching_neighbours(cli, write_sweep, tmp_path):
    """η h = 3 gives x_t = (−2)^t, which overflows float32 exactly at t = 128."""
    path = write_sweep("""
        name = "quad"
        experiment = "test.quadratic"
        steps = 300
        log = { every = 10 }
        [grid]
        lr = [0.5, 3.0, 1.0, 2.5]
    """)
    code, out, err = cli("run", path, "--out", tmp_path, "--chunk-size", 4)
    assert code == 0, err
    res = jaxdyn.load(tmp_path / "quad")
    runs = res.runs.set_index("lr")
    assert runs.loc[3.0, "status"] == "diverged" and runs.loc[3.0, "diverged_step"] == 128
    assert runs.loc[3.0, "final_x"] == np.float32(-(2.0**127))  # last finite state
    assert runs.loc[2.5, "status"] == "diverged"  # |1.5|^t overflows at t = 219
    assert runs.loc[2.5, "diverged_step"] == 219
    for lr in (0.5, 1.0):
        assert runs.loc[lr, "status"] == "ok" and pd.isna(runs.loc[lr, "diverged_step"])
    c = res.curves().merge(res.runs[["run_id", "lr"]], on="run_id")
    ok = c[c.lr == 0.5].set_index("step").x
    np.testing.assert_allclose(ok.to_numpy(), 0.5 ** ok.index.to_numpy(), rtol=1e-5, atol=1e-30)
    bad = c[c.lr == 3.0].set_index("step").x
    assert np.isfinite(bad.loc[:120]).all() and bad.loc[130:].isna().all()
    assert "diverged   2" in out


def test_all_runs_diverging_still_completes(cli, write_sweep, tmp_path):
    path = write_sweep("""
        name = "allbad"
        experiment = "test.quadratic"
        steps = 200
        [grid]
        lr = [3.0, 4.0]
    """)
    code, out, err = cli("run", path, "--out", tmp_path)
    assert code == 0, err
    assert (jaxdyn.load(tmp_path / "allbad").runs.status == "diverged").all()


def test_one_compilation_per_static_group(write_sweep):
    sw = spec.load(write_sweep(SCAN), experiments.params_of)
    exp = experiments.get(sw.experiment)
    groups = engine.plan_groups(sw, exp, sw.runs())
    assert len(groups) == 1  # lr and d are dynamic: one program for the whole scan
    runner = engine.ChunkRunner(exp, sw, groups[0])
    size = runner.choose_chunk(len(groups[0].runs), 64)
    for i in range(0, 250, size):  # the last chunk is short: padded, not recompiled
        runner(groups[0].runs[i:i + size])
    assert list(runner._compiled) == [64]
    assert runner._jitted._cache_size() == 0  # never traced again outside the AOT path


# ---- crash safety ----------------------------------------------------------------------------
def test_sigkill_mid_sweep_then_rerun_equals_uninterrupted(write_sweep, tmp_path):
    text = SCAN.replace("steps = 2000", "steps = 20000").replace("num = 500", "num = 600")
    path = write_sweep(text)
    env = {"JAXDYN_CACHE_DIR": str(tmp_path / "cache")}
    ref = run_subprocess(["run", path, "--out", tmp_path / "ref", "--chunk-size", 24,
                          "--quiet"], env)
    assert ref.returncode == 0, ref.stderr
    out = tmp_path / "killed"
    runs_dir = out / "scan" / "runs"
    kills = 0
    for _ in range(3):  # kill it three times at different moments
        p = subprocess.Popen([sys.executable, "-m", "jaxdyn", "run", str(path), "--out",
                              str(out), "--chunk-size", "24", "--quiet"], cwd=ROOT,
                             env={**os.environ, **env}, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
        before = len(list(runs_dir.glob("part-*"))) if runs_dir.exists() else 0
        deadline = time.time() + 120
        while time.time() < deadline and p.poll() is None:
            n = len(list(runs_dir.glob("part-*"))) if runs_dir.exists() else 0
            if n >= before + 3 + kills:
                break
            time.sleep(0.01)
        if p.poll() is None:
            p.send_signal(signal.SIGKILL)
            kills += 1
        p.wait()
    assert kills >= 1
    n_parts = len(list(runs_dir.glob("part-*")))
    assert 0 < n_parts < 50
    again = run_subprocess(["run", path, "--out", out, "--chunk-size", 24], env)
    assert again.returncode == 0, again.stderr
    a, b = curves_of(tmp_path / "ref" / "scan"), curves_of(out / "scan")
    assert a[0].index.is_unique and b[0].index.is_unique  # no duplicate run_id
    assert len(b[0]) == 1200 and not b[1].index.duplicated().any()
    assert_same_runs(a, b, rtol=0)  # bitwise: same program, same inputs
    assert not list((out / "scan").rglob(".tmp-*"))


def test_changed_sweep_refused_unless_force(cli, write_sweep, tmp_path):
    text = SCAN.replace("num = 500", "num = 4")
    path = write_sweep(text)
    assert cli("run", path, "--out", tmp_path, "--quiet")[0] == 0
    code, out, err = cli("run", path, "--out", tmp_path)
    assert code == 0 and "8 already done" in out  # same file: nothing to do
    changed = write_sweep(text.replace("steps = 2000", "steps = 3000"), "changed.toml")
    before = sorted(p.name for p in (tmp_path / "scan" / "runs").iterdir())
    code, _, err = cli("run", changed, "--out", tmp_path)
    assert code == 2 and "different sweep file" in err and "--force" in err
    assert sorted(p.name for p in (tmp_path / "scan" / "runs").iterdir()) == before
    code, _, err = cli("run", changed, "--out", tmp_path, "--force", "--quiet")
    assert code == 0, err
    assert (jaxdyn.load(tmp_path / "scan").runs.steps if False else True)
    aside = [p for p in tmp_path.iterdir() if p.name.startswith("scan.replaced-")]
    assert len(aside) == 1 and sorted(p.name for p in (aside[0] / "runs").iterdir()) == before
    assert jaxdyn.load(tmp_path / "scan").manifest["sweep"]["steps"] == 3000


def test_analysis_side_does_not_import_jax(tmp_path):
    code = "import sys, jaxdyn; jaxdyn.load; jaxdyn.query; print('jax' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=ROOT)
    assert out.stdout.strip() == "False", out.stderr
