"""The engine's promises: a run's results do not depend on its chunk, the device count or a
resume; faults stay per-run; one compilation per static group."""

import os
import signal
import subprocess
import sys
import textwrap
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

    # one CPU device per core, as `jaxdyn run` chooses by itself (here 3, whatever the cores)
    proc = run_subprocess(["run", path, "--out", tmp_path / "cores", "--quiet"],
                          env_extra={"JAXDYN_CPU_DEVICES": "3"})
    assert proc.returncode == 0, proc.stderr
    assert jaxdyn.load(tmp_path / "cores" / "scan").manifest["device"].startswith("3x")
    assert_same_runs(big, curves_of(tmp_path / "cores" / "scan"))


def test_lapack_programs_found_and_kept_on_one_cpu_device(write_sweep, tmp_path):
    """Programs that call LAPACK (the bottleneck's NTK probe: eigvalsh of a kernel built by
    dots, inside the probe's conditional) deadlocked XLA's CPU client on several devices.
    They are found by tracing and run on one device, even when the user forces several."""
    from jaxdyn import engine

    def load(text):
        sw = spec.parse(textwrap.dedent(text), experiments.params_of)
        exp = experiments.get(sw.experiment)
        return sw, exp, engine.resolve_probes(sw, exp)

    mm = load("""
        name = "a"
        experiment = "eos.mean_model"
        steps = 20
        probes = { sharpness = { every = 10, method = "dense" } }
        [grid]
        lr = [0.001, 0.002]
    """)
    assert engine.uses_lapack(*mm)  # dense sharpness: eigvalsh
    assert not engine.uses_lapack(mm[0], mm[1], [])
    path = write_sweep("""
        name = "ntk"
        experiment = "bottleneck.three_layer"
        steps = 300
        seeds = 1
        log = { every = 100 }
        probes = { ntk = { every = 100, n_change = 64, n_eig = 32 } }
        [fixed]
        width = 64
        n_train = 500
        n_val = 128
        n_eval = 128
        lr = 0.02
        [grid]
        nu = [0.5, 1.0]
        replicate = [0, 1, 2, 3]
    """)
    sw, exp, probes = load(path.read_text())
    assert engine.uses_lapack(sw, exp, probes)
    # (without the one-device rule this very sweep hangs: the timeout fails the test)
    proc = run_subprocess(["run", path, "--out", tmp_path / "o", "--quiet"], timeout=120,
                          env_extra={"XLA_FLAGS": "--xla_force_host_platform_device_count=2"})
    assert proc.returncode == 0, proc.stderr
    r = jaxdyn.load(tmp_path / "o" / "ntk").runs
    assert len(r) == 8 and np.isfinite(r.final_train_loss).all()


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
    # the summary says so: both runs were run now, and both diverged
    lines = out.splitlines()
    assert "runs       2 total, 2 run now, 0 already done" in lines, out
    assert "diverged   2 of the runs run now" in lines, out


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
    aside = [p for p in tmp_path.iterdir() if p.name.startswith("scan.replaced-")]
    assert len(aside) == 1 and sorted(p.name for p in (aside[0] / "runs").iterdir()) == before
    # the folder now holds the changed sweep's runs only (steps is part of run_id): all 8 of
    # them, none of the old ones, which are aside
    new_ids = set(jaxdyn.load(tmp_path / "scan").runs.run_id)
    old_ids = set(jaxdyn.load(aside[0]).runs.run_id)
    assert new_ids == {r.run_id for r in spec.load(changed, experiments.params_of).runs()}
    assert len(new_ids) == len(old_ids) == 8 and not new_ids & old_ids
    assert jaxdyn.load(tmp_path / "scan").manifest["sweep"]["steps"] == 3000


def test_analysis_side_does_not_import_jax(tmp_path):
    code = "import sys, jaxdyn; jaxdyn.load; jaxdyn.query; print('jax' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=ROOT)
    assert out.stdout.strip() == "False", out.stderr


