"""Adaptive sweeps (jaxdyn.adaptive): [refine] against a dense grid, resume after a kill in
a refinement round, goal stops against unstopped runs, and the refusals of bad input."""

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import jaxdyn
from jaxdyn.adaptive import _brackets

ETA = {d: 8 * math.pi / d**2 for d in (50, 100, 200, 400)}


def mean_model(name, ds, num, *, steps=2000, seeds=1, refine=None, extra=None, lo=0.25,
               hi=4.0):
    """A mean-model sweep: per d its own log lr axis [lo, hi] * 8π/d² ([[grid]] blocks)."""
    doc = {"name": name, "experiment": "eos.mean_model", "steps": steps, "seeds": seeds,
           "log": {"every": 500}, "precision": "float64", "fixed": {"init_scale": 0.01},
           "grid": [{"d": [d], "lr": {"start": lo * ETA[d], "stop": hi * ETA[d], "num": num,
                                      "spacing": "log"}} for d in ds]}
    if refine:
        doc["refine"] = refine
    doc.update(extra or {})
    return doc


REFINE = {"axis": "lr", "where": "final_b < -0.01", "rounds": 8, "points": 3}


def dense_brackets(runs, where=lambda r: r.final_b < -0.01):
    """Every flip of the predicate between neighbouring lr values, per (seed, d): a plain
    loop over the dense grid's rows."""
    out = {}
    for (seed, d), g in runs.groupby(["seed", "d"]):
        g = g.sort_values("lr")
        hit, lr = where(g).to_numpy(), g.lr.to_numpy()
        out[(seed, d)] = [(lr[i], lr[i + 1]) for i in range(len(lr) - 1) if hit[i] != hit[i + 1]]
    return out


def table(path, drop=("wall_s",)):
    res = jaxdyn.load(path)
    runs = res.runs.drop(columns=list(drop)).sort_values("run_id", ignore_index=True)
    return runs, res.curves().sort_values(["run_id", "step"], ignore_index=True)


@pytest.mark.slow
def test_refine_finds_the_dense_grids_boundary_with_a_tenth_of_its_runs(tmp_path):
    """Done-when 1: on the mean model, a 32-point log lr grid refined 8 rounds locates each
    d's boundary of final_b < -0.01 within 1e-3 (relative) of a dense 3,001-point grid's,
    with ≤ 10 % of its runs; refined points are bitwise plain runs of those points."""
    ds = (50, 100, 200, 400)
    dense = jaxdyn.run(mean_model("dense", ds, 3001), out=tmp_path, quiet=True)
    ref = jaxdyn.run(mean_model("ref", ds, 32, refine=REFINE), out=tmp_path, quiet=True)
    truth = dense_brackets(dense.load().runs)
    runs = ref.load().runs
    b = ref.load().boundaries()
    assert ref.stats["refine"]["brackets"] == len(b) == len(ds)
    assert ref.runs_total == len(runs) <= 0.10 * dense.runs_total
    assert sorted(runs["round"].unique()) == list(range(9))
    for d in ds:
        (lo_d, hi_d), = truth[(0, d)]  # one flip on the dense grid
        row = b[b.d == d]
        assert len(row) == 1
        lo, hi = float(row.lo.iloc[0]), float(row.hi.iloc[0])
        assert lo_d <= lo < hi <= hi_d, (d, lo, hi, lo_d, hi_d)  # inside the dense bracket
        mid_d = math.sqrt(lo_d * hi_d)
        assert abs(float(row.mid.iloc[0]) / mid_d - 1) <= 1e-3
        assert (runs.d == d).sum() <= 0.10 * 3001
        # the coarse grid's ratio 16**(1/31), cut into 4 (points + 1) per round, 8 rounds
        assert hi / lo == pytest.approx(16 ** (1 / 31 / 4**8), rel=1e-9)
    # a refined point is an ordinary run: its id and results are a plain run's
    pick = runs[runs["round"] >= 5].sort_values("run_id").head(6)
    plain = {"name": "plain", "experiment": "eos.mean_model", "steps": 2000, "seeds": 1,
             "log": {"every": 500}, "precision": "float64", "fixed": {"init_scale": 0.01},
             "grid": [{"d": [int(r.d)], "lr": [float(r.lr)]} for r in pick.itertuples()]}
    p = jaxdyn.run(plain, out=tmp_path, quiet=True)
    pr, pc = table(p.folder)
    rr, rc = table(ref.folder, drop=("wall_s", "round"))
    rr = rr[rr.run_id.isin(pick.run_id)].reset_index(drop=True)
    assert pr.run_id.tolist() == sorted(pick.run_id)
    pd.testing.assert_frame_equal(pr.drop(columns="group"), rr.drop(columns="group"),
                                  check_exact=True)
    rc = rc[rc.run_id.isin(pick.run_id)].reset_index(drop=True)
    pd.testing.assert_frame_equal(pc, rc, check_exact=True)