def test_permuted_and_extended_grid_gives_bitwise_identical_common_runs(cli, write_sweep,
                                                                         tmp_path):
    """A run's results do not depend on the rest of the grid: reorder the grid and the
    seeds, add grid values, seeds and a new axis value, and every common run_id has exactly
    the same curves and final values (it sits at another place in another chunk)."""
    lrs = np.geomspace(1e-3, 5e-2, 10).tolist()  # η* = 8π/d² ≈ 2.5e-3 for d = 100: most at EoS
    base = f"""
        name = "perm"
        experiment = "eos.mean_model"
        steps = 600
        seeds = [0, 5]
        log = {{ every = 50 }}
        [grid]
        d = [100]
        lr = {lrs!r}
    """
    more = np.geomspace(2e-3, 3e-2, 6).tolist()
    ext = (base.replace("seeds = [0, 5]", "seeds = [9, 5, 0]")
           .replace("d = [100]", "d = [50, 100]")
           .replace(f"lr = {lrs!r}", f"lr = {lrs[::-1][:5] + more + lrs[::-1][5:]!r}"))
    chunks = []
    for text, name, out in ((base, "a.toml", "a"), (ext, "b.toml", "b")):
        path = write_sweep(text, name)
        code, _, err = cli("run", path, "--out", tmp_path / out, "--chunk-size", 8, "--quiet")
        assert code == 0, err
        sw = spec.load(path, experiments.params_of)
        (g,) = engine.plan_groups(sw, experiments.get(sw.experiment), sw.runs())
        chunks.append([[r.run_id for r in c] for c in engine.chunks_of(g, 8, False)])
    # the common runs sit elsewhere: no chunk of the first sweep recurs in the second, and
    # no common run keeps its place in its chunk
    assert not {tuple(c) for c in chunks[0]} & {tuple(c) for c in chunks[1]}
    where = [{rid: (i, j) for i, c in enumerate(cs) for j, rid in enumerate(c)} for cs in chunks]
    assert all(where[0][rid] != where[1][rid] for rid in where[0])
    (ra, ca), (rb, cb) = curves_of(tmp_path / "a" / "perm"), curves_of(tmp_path / "b" / "perm")
    assert len(ra) == 20 and len(rb) == 3 * 2 * 16 and set(ra.index) <= set(rb.index)
    ids = sorted(ra.index)
    assert (ra.status == "ok").all()
    cb = cb.loc[ids]
    assert ca.index.equals(cb.index)
    for m in METRICS:
        np.testing.assert_array_equal(ca[m].to_numpy(), cb[m].to_numpy(), err_msg=m)
    for col in [c for c in ra.columns if c.startswith("final_")] + ["seed", "lr", "d"]:
        np.testing.assert_array_equal(ra.loc[ids, col].to_numpy(), rb.loc[ids, col].to_numpy(),
                                      err_msg=col)


# ---- the CLI's output ------------------------------------------------------------------------
def test_list_prints_every_experiment_with_hyperparameters_and_metrics(cli):
    import re

    code, out, _ = cli("list")
    assert code == 0
    lines = out.splitlines()
    names = experiments.names()
    assert {"eos.mean_model", "test.quadratic"} <= set(names)
    starts = [lines.index(n) for n in names]  # each experiment's block starts with its name
    assert starts == sorted(starts)
    for n, a, b in zip(names, starts, starts[1:] + [len(lines)]):
        exp, block = experiments.get(n), lines[a:b]
        assert exp.doc in block[1]
        h, m = block.index("    hyperparameters:"), block.index("    metrics:")
        params = [ln for ln in block[h + 1:m]]
        assert len(params) == len(exp.params), (n, params)
        for p, ln in zip(exp.params, params):
            kind = "static" if p.static else "dynamic"
            pat = (rf"^\s+{re.escape(p.name)}\s+{p.type.__name__}\s+{kind}\s+default "
                   rf"{re.escape(repr(p.default))}(\s|$)")
            assert re.match(pat, ln), (n, p, ln)
            if p.choices:
                assert f"one of {list(p.choices)}" in ln, ln
        metrics = [ln.split()[0] for ln in block[m + 1:] if ln.strip()]
        assert metrics == [mt.name for mt in exp.metrics], (n, metrics)
    mm = lines[lines.index("eos.mean_model"):]
    assert re.match(r"^\s+lr\s+float\s+dynamic\s+default 0\.001\b", mm[3]), mm[3]
    assert re.match(r"^\s+d\s+int\s+dynamic\s+default 100\b", mm[4]), mm[4]