def test_refine_killed_in_round_3_resumes_to_the_same_tables(tmp_path, monkeypatch, cli):
    """Done-when 1 (resume): a sweep killed after one chunk of round 3 is 'incomplete' in
    status, and a re-run recomputes the same round-3 points and finishes with tables equal to
    an uninterrupted run's."""
    from jaxdyn import engine

    doc = mean_model("kill", (50, 100), 16, refine={**REFINE, "rounds": 5},
                     extra={"chunk_size": 4})
    whole = jaxdyn.run({**doc, "name": "whole"}, out=tmp_path / "a", quiet=True)
    real = engine.run_sweep

    def killed_in_round_3(*a, **kw):
        if (kw.get("extra_columns") or {}).get("round") == 3:
            def progress(event, **info):
                if event == "chunk":
                    raise KeyboardInterrupt  # the process dies after its first chunk
            kw["progress"] = progress
        return real(*a, **kw)

    monkeypatch.setattr(engine, "run_sweep", killed_in_round_3)
    with pytest.raises(KeyboardInterrupt):
        jaxdyn.run(doc, out=tmp_path / "b", quiet=True)
    monkeypatch.setattr(engine, "run_sweep", real)
    part = jaxdyn.load("kill", root=tmp_path / "b").runs
    per_round = part.groupby("round").size()
    full = jaxdyn.load(whole.folder).runs.groupby("round").size()
    assert per_round.index.tolist() == [0, 1, 2, 3]
    assert per_round.loc[:2].tolist() == full.loc[:2].tolist()
    assert 0 < per_round.loc[3] < full.loc[3]  # killed in the middle of round 3
    code, out, _ = cli("status", "kill", "--out", tmp_path / "b")
    # this process is alive, so its record reads "running" (a killed one: "stopped"); not
    # "complete", although the grid's runs (round 0) are all done
    assert code == 0 and "complete" not in out.splitlines()[0], out
    assert f"{len(part)} done ({full.loc[0]} in the grid)" in out and "round 3 of 5" in out
    again = jaxdyn.run(doc, out=tmp_path / "b", quiet=True)
    assert again.runs_done_before == len(part)
    assert again.runs_run == whole.runs_total - len(part)
    for x, y in zip(table(whole.folder), table(again.folder)):
        pd.testing.assert_frame_equal(x.drop(columns="group", errors="ignore"),
                                      y.drop(columns="group", errors="ignore"),
                                      check_exact=True)
    code, out, _ = cli("status", "kill", "--out", tmp_path / "b")
    assert code == 0 and "complete" in out and "incomplete" not in out
    assert "2 brackets after round 5 of 5" in out


def test_every_bracket_is_refined_where_the_predicate_flips_twice(tmp_path, cli, write_sweep):
    """A predicate true on a band of lr flips twice per (seed, d): both brackets shrink by
    (points + 1) per round, each still holding its flip (checked against the closed band
    edge and a dense grid's first flip)."""
    text = """
        name = "band"
        experiment = "eos.mean_model"
        steps = 2000
        seeds = 2
        log = { every = 500 }
        precision = "float64"
        [fixed]
        init_scale = 0.01
        [grid]
        d = [50]
        lr = { start = 0.004, stop = 0.03, num = 12, spacing = "log" }
        [refine]
        axis = "lr"
        where = "final_b < -0.01 AND lr < 0.02"
        rounds = 4
        points = 2
    """
    code, out, err = cli("run", write_sweep(text), "--out", tmp_path, "--quiet")
    assert code == 0, err
    assert "refine     4 brackets after round 4 of 4" in out
    b = jaxdyn.load("band", root=tmp_path).boundaries()
    assert len(b) == 4 and sorted(b.seed.tolist()) == [0, 0, 1, 1]
    ratio = (0.03 / 0.004) ** (1 / 11) ** 1
    for seed, g in b.groupby("seed"):
        g = g.sort_values("lo")
        assert g.hit_lo.tolist() == [False, True] and g.hit_hi.tolist() == [True, False]
        assert (g.hi / g.lo).to_numpy() == pytest.approx([ratio ** (1 / 3**4)] * 2, rel=1e-9)
        assert g.lo.iloc[1] < 0.02 <= g.hi.iloc[1]
        assert 0.0101 < g.lo.iloc[0] < 0.0103  # the flip of final_b (dense grid: 0.010193..)
    code, out, _ = cli("status", "band", "--out", tmp_path)
    assert "refine    4 brackets" in out and "complete" in out


def test_brackets_inner_points_and_find():
    """The bracket rules on plain numbers: points strictly inside, spacing as the axis."""
    assert _brackets.inner(1.0, 16.0, 3, "log", False) == pytest.approx([2.0, 4.0, 8.0])
    assert _brackets.inner(0.0, 4.0, 3, "linear", False) == [1.0, 2.0, 3.0]
    assert _brackets.inner(3, 5, 3, "linear", True) == [4]
    assert _brackets.inner(3, 4, 3, "linear", True) == []
    items = [("a", x, h, x) for x, h in [(3, 1), (1, 0), (2, 0), (4, 0)]] + [("b", 1, 1, 0)]
    assert [(k, lo, hi) for k, lo, hi, *_ in _brackets.find(items)] == [("a", 2, 3),
                                                                         ("a", 3, 4)]


# ---- goal stops --------------------------------------------------------------------------
def stop_sweep(name, stop, lr=(0.005, 0.02), num=8, every=10, steps=600):
    return {"name": name, "experiment": "eos.mean_model", "steps": steps, "seeds": 2,
            "log": {"every": every}, "precision": "float64", "stop": stop,
            "fixed": {"init_scale": 0.01, "d": 50},
            "grid": {"lr": {"start": lr[0], "stop": lr[1], "num": num, "spacing": "log"}}}


def test_goal_stop_step_is_the_first_logged_step_where_it_holds(tmp_path):
    """Done-when 2: stopped_step equals the first logged step where b < -0.01 in the same run
    without a goal; curves up to it are bitwise the unstopped run's, NaN after; final_*
    are the values at the stop; runs that never reach it are not stopped."""
    kw = dict(lr=(0.0095, 0.014), num=10, every=3)
    s = jaxdyn.run(stop_sweep("stop", "b < -0.01", **kw), out=tmp_path, quiet=True)
    ref = jaxdyn.run(stop_sweep("ref", "b < -1e9", **kw), out=tmp_path, quiet=True)
    runs, curves = table(s.folder)
    rruns, rcurves = table(ref.folder)
    assert (runs.run_id == rruns.run_id).all()  # a goal is not part of a run's identity
    assert rruns.stopped_step.isna().all()
    first = rcurves[rcurves.b < -0.01].groupby("run_id").step.min()
    got = runs.set_index("run_id").stopped_step.dropna().astype(int)
    assert 0 < len(got) < len(runs)  # some reach the goal, some do not
    assert len(set(got)) > 2  # at different steps
    pd.testing.assert_series_equal(got.sort_index(), first.sort_index(), check_names=False)
    m = curves.merge(rcurves, on=["run_id", "step"], suffixes=("", "_ref"))
    stop_at = m.run_id.map(got).fillna(np.inf)
    before = m[m.step <= stop_at]
    assert (before.b.to_numpy() == before.b_ref.to_numpy()).all()
    assert (before.loss.to_numpy() == before.loss_ref.to_numpy()).all()
    assert m[m.step > stop_at].b.isna().all()
    at = rcurves.set_index(["run_id", "step"]).b
    for rid, st in got.items():
        assert runs.set_index("run_id").final_b[rid] == at[(rid, st)]
    never = runs[runs.stopped_step.isna()].set_index("run_id")
    assert (never.final_b == rruns.set_index("run_id").final_b[never.index]).all()
    assert s.stats["stop"]["stopped"] == len(got)