def test_progress_off_a_terminal_is_plain_lines(cli, write_sweep, tmp_path):
    """stderr is not a terminal here (captured): no bar, one line to start, one per chunk."""
    import re
    import sys

    assert not sys.stderr.isatty()
    path = write_sweep("""
        name = "prog"
        experiment = "test.quadratic"
        steps = 50
        seeds = 3
        log = { every = 10 }
        [grid]
        lr = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8]
    """)
    code, out, err = cli("run", path, "--out", tmp_path, "--chunk-size", 10)
    assert code == 0, err
    assert "\r" not in err and "\x1b" not in err  # no bar redrawing in place
    lines = err.splitlines()
    assert lines[0] == "[jaxdyn] prog: 24 runs to do in 3 chunks"
    done = []
    for i, ln in enumerate(lines[1:], 1):
        m = re.fullmatch(r"\[jaxdyn\] chunk (\d+)/3: (\d+)/24 runs, [\d.]+ runs/s "
                         r"\(\S+ run·steps/s\), ETA \S+", ln)
        assert m, ln
        assert int(m[1]) == i
        done.append(int(m[2]))
    assert done == [10, 20, 24]
    assert "runs       24 total, 24 run now, 0 already done" in out


# ---- column types of the runs table ---------------------------------------------------------
def _typed_step(state, key, static, hp, data):
    return {"x": state["x"] * (1 - hp["lr"] * hp["n"])}


TYPED = experiments.register(Experiment(
    name="test.typed",
    doc="x ← (1 − η n) x, with a hyperparameter of every type",
    params=(Param("lr", 0.1, float), Param("n", 1, int),
            Param("variant", "a", str, static=True, choices=("a", "b")),
            Param("flag", False, bool, static=True)),
    metrics=(Metric("x"),),
    init=lambda key, static, hp, data: {"x": jnp.ones((), static["dtype"])},
    step=_typed_step,
    measure=lambda s, static, hp, data: {"x": s["x"]},
))


def test_runs_table_columns_typed_as_declared(cli, write_sweep, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = write_sweep("""
        name = "typed"
        experiment = "test.typed"
        steps = 80
        seeds = 2
        log = { every = 10 }
        [fixed]
        flag = true
        [grid]
        lr = [0.5, 2.5]
        n = [1, 2]
        variant = ["a", "b"]
    """)
    code, _, err = cli("run", path, "--out", tmp_path, "--quiet")
    assert code == 0, err
    expected = {"run_id": pa.string(), "group": pa.string(), "seed": pa.int64(),
                "lr": pa.float64(), "n": pa.int64(), "variant": pa.string(),
                "flag": pa.bool_(), "status": pa.string(), "diverged_step": pa.int64(),
                "final_x": pa.float32(), "wall_s": pa.float64()}
    parts = sorted((tmp_path / "typed" / "runs").glob("part-*.parquet"))
    assert len(parts) == 2  # one per static group
    for f in parts:
        schema = pq.read_schema(f)
        assert {n: schema.field(n).type for n in schema.names} == expected, (f.name, schema)
    runs = jaxdyn.load(tmp_path / "typed").runs
    assert len(runs) == 16 and set(runs.n) == {1, 2} and set(runs.variant) == {"a", "b"}
    assert runs.flag.all()
    # η n = 5: x_t = (−4)^t = 2^(2t) overflows float32 at t = 64; the others stay finite
    bad = (runs.lr == 2.5) & (runs.n == 2)
    assert (runs.status[bad] == "diverged").all() and (runs.status[~bad] == "ok").all()
    assert (runs.diverged_step[bad] == 64).all() and runs.diverged_step[~bad].isna().all()


@pytest.mark.parametrize("f", ["eos_mean_model.toml", "bottleneck_k.toml", "dc_configs.toml",
                               "bottleneck_phases.toml", "overparam_quick.toml"])
def test_static_signatures_are_the_groups_of_the_plan(f):
    """The groups found without planning runs (for the LAPACK check) are the plan's groups."""
    sw = spec.load(ROOT / "sweeps" / f, experiments.params_of)
    exp = experiments.get(sw.experiment)
    assert engine.static_signatures(sw, exp) == [g.static for g in
                                                 engine.plan_groups(sw, exp, sw.runs())]