def test_a_chunk_whose_runs_all_stop_ends_early_counted(tmp_path):
    """A chunk whose runs all reach the goal computes only up to its last stop: the run·steps
    counted equal, per device (2), its rows times the latest stopped_step among them; with
    one run that never stops, the chunk computes every step."""
    doc = stop_sweep("early", "b < -0.01", lr=(0.012, 0.02), num=8, steps=2000)
    s = jaxdyn.run(doc, out=tmp_path, quiet=True, micro_batch=0, chunk_size=16)
    runs = s.load().runs.sort_values("run_id", ignore_index=True)
    assert runs.stopped_step.notna().all()
    # the chunk: 16 runs in run_id order, split over 2 devices of 8 rows
    steps = runs.stopped_step.astype(int).to_numpy()
    expect = 8 * steps[:8].max() + 8 * steps[8:].max()
    assert s.stats["stop"]["run_steps"] == expect < 16 * 2000
    assert s.stats["stop"]["run_steps_full"] == 16 * 2000
    doc2 = stop_sweep("late", "b < -0.01", lr=(0.005, 0.02), num=8, steps=2000)
    s2 = jaxdyn.run(doc2, out=tmp_path, quiet=True, micro_batch=0, chunk_size=16)
    assert s2.load().runs.stopped_step.isna().any()
    assert s2.stats["stop"]["run_steps"] == 16 * 2000


# ---- refusals ----------------------------------------------------------------------------
BASE = """
    name = "bad"
    experiment = "eos.mean_model"
    steps = 10
    log = { every = 5 }
    [fixed]
    init_scale = 0.01
    [grid]
    d = [50]
    lr = { start = 0.001, stop = 0.01, num = 4, spacing = "log" }
"""


@pytest.mark.parametrize("extra,key,expect", [
    ('[refine]\naxis = "lrr"\nwhere = "final_b < 0"\n', "refine.axis", "did you mean 'lr'"),
    ('[refine]\naxis = "init_scale"\nwhere = "final_b < 0"\n', "refine.axis", "in [fixed]"),
    ('[refine]\naxis = "lr"\nwhere = "final_b <"\n', "refine.where", "not a valid SQL"),
    ('[refine]\naxis = "lr"\nwhere = "final_bb < 0"\n', "refine.where",
     "did you mean 'final_b'"),
    ('[refine]\naxis = "lr"\nwhere = "final_b < 0); DROP TABLE runs; SELECT (1"\n',
     "refine.where", "one SQL expression"),
    ('[refine]\naxis = "lr"\nwhere = "(SELECT count(*) FROM read_csv(\'/etc/passwd\')) > 0"\n',
     "refine.where", "bad predicate"),
    ('[refine]\naxis = "lr"\nwhere = "final_b < 0"\nrounds = -1\n', "refine.rounds", ">= 0"),
    ('[refine]\naxis = "lr"\nwhere = "final_b < 0"\npoints = 0\n', "refine.points", ">= 1"),
    ('[refine]\naxis = "lr"\nwhere = "final_b < 0"\npoint = 3\n', "refine.point",
     "did you mean 'points'"),
    ('[refine]\nwhere = "final_b < 0"\n', "refine.axis", "missing required key"),
    ('stop = "los < 1e-8"\n', "stop", "did you mean 'loss'"),
    ('stop = "loss"\n', "stop", "not a condition"),
    ('stop = "loss < __import__(1)"\n', "stop", "unsupported element"),
])
def test_bad_adaptive_keys_are_refused_before_compute(extra, key, expect, cli, write_sweep,
                                                      tmp_path):
    text = BASE.replace('[fixed]', extra.replace("\n[refine]", "[refine]") + '[fixed]') \
        if extra.startswith("stop") else BASE + extra
    path = write_sweep(text)
    code, out, err = cli("run", path, "--out", tmp_path / "out", "--quiet")
    assert code == 2, (out, err)
    assert str(path) in err and f"key '{key}'" in err and expect in err, err
    assert not (tmp_path / "out" / "bad").exists()


# ---- successive halving ------------------------------------------------------------------
def halving_sweep(name, halving=None, precision="float32", steps=400):
    doc = {"name": name, "experiment": "eos.mean_model", "steps": steps, "seeds": 2,
           "log": {"every": 50}, "precision": precision,
           "fixed": {"init_scale": 0.01, "d": 50},
           "grid": {"lr": {"start": 0.005, "stop": 0.02, "num": 16, "spacing": "log"}}}
    if halving:
        doc["halving"] = halving
    return doc


HALVING = {"metric": "b", "mode": "min", "keep": 0.25, "rungs": [100, 200]}


def test_halving_survivors_are_bitwise_full_runs_and_run_steps_follow_the_schedule(tmp_path):
    """Done-when 3: survivors' rows and curves are bitwise a full run's; culled runs keep
    their curves up to their rung (and no row after) with culled_step; the run·steps counted
    on the device equal the schedule's arithmetic: 32 runs to step 100, the best 8 (by b,
    min) to 200, the best 2 to 400, each stage one chunk padded to 16 (2 devices x 8)."""
    h = jaxdyn.run(halving_sweep("halv", HALVING), out=tmp_path, quiet=True, micro_batch=0)
    full = jaxdyn.run(halving_sweep("full"), out=tmp_path, quiet=True, micro_batch=0)
    runs, curves = table(h.folder)
    fruns, fcurves = table(full.folder)
    assert runs.run_id.tolist() == fruns.run_id.tolist()
    counts = runs.culled_step.value_counts(dropna=False)
    assert counts[100] == 24 and counts[200] == 6 and runs.culled_step.isna().sum() == 2
    # the survivors of each rung are the best by b at that rung in the full runs (plain loop)
    fb = fcurves.set_index(["run_id", "step"]).b
    alive = list(fruns.run_id)
    for rung in (100, 200):
        ranked = sorted(alive, key=lambda r: (fb[(r, rung)], r))
        kept = ranked[:math.ceil(0.25 * len(alive))]
        culled = set(alive) - set(kept)
        assert set(runs[runs.culled_step == rung].run_id) == culled
        alive = kept
    surv = runs[runs.culled_step.isna()]
    assert sorted(surv.run_id) == sorted(alive)
    cols = [c for c in fruns.columns]
    pd.testing.assert_frame_equal(
        surv[cols].reset_index(drop=True),
        fruns[fruns.run_id.isin(alive)].reset_index(drop=True), check_exact=True)
    for rid, cs in runs.set_index("run_id").culled_step.items():
        mine = curves[curves.run_id == rid].reset_index(drop=True)
        ref = fcurves[fcurves.run_id == rid]
        if not np.isnan(cs):
            ref = ref[ref.step <= cs]
            assert runs.set_index("run_id").final_b[rid] == fb[(rid, int(cs))]
        pd.testing.assert_frame_equal(mine, ref.reset_index(drop=True), check_exact=True)
    st = h.stats["halving"]
    assert st["runs_per_stage"] == [32, 8, 2]
    assert st["run_steps_schedule"] == 32 * 100 + 8 * 100 + 2 * 200
    assert st["run_steps"] == 32 * 100 + 16 * 100 + 16 * 200  # padded batches, counted
    assert st["run_steps_full"] == 32 * 400
    assert full.stats["run_steps_full"] == 32 * 400


def test_halving_per_group_and_resume_after_a_kill(tmp_path, monkeypatch):
    """by = ["seed"]: each seed's 16 runs compete alone (16 -> 4 -> 1). A sweep killed in
    its second stage resumes to the tables of an uninterrupted run."""
    from jaxdyn.adaptive import _halving

    doc = halving_sweep("grp", {**HALVING, "by": ["seed"]})
    whole = jaxdyn.run({**doc, "name": "grp_whole"}, out=tmp_path / "a", quiet=True)
    runs = whole.load().runs
    assert runs[runs.culled_step.isna()].groupby("seed").size().tolist() == [1, 1]
    assert runs[runs.culled_step == 200].groupby("seed").size().tolist() == [3, 3]
    assert whole.stats["halving"]["runs_per_stage"] == [32, 8, 2]
    real = _halving.StageRunner.run_stage

    def dies_in_stage_2(self, runs, carry, lo, hi):
        if lo >= 3:  # log points from step 150: the second stage
            raise KeyboardInterrupt
        return real(self, runs, carry, lo, hi)

    monkeypatch.setattr(_halving.StageRunner, "run_stage", dies_in_stage_2)
    with pytest.raises(KeyboardInterrupt):
        jaxdyn.run(doc, out=tmp_path / "b", quiet=True)
    monkeypatch.setattr(_halving.StageRunner, "run_stage", real)
    part = jaxdyn.load("grp", root=tmp_path / "b").runs
    assert len(part) == 24 and (part.culled_step == 100).all()
    again = jaxdyn.run(doc, out=tmp_path / "b", quiet=True)
    assert again.runs_done_before == 24 and again.runs_run == 8
    for x, y in zip(table(whole.folder), table(again.folder)):
        pd.testing.assert_frame_equal(x, y, check_exact=True)


@pytest.mark.parametrize("extra,key,expect", [
    ('metric = "b"\nkeep = 1.5\nrungs = [5]\n', "halving.keep", "(0, 1)"),
    ('metric = "b"\nkeep = 0\nrungs = [5]\n', "halving.keep", "(0, 1)"),
    ('metric = "b"\nkeep = 0.5\nrungs = [5, 5]\n', "halving.rungs", "strictly increasing"),
    ('metric = "b"\nkeep = 0.5\nrungs = [20]\n', "halving.rungs", "below the sweep's steps"),
    ('metric = "b"\nkeep = 0.5\nrungs = [3]\n', "halving.rungs[0]", "not a logged step"),
    ('metric = "bb"\nkeep = 0.5\nrungs = [5]\n', "halving.metric", "did you mean 'b'"),
    ('metric = "b"\nkeep = 0.5\nrungs = [5]\nby = ["dd"]\n', "halving.by",
     "did you mean 'd'"),
    ('metric = "b"\nkeep = 0.5\nrungs = [5]\nmode = "best"\n', "halving.mode", "'min' or"),
    ('metric = "b"\nrungs = [5]\n', "halving.keep", "missing required key"),
])
def test_bad_halving_keys_are_refused_before_compute(extra, key, expect, cli, write_sweep,
                                                     tmp_path):
    path = write_sweep(BASE + "[halving]\n" + extra)
    code, out, err = cli("run", path, "--out", tmp_path / "out", "--quiet")
    assert code == 2, (out, err)
    assert str(path) in err and f"key '{key}'" in err and expect in err, err
    assert not (tmp_path / "out" / "bad").exists()


# ---- batched ask/tell search -------------------------------------------------------------
OPT = (1.3, -2.1, 0.4, 3.3)


def _quadratic_bowl():
    """A synthetic objective with a known optimum: loss = Σ (x_i - c_i)² at c = OPT (the
    state is the point itself; one step that changes nothing)."""
    import jax.numpy as jnp

    names = [f"x{i}" for i in range(len(OPT))]

    def init(key, static, hp, data):
        return {"x": jnp.stack([hp[n] for n in names]).astype(static["dtype"])}

    def measure(state, static, hp, data):
        c = jnp.asarray(OPT, static["dtype"])
        return {"loss": jnp.sum((state["x"] - c) ** 2)}

    return jaxdyn.Experiment(
        name="bowl", doc="Σ (x_i - c_i)²", params=tuple(jaxdyn.Param(n, 0.0, float)
                                                        for n in names),
        metrics=(jaxdyn.Metric("loss"),), init=init, step=lambda s, k, st, hp, d: s,
        measure=measure)


def search_doc(name, method, seed, trials=512, batch=64):
    return {"name": name, "experiment": "bowl", "steps": 1, "seeds": 1,
            "log": {"every": 1}, "precision": "float64",
            "search": {"method": method, "trials": trials, "batch": batch,
                       "metric": "final_loss", "mode": "min", "seed": seed,
                       "space": {f"x{i}": {"start": -5.0, "stop": 5.0}
                                 for i in range(len(OPT))}}}


@pytest.mark.slow
def test_tpe_in_batches_beats_random_search_and_every_trial_is_in_the_table(tmp_path):
    """Done-when 4: on Σ (x_i - c_i)² over [-5, 5]^4, TPE in batches of 64 ends closer to
    the optimum than random search with the same 512 trials, over 3 study seeds; every trial
    is a row with its trial and batch numbers, and the reported best is the table's."""
    pytest.importorskip("optuna")
    exp = _quadratic_bowl()
    best = {"tpe": [], "random": []}
    for seed in (0, 1, 2):
        for method in best:
            s = jaxdyn.run(search_doc(f"{method}{seed}", method, seed), experiment=exp,
                           out=tmp_path, quiet=True)
            runs = s.load().runs
            assert sorted(runs.trial) == list(range(512))
            assert (runs.batch == runs.trial // 64).all()
            # the loss is the closed form at the proposed point
            x = runs[[f"x{i}" for i in range(4)]].to_numpy()
            np.testing.assert_allclose(runs.final_loss, ((x - OPT) ** 2).sum(1), rtol=1e-12)
            assert s.stats["search"]["best_value"] == runs.final_loss.min()
            best[method].append(runs.final_loss.min())
    print(best)
    assert np.mean(best["tpe"]) < np.mean(best["random"])
    assert sum(t < r for t, r in zip(best["tpe"], best["random"])) >= 2


def test_search_killed_in_batch_2_replays_the_study(tmp_path, monkeypatch):
    """A search killed after batch 1 asks the same points again (the study replayed from
    the table) and ends with the tables of an uninterrupted one."""
    pytest.importorskip("optuna")
    from jaxdyn import engine

    exp = _quadratic_bowl()
    doc = search_doc("srch", "tpe", 0, trials=96, batch=16)
    whole = jaxdyn.run({**doc, "name": "srch_whole"}, experiment=exp, out=tmp_path / "a",
                       quiet=True)
    real = engine.run_sweep

    def killed(*a, **kw):
        if (kw.get("extra_columns") or {}).get("batch") == 2:
            raise KeyboardInterrupt
        return real(*a, **kw)

    monkeypatch.setattr(engine, "run_sweep", killed)
    with pytest.raises(KeyboardInterrupt):
        jaxdyn.run(doc, experiment=exp, out=tmp_path / "b", quiet=True)
    monkeypatch.setattr(engine, "run_sweep", real)
    assert len(jaxdyn.load("srch", root=tmp_path / "b").runs) == 32
    again = jaxdyn.run(doc, experiment=exp, out=tmp_path / "b", quiet=True)
    assert again.runs_done_before == 32 and again.runs_run == 64
    for x, y in zip(table(whole.folder), table(again.folder)):
        pd.testing.assert_frame_equal(x, y, check_exact=True)


@pytest.mark.parametrize("search,key,expect", [
    ({"method": "bayes"}, "search.method", "expected one of"),
    ({"trials": 0}, "search.trials", ">= 1"),
    ({"metric": "final_los"}, "search.metric", "did you mean 'final_loss'"),
    ({"space": {"x9": {"start": 0.0, "stop": 1.0}}}, "search.space.x9", "unknown hyperparam"),
    ({"space": {"x0": {"start": 1.0, "stop": 0.0}}}, "search.space.x0", "start < stop"),
    ({"space": {"x0": {"start": 0.0, "stop": 1.0, "spacing": "log"}}}, "search.space.x0",
     "start > 0"),
    ({"space": {"x0": {"start": 0.0, "stop": 1.0, "num": 3}}}, "search.space.x0.num",
     "unknown range key"),
])
def test_bad_search_keys_are_refused_before_compute(search, key, expect, tmp_path):
    doc = search_doc("bad", "tpe", 0)
    doc["search"].update(search)
    with pytest.raises(jaxdyn.SpecError) as e:
        jaxdyn.run(doc, experiment=_quadratic_bowl(), out=tmp_path, quiet=True)
    assert f"key '{key}'" in str(e.value) and expect in str(e.value), str(e.value)
    assert not (tmp_path / "bad").exists()


def test_search_from_a_sweep_file_summary_and_status(cli, write_sweep, tmp_path):
    """[search] in a TOML file on a user's own experiment: the summary names the best trial,
    the table's best, and status says complete."""
    pytest.importorskip("optuna")
    (tmp_path / "bowl.py").write_text(
        "import sys\nsys.path.insert(0, %r)\nfrom test_adaptive import _quadratic_bowl\n"
        "BOWL = _quadratic_bowl()\n" % str(Path(__file__).parent))
    path = write_sweep("""
        name = "filesearch"
        experiment = "bowl.py:BOWL"
        steps = 1
        log = { every = 1 }
        precision = "float64"
        [search]
        method = "cmaes"
        trials = 48
        batch = 16
        metric = "final_loss"
        [search.space]
        x0 = { start = -5.0, stop = 5.0 }
        x1 = { start = 0.1, stop = 10.0, spacing = "log" }
    """)
    code, out, err = cli("run", path, "--out", tmp_path / "out", "--quiet")
    assert code == 0, err
    runs = jaxdyn.load("filesearch", root=tmp_path / "out").runs
    best = runs.sort_values("final_loss").iloc[0]
    assert "search     48 trials in 3 batches; best" in out
    assert f"(trial {int(best.trial)}:" in out and repr(float(best.final_loss)) in out
    assert runs.x1.between(0.1, 10.0).all() and (runs.x2 == 0.0).all()
    code, out, _ = cli("status", "filesearch", "--out", tmp_path / "out")
    assert "complete" in out.splitlines()[0]


def test_halving_on_shared_data_keeps_each_seeds_data(tmp_path):
    """eos.threshold_relu shares one data set per seed (chunks never span seeds): halving's
    compacted chunks keep to that, so every row is bitwise the full sweep's (float32)."""
    doc = {"name": "tr", "experiment": "eos.threshold_relu", "steps": 200, "seeds": 2,
           "log": {"every": 20}, "precision": "float32",
           "fixed": {"d": 20, "n_train": 64, "n_test": 16, "lam": 5.0, "init_scale": 0.01},
           "grid": {"lr": {"start": 1e-3, "stop": 3e-2, "num": 8, "spacing": "log"}}}
    h = jaxdyn.run({**doc, "halving": {"metric": "loss", "keep": 0.5, "rungs": [40, 100]}},
                   out=tmp_path, quiet=True)
    full = jaxdyn.run({**doc, "name": "tr_full"}, out=tmp_path, quiet=True)
    runs, curves = table(h.folder)
    fruns, fcurves = table(full.folder)
    assert h.stats["halving"]["runs_per_stage"] == [16, 8, 4]
    surv = runs[runs.culled_step.isna()]
    assert surv.seed.nunique() == 2 or len(surv) == 4
    pd.testing.assert_frame_equal(surv[fruns.columns].reset_index(drop=True),
                                  fruns[fruns.run_id.isin(surv.run_id)].reset_index(drop=True),
                                  check_exact=True)
    m = curves.merge(fcurves, on=["run_id", "step"], suffixes=("", "_ref"))
    assert len(m) == len(curves)
    for c in ("loss", "b", "test_acc"):
        assert ((m[c] == m[c + "_ref"]) | (m[c].isna() & m[c + "_ref"].isna())).all(), c
