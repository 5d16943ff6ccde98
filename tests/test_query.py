"""The analysis side: SQL over sweeps (read-only), the Python API, status, plots, Parquet
layout, and reading while another process writes the sweep.

Expected values come from an independent path: the part files read with pyarrow and
aggregated with pandas, or closed forms of the status arithmetic."""

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

import jaxdyn
from jaxdyn.results import QueryError, connect, sweep_status
from jaxdyn.store import CURVES_ROW_GROUP

from conftest import ROOT

MM = """
name = "mm"
experiment = "eos.mean_model"
steps = 200
seeds = 3
log = { every = 20 }
diverge_above = 100.0
[fixed]
init_scale = 0.01
[grid]
d = [50, 100]
lr = [0.001, 0.003, 0.01, 0.03, 1.0]
"""
SN = """
name = "sn"
experiment = "eos.single_neuron"
steps = 150
seeds = 2
log = { every = 50 }
precision = "float64"
[fixed]
perturb = 0.01
[grid]
lr = [0.05, 0.2]
y0 = [1.0, 4.0]
"""
N_MM, N_SN = 2 * 5 * 3, 2 * 2 * 2
NLOG_MM, NLOG_SN = 11, 4


@pytest.fixture(scope="module")
def sweeps(tmp_path_factory):
    """Two sweeps of different experiments (different hyperparameter and metric columns)."""
    from jaxdyn.cli import main

    base = tmp_path_factory.mktemp("q")
    root = base / "res"
    for name, text, extra in (("mm", MM, ["--chunk-size", 8]), ("sn", SN, [])):
        f = base / f"{name}.toml"
        f.write_text(text)
        assert main(["run", str(f), "--out", str(root), "--quiet", *map(str, extra)]) == 0
    return root


def parts_frame(folder, table, f64=False):
    """A table read straight from its part files (pyarrow → pandas), the reference path;
    ``f64``: float32 columns as float64 (DuckDB aggregates in double precision)."""
    files = sorted((folder / table).glob("part-*.parquet"))
    df = pd.concat([pq.read_table(f).to_pandas() for f in files], ignore_index=True)
    if f64:
        df = df.astype({c: "float64" for c in df.columns if df[c].dtype == "float32"})
    return df


def tree(root):
    """Every file under root with a hash of its bytes."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


# ---- query -------------------------------------------------------------------------------
def test_cross_sweep_query_with_different_columns(sweeps):
    df = jaxdyn.query("SELECT sweep, run_id, lr, d, y0, link, final_b, final_conserved "
                      "FROM runs", root=sweeps)  # no names: every sweep under root
    mm, sn = parts_frame(sweeps / "mm", "runs"), parts_frame(sweeps / "sn", "runs")
    assert (df.sweep == "mm").sum() == len(mm) == N_MM
    assert (df.sweep == "sn").sum() == len(sn) == N_SN
    a, b = df[df.sweep == "mm"].set_index("run_id"), df[df.sweep == "sn"].set_index("run_id")
    # a column a sweep lacks is NULL there; the others are the sweep's own values
    assert a.y0.isna().all() and a.link.isna().all() and a.final_conserved.isna().all()
    assert b.d.isna().all() and b.final_b.isna().all()
    mm, sn = mm.set_index("run_id"), sn.set_index("run_id")
    np.testing.assert_array_equal(a.loc[mm.index, "d"].to_numpy(), mm.d.to_numpy())
    np.testing.assert_array_equal(a.loc[mm.index, "lr"].to_numpy(), mm.lr.to_numpy())
    np.testing.assert_array_equal(b.loc[sn.index, "y0"].to_numpy(), sn.y0.to_numpy())
    assert list(b.loc[sn.index, "link"]) == list(sn.link)

    # curves of both, by name; an aggregate against pandas on the part files
    c = jaxdyn.query("SELECT sweep, count(*) AS n, count(conserved) AS nc, count(a_sum) AS na "
                     "FROM curves GROUP BY sweep ORDER BY sweep", sweeps=["mm", "sn"],
                     root=sweeps)
    assert c.to_dict("records") == [
        {"sweep": "mm", "n": N_MM * NLOG_MM, "nc": 0, "na": N_MM * NLOG_MM},
        {"sweep": "sn", "n": N_SN * NLOG_SN, "nc": N_SN * NLOG_SN, "na": 0}]
    g = jaxdyn.query("SELECT d, lr, avg(final_b) AS b, count(*) AS n FROM runs "
                     "GROUP BY d, lr ORDER BY d, lr", sweeps="mm", root=sweeps)
    ref = (mm.assign(final_b=mm.final_b.astype("float64")).groupby(["d", "lr"]).final_b
           .agg(["mean", "size"]).reset_index())
    np.testing.assert_allclose(g.b, ref["mean"], rtol=1e-12)
    assert list(g.n) == list(ref["size"])
    # the Results API reads the same rows
    res = jaxdyn.load("mm", root=sweeps)
    assert sorted(res.runs.run_id) == sorted(mm.index)
    assert len(res.curves()) == N_MM * NLOG_MM
    assert len(res.query("SELECT * FROM curves")) == N_MM * NLOG_MM


def test_cli_query_output_formats(sweeps, cli, tmp_path):
    sql = "SELECT run_id, lr, d, final_b FROM runs ORDER BY run_id"
    ref = jaxdyn.query(sql, sweeps=["mm"], root=sweeps)
    code, out, err = cli("query", "mm", sql, "--out", sweeps)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split() == ["run_id", "lr", "d", "final_b"] and len(lines) == 1 + N_MM
    assert lines[1].split()[0] == ref.run_id[0]

    code, out, err = cli("query", "mm", sql, "--out", sweeps, "--format", "csv")
    assert code == 0, err
    from io import StringIO

    pd.testing.assert_frame_equal(pd.read_csv(StringIO(out)), ref, check_dtype=False)
    code, out, err = cli("query", "mm", sql, "--out", sweeps, "--format", "json")
    assert code == 0, err
    recs = [json.loads(l) for l in out.splitlines()]
    assert [r["run_id"] for r in recs] == list(ref.run_id)
    np.testing.assert_allclose([r["final_b"] for r in recs], ref.final_b, rtol=1e-12)
    f = tmp_path / "q.parquet"
    code, out, err = cli("query", "mm", sql, "--out", sweeps, "--format", "parquet",
                         "--output", f)
    assert code == 0, err
    pd.testing.assert_frame_equal(pd.read_parquet(f), ref)
    code, _, err = cli("query", "mm", sql, "--out", sweeps, "--format", "parquet")
    assert code == 2 and "--output" in err
    code, out, err = cli("query", "mm", "SELECT * FROM runs", "--out", sweeps, "--max-rows", 5)
    assert code == 0 and f"({N_MM} rows, 5 shown" in out


@pytest.mark.parametrize("args, words", [
    (["nope", "SELECT 1"], ["no sweep 'nope'", "mm, sn"]),
    (["SELEC lr FROM runs"], ["bad query", "syntax error"]),
    (["mm", "SELECT no_such_column FROM runs"], ["bad query", "no_such_column"]),
    (["mm", "SELECT y0 FROM runs"], ["bad query", "y0"]),  # a column of the other sweep
    (["mm", ""], ["empty query"]),
    (["mm", "SELECT 1; SELECT 2"], ["one SQL statement"]),
])
def test_query_errors_are_one_message_and_status_2(sweeps, cli, args, words):
    code, out, err = cli("query", *args, "--out", sweeps)
    assert code == 2 and out == ""
    assert err.startswith("jaxdyn: error: ") and "Traceback" not in err, err
    for w in words:
        assert w in err, err
    *names, sql = args
    with pytest.raises(QueryError):
        jaxdyn.query(sql, sweeps=names or None, root=sweeps)


def test_query_is_read_only(sweeps, cli, tmp_path):
    part = sorted((sweeps / "mm" / "runs").glob("part-*.parquet"))[0]
    outside = tmp_path / "outside.csv"
    outside.write_text("a\n1\n")
    stmts = [
        f"COPY runs TO '{sweeps}/mm/runs/x.csv'",
        f"COPY (SELECT 1 AS a) TO '{part}' (FORMAT parquet, USE_TMP_FILE false)",
        f"COPY curves TO '{tmp_path}/out.parquet' (FORMAT parquet)",
        "CREATE TABLE t AS SELECT * FROM runs",
        "CREATE OR REPLACE VIEW runs AS SELECT 1 AS a",
        "INSERT INTO runs SELECT * FROM runs",
        "UPDATE runs SET lr = 0",
        "DELETE FROM runs",
        "DROP VIEW runs",
        f"ATTACH '{sweeps}/mm/db.duckdb' AS x",
        f"EXPORT DATABASE '{sweeps}/mm/export'",
        "INSTALL httpfs",
        "SET enable_external_access = true",
        "PRAGMA enable_profiling",
        f"SELECT * FROM read_csv('{outside}')",
        "SELECT 1; DROP VIEW runs",
    ]
    before, outside_before = tree(sweeps), outside.read_bytes()
    for s in stmts:
        code, out, err = cli("query", "mm", s, "--out", sweeps)
        assert code == 2 and err.startswith("jaxdyn: error: "), (s, code, err)
        assert "read-only" in err or "read only" in err or "one SQL statement" in err, (s, err)
    # the connection of the Python API refuses them too, and DuckDB itself cannot write
    con = connect(["mm"], sweeps)
    for s in stmts[:2]:
        with pytest.raises(QueryError, match="read-only"):
            con.execute(s)
    with pytest.raises(Exception, match="(?i)permission|disabled"):
        con.sql("SELECT 1 AS a").write_parquet(str(part))
    assert con.df("SELECT count(*) AS n FROM runs").n[0] == N_MM
    con.close()
    assert tree(sweeps) == before, "a query changed the results folder"
    assert outside.read_bytes() == outside_before and not (tmp_path / "out.parquet").exists()
    code, out, _ = cli("query", "mm", "SELECT count(*) AS n FROM runs", "--out", sweeps,
                       "--format", "csv")
    assert code == 0 and out.split() == ["n", str(N_MM)]


def test_unknown_schema_version_is_refused(sweeps, cli, tmp_path):
    root = tmp_path / "res"
    shutil.copytree(sweeps / "mm", root / "mm")
    man = root / "mm" / "manifest.json"
    m = json.loads(man.read_text())
    for v, word in ((0, "older"), (99, "newer"), (None, "older")):
        man.write_text(json.dumps({**m, "schema_version": v}))
        for fn in (lambda: jaxdyn.load("mm", root=root), lambda: connect(["mm"], root),
                   lambda: jaxdyn.query("SELECT 1", root=root),
                   lambda: sweep_status("mm", root)):
            with pytest.raises(QueryError, match=f"schema version {v}.*{word}"):
                fn()
        for args in (("query", "mm", "SELECT count(*) FROM runs"), ("status", "mm"),
                     ("plot", "mm", "--x", "step", "--y", "loss", "-o", tmp_path / "p.png")):
            code, out, err = cli(*args, "--out", root)
            assert code == 2 and f"schema version {v}" in err and "Traceback" not in err
    assert not (tmp_path / "p.png").exists()


# ---- Parquet layout and column projection -------------------------------------------------
def test_parquet_layout_and_projection(sweeps):
    files = sorted((sweeps / "mm" / "curves").glob("part-*.parquet"))
    assert len(files) == 4  # 30 runs in chunks of 8
    for f in files:
        pf = pq.ParquetFile(f)
        md = pf.metadata
        for rg in range(md.num_row_groups):
            assert md.row_group(rg).num_rows <= CURVES_ROW_GROUP
            for ci in range(md.num_columns):
                col = md.row_group(rg).column(ci)
                assert col.compression == "ZSTD", (f.name, col.path_in_schema)
                assert col.is_stats_set and col.statistics.has_min_max, col.path_in_schema
        t = pf.read(columns=["run_id", "step"]).to_pandas()
        keys = list(zip(t.run_id, t.step))
        assert keys == sorted(keys), f"{f.name} not sorted by (run_id, step)"
        assert len(set(keys)) == len(keys)
    for f in sorted((sweeps / "mm" / "runs").glob("part-*.parquet")):
        ids = pq.read_table(f, columns=["run_id"]).column(0).to_pylist()
        assert ids == sorted(ids)
        assert pq.ParquetFile(f).metadata.row_group(0).column(0).compression == "ZSTD"

    res = jaxdyn.load("mm", root=sweeps)
    ids = list(res.runs.run_id.sample(20, random_state=0))
    c = res.curves(run_ids=ids, columns=["loss"])
    assert list(c.columns) == ["run_id", "step", "loss"]  # only the asked-for column
    assert sorted(set(c.run_id)) == sorted(ids) and len(c) == 20 * NLOG_MM
    full = parts_frame(sweeps / "mm", "curves")
    ref = full[full.run_id.isin(ids)].sort_values(["run_id", "step"], ignore_index=True)
    pd.testing.assert_frame_equal(c, ref[["run_id", "step", "loss"]])
    # where: a pyarrow expression or a SQL predicate, same rows
    a = res.curves(columns=["b"], where=ds.field("step") >= 100, run_ids=ids[:3])
    b = res.curves(columns=["b"], where="step >= 100", run_ids=ids[:3])
    pd.testing.assert_frame_equal(a, b)
    assert list(a.columns) == ["run_id", "step", "b"] and len(a) == 3 * 6
    with pytest.raises(QueryError, match="no curves column nope"):
        res.curves(columns=["nope"])


def test_part_rows_sorted_by_run_id_whatever_the_chunk_order():
    """The store sorts a chunk's rows by run_id (and step) itself when they come unsorted
    (the engine dispatches them sorted, and then nothing is copied): every permutation of a
    chunk gives the same tables, each row with its own run's values."""
    from jaxdyn import engine, experiments, spec, store

    sw = spec.parse(MM, experiments.params_of)
    exp = experiments.get(sw.experiment)
    group = engine.plan_groups(sw, exp, sw.runs())[0]
    chunk = group.runs[:12]
    log_steps = sw.log.steps(sw.steps)
    n, nl = len(chunk), len(log_steps)
    # run i of `chunk`, log point j: value 1000 i + j (+ 0.5 per metric)
    curves = {m.name: (1000.0 * np.arange(n)[:, None] + np.arange(nl) + 0.5 * k)
              .astype(np.float32) for k, m in enumerate(exp.metrics)}
    alive = np.arange(n) % 3 != 0
    dstep = np.where(alive, -1, 10 + np.arange(n))
    index = {r.run_id: i for i, r in enumerate(chunk)}
    got = []
    rng = np.random.default_rng(0)
    for perm in (np.arange(n), np.arange(n)[::-1], rng.permutation(n)):
        c = {k: v[perm] for k, v in curves.items()}
        runs_t, curves_t = store.chunk_tables(
            sw, exp, group, [chunk[i] for i in perm], log_steps, c,
            {k: v[:, -1] for k, v in c.items()}, alive[perm], dstep[perm], 1.0)
        runs_df = runs_t.to_pandas()
        curves_df = curves_t.to_pandas().astype({"run_id": str})
        assert list(runs_df.run_id) == sorted(index)
        keys = list(zip(curves_df.run_id, curves_df.step))
        assert keys == sorted(keys)
        i = curves_df.run_id.map(index).to_numpy()
        j = np.tile(np.arange(nl), n)
        for k, m in enumerate(exp.metrics):
            np.testing.assert_array_equal(curves_df[m.name], 1000.0 * i + j + 0.5 * k)
        ri = runs_df.run_id.map(index).to_numpy()
        assert list(runs_df.status) == ["ok" if alive[x] else "diverged" for x in ri]
        np.testing.assert_array_equal(runs_df.final_loss, 1000.0 * ri + nl - 1)
        assert runs_df.diverged_step.isna().tolist() == list(alive[ri])
        got.append((runs_df.drop(columns="wall_s"), curves_df))
    for runs_df, curves_df in got[1:]:
        pd.testing.assert_frame_equal(runs_df, got[0][0])
        pd.testing.assert_frame_equal(curves_df, got[0][1])


def test_uncommitted_curves_part_is_not_read(sweeps, tmp_path):
    """A curves part whose runs part is missing (a writer killed between the two renames) is
    not part of the tables for any reader."""
    root = tmp_path / "res"
    shutil.copytree(sweeps / "mm", root / "mm")
    gone = sorted((root / "mm" / "runs").glob("part-*.parquet"))[1]
    lost = set(pq.read_table(gone, columns=["run_id"]).column(0).to_pylist())
    gone.unlink()
    res = jaxdyn.load("mm", root=root)
    assert not lost & set(res.runs.run_id)
    c = res.curves(columns=["loss"])
    assert not lost & set(c.run_id) and len(c) == (N_MM - len(lost)) * NLOG_MM
    q = jaxdyn.query("SELECT count(*) AS n, count(DISTINCT run_id) AS u FROM curves",
                     root=root)
    assert q.n[0] == len(c) and q.u[0] == N_MM - len(lost)
    assert sweep_status("mm", root)["runs_done"] == N_MM - len(lost)


# ---- status --------------------------------------------------------------------------------
def _copy_sweep(sweeps, tmp_path, text=MM):
    """A copy of the mm sweep whose manifest points at a sweep file we control."""
    root = tmp_path / "res"
    shutil.copytree(sweeps / "mm", root / "mm")
    src = tmp_path / "mm.toml"
    src.write_text(text)
    man = root / "mm" / "manifest.json"
    m = json.loads(man.read_text())
    man.write_text(json.dumps({**m, "source_file": str(src), "source": text}))
    for p in (root / "mm").glob("progress-*.json"):
        p.unlink()
    return root, src


def test_status_complete_diverged_and_file_changes(sweeps, cli, tmp_path):
    root, src = _copy_sweep(sweeps, tmp_path)
    runs = parts_frame(root / "mm", "runs")
    n_div = int((runs.status != "ok").sum())
    assert n_div > 0  # lr = 1 takes runs past |state| = 100
    s = sweep_status("mm", root)
    assert (s["state"], s["runs_done"], s["runs_total"], s["diverged"], s["parts"]) == \
        ("complete", N_MM, N_MM, n_div, 4)
    assert s["file"]["state"] == "unchanged"
    code, out, err = cli("status", "mm", "--out", root)
    assert code == 0, err
    assert "complete" in out and f"{N_MM:,} of {N_MM:,} done" in out and \
        f"{n_div:,} diverged" in out and "unchanged" in out

    src.write_text(MM + "\n# a comment\n")
    code, out, _ = cli("status", "--out", root)  # no name: every sweep under root
    assert "file changed since the run (comments or formatting only)" in out
    src.write_text(MM.replace("steps = 200", "steps = 300"))
    code, out, _ = cli("status", "mm", "--out", root)
    assert "file changed since the run (different settings" in out
    src.unlink()
    code, out, _ = cli("status", "mm", "--out", root)
    assert "file missing" in out
    code, out, err = cli("status", "nope", "--out", root)
    assert code == 2 and "no sweep 'nope'" in err and out == ""


def test_status_running_stopped_stalled(sweeps, cli, tmp_path):
    """A progress record of a live process (a child we control), then of the same process
    dead; a record from another host that stopped updating; recent throughput from the
    commit times of the runs parts."""
    root, src = _copy_sweep(sweeps, tmp_path)
    d = root / "mm"
    parts = sorted((d / "runs").glob("part-*.parquet"))
    rows = [pq.read_metadata(p).num_rows for p in parts]
    parts[-1].unlink()  # an unfinished sweep: the last chunk not done
    (d / "curves" / parts[-1].name).unlink()
    done = sum(rows[:-1])
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        time.sleep(0.3)
        S = time.time() - 0.1  # the record starts after the child: its pid is the writer's
        rec = {"pid": child.pid, "process_index": 0, "started": S, "updated": S + 20.0,
               "chunks_total": 4, "chunks_done": 3, "runs_total": N_MM, "runs_done": done,
               "steps": 200, "finished": None}
        (d / "progress-0.json").write_text(json.dumps(rec))
        # parts committed before this launch: throughput from the progress record
        for i, p in enumerate(parts[:-1]):
            os.utime(p, (S - 100 + i, S - 100 + i))
        s = sweep_status("mm", root, now=S + 21.0)
        assert s["state"] == "running" and s["runs_done"] == done
        assert s["chunks_done"] == 3 and s["chunks_total"] == 4
        rate = done / 20.0
        assert s["run_steps_per_s"] == pytest.approx(rate * 200)
        assert s["eta_s"] == pytest.approx((N_MM - done) / rate - 1.0)
        # parts committed by this launch at S, S+1, S+2: the recent rate counts the runs of
        # parts 2 and 3 over 2 s (compile time before the first commit left out)
        for i, p in enumerate(parts[:-1]):
            os.utime(p, (S + i, S + i))
        s = sweep_status("mm", root, now=S + 2.1)
        rate = (rows[1] + rows[2]) / 2.0
        assert s["run_steps_per_s"] == pytest.approx(rate * 200)
        assert s["eta_s"] == pytest.approx((N_MM - done) / rate - 0.1) and s["eta_s"] > 0
        code, out, err = cli("status", "mm", "--out", root)
        assert code == 0 and "running" in out and f"pid {child.pid}" in out and "ETA" in out
        assert "chunks 3 of 4" in out
    finally:
        child.kill()
    time.sleep(0.2)  # killed, not yet reaped (a zombie): not a live writer
    s = sweep_status("mm", root)
    assert s["state"] == "stopped"
    code, out, err = cli("status", "mm", "--out", root)
    child.wait()
    assert "stopped" in out and f"resume    jaxdyn run {src} --out {root}" in out
    assert sweep_status("mm", root)["state"] == "stopped"  # reaped: no such pid
    # a record from another host: its pid cannot be checked; stale after 10 minutes
    rec.update(host="some-other-host", started=time.time() - 3700, updated=time.time() - 3600)
    (d / "progress-0.json").write_text(json.dumps(rec))
    assert sweep_status("mm", root)["state"] == "stalled"
    rec.update(updated=time.time() - 5)
    (d / "progress-0.json").write_text(json.dumps(rec))
    assert sweep_status("mm", root)["state"] == "running"
    rec.update(finished=time.time())
    (d / "progress-0.json").write_text(json.dumps(rec))
    assert sweep_status("mm", root)["state"] == "incomplete"


# ---- plots ---------------------------------------------------------------------------------
def _png_ok(path):
    import matplotlib.image as mpimg

    img = mpimg.imread(path)
    assert img.ndim == 3 and img.shape[0] > 300 and img.shape[1] > 500
    # not blank: many distinct colours (lines, shading, text)
    assert len(np.unique(img.reshape(-1, img.shape[2]).round(2), axis=0)) > 50


def test_plot_mean_and_spread_over_seeds(sweeps, cli, tmp_path):
    from jaxdyn.results import plot

    out = tmp_path / "loss.png"
    code, so, err = cli("plot", "mm", "--x", "step", "--y", "b", "--hue", "lr", "--where",
                        "d = 100 AND lr < 0.5", "-o", out, "--out", sweeps)
    assert code == 0, err
    summary = so.split(": ", 1)[1]  # after the figure's path (which may hold any digits)
    assert "24" not in summary and "12 runs, 4 lines" in summary and "min–max" in summary
    _png_ok(out)
    info = plot("mm", "step", "b", tmp_path / "b.png", hue="lr", where="d = 100 AND lr < 0.5",
                root=sweeps)
    runs = parts_frame(sweeps / "mm", "runs", f64=True)
    curves = parts_frame(sweeps / "mm", "curves", f64=True)
    sel = runs[(runs.d == 100) & (runs.lr < 0.5)][["run_id", "lr"]]
    ref = (curves.merge(sel, on="run_id").groupby(["lr", "step"]).b
           .agg(["mean", "min", "max", "size"]).reset_index())
    got = info["data"]
    np.testing.assert_allclose(got["mean"], ref["mean"], rtol=1e-12)
    np.testing.assert_allclose(got.lo, ref["min"]) and np.testing.assert_allclose(got.hi,
                                                                                  ref["max"])
    assert (got.n == 3).all() and info["spread"] == "min–max"  # 3 seeds per point

    # runs columns: final_b against lr, one line per d, mean and ±std over seeds
    info = plot("mm", "lr", "final_b", tmp_path / "fb.png", hue="d", logx=True, spread="std",
                root=sweeps, where="status = 'ok'")
    ok = runs[runs.status == "ok"]
    ref = ok.groupby(["d", "lr"]).final_b.agg(["mean", "std"]).reset_index()
    np.testing.assert_allclose(info["data"]["mean"], ref["mean"], rtol=1e-12)
    np.testing.assert_allclose(info["data"].sd, ref["std"], rtol=1e-9)
    assert info["lines"] == 2 and info["spread"] == "±1 std"
    _png_ok(tmp_path / "fb.png")

    # diverged runs: their NaN curve values after divergence are left out, and said so
    code, so, err = cli("plot", "mm", "--x", "step", "--y", "loss", "--hue", "d", "--logy",
                        "-o", tmp_path / "all.png", "--out", sweeps)
    assert code == 0 and "non-finite" in err
    # a numeric --hue with too many values is binned (log-spaced here: lr spans 3 decades)
    import importlib

    qmod = importlib.import_module("jaxdyn.results.plot")
    old = qmod.MAX_HUE_LINES
    qmod.MAX_HUE_LINES = 3
    try:
        info = plot("mm", "step", "b", tmp_path / "bins.png", hue="lr",
                    where="lr < 0.5", root=sweeps)
    finally:
        qmod.MAX_HUE_LINES = old
    edges = np.geomspace(0.001, 0.03, qmod.HUE_BINS + 1)
    sel = runs[runs.lr < 0.5][["run_id", "lr"]].copy()
    sel["bin"] = np.clip(np.searchsorted(edges, sel.lr, side="right") - 1, 0, qmod.HUE_BINS - 1)
    ref = curves.merge(sel, on="run_id").groupby(["bin", "step"]).b.mean().reset_index()
    got = info["data"].sort_values(["hue", "x"], ignore_index=True)
    assert list(got.hue) == list(ref["bin"]) and len(set(got.hue)) == 4
    np.testing.assert_allclose(got["mean"], ref.b, rtol=1e-12)
    assert info["hue_bins"][0].startswith("lr ∈ [0.001, ")
    _png_ok(tmp_path / "bins.png")
    # a few runs without --hue: one line each
    info = plot("mm", "step", "loss", tmp_path / "few.png", where="lr = 0.01", root=sweeps)
    assert info["per_run"] and info["lines"] == 6


@pytest.mark.parametrize("args, words", [
    (["nope", "--x", "step", "--y", "loss"], ["no sweep 'nope'"]),
    (["mm", "--x", "step", "--y", "nope"], ["--y nope: no such column", "curves columns"]),
    (["mm", "--x", "nope", "--y", "loss"], ["--x nope: no such column"]),
    (["mm", "--x", "step", "--y", "loss", "--hue", "nope"], ["--hue nope", "runs columns"]),
    (["mm", "--x", "lr", "--y", "loss"], ["runs column", "final_loss"]),
    (["mm", "--x", "step", "--y", "final_b"], ["runs column"]),
    (["mm", "--x", "step", "--y", "loss", "--where", "nope > 1"], ["--where", "nope"]),
    (["mm", "--x", "step", "--y", "loss", "--where", "d > 1000"], ["no runs match"]),
])
def test_plot_errors(sweeps, cli, tmp_path, args, words):
    out = tmp_path / "p.png"
    code, so, err = cli("plot", *args, "-o", out, "--out", sweeps)
    assert code == 2 and err.startswith("jaxdyn: error: ") and "Traceback" not in err, err
    for w in words:
        assert w in err, err
    assert not out.exists()


def test_analysis_commands_do_not_import_jax(sweeps, tmp_path):
    code = (f"import sys; from jaxdyn.cli import main; r = {str(sweeps)!r}; "
            f"assert main(['status', '--out', r]) == 0; "
            f"assert main(['query', 'SELECT count(*) FROM runs', '--out', r]) == 0; "
            f"assert main(['plot', 'mm', '--x', 'step', '--y', 'b', '-o', "
            f"{str(tmp_path / 'p.png')!r}, '--out', r]) == 0; "
            f"assert main(['report', 'mm', '-o', {str(tmp_path / 'r.html')!r}, "
            f"'--out', r]) == 0; "
            f"import jaxdyn.explore._serve, jaxdyn.explore._export; "
            f"print('JAX' if 'jax' in sys.modules else 'NOJAX')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().endswith("NOJAX")


# ---- reading while another process writes -------------------------------------------------
WRITER = """
name = "live"
experiment = "eos.mean_model"
steps = 100
seeds = 2
log = { every = 10 }
[fixed]
d = 100
[grid]
lr = { start = 1e-3, stop = 3e-2, num = 1500, spacing = "log" }
"""


def test_reading_while_another_process_writes(tmp_path):
    """``jaxdyn run`` in a subprocess writes 3000 runs in chunks of 8 while this process
    reads runs, curves, SQL and status in a loop: never an error, never a partial part.
    (375 chunks: about 3 s of writing here, so that several reads land inside it; 2000 runs
    in chunks of 16 finished in under a second once the writer got faster.)"""
    f = tmp_path / "live.toml"
    f.write_text(WRITER)
    root = tmp_path / "res"
    total, n_log = 3000, 11
    env = {**os.environ, "JAXDYN_CACHE_DIR": str(tmp_path.parent / "jaxdyn-test-cache")}
    proc = subprocess.Popen([sys.executable, "-m", "jaxdyn", "run", str(f), "--out", str(root),
                             "--chunk-size", "8", "--quiet"], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen, last, last_status, reads = set(), 0, 0, 0
    try:
        while not (root / "live" / "manifest.json").exists():
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.05)
        while True:
            running = proc.poll() is None
            res = jaxdyn.load("live", root=root)
            runs = res.runs
            n = len(runs)
            assert n >= last, "runs went backwards"
            assert runs.run_id.is_unique if n else True
            c = res.curves(columns=["loss"])
            k = c.groupby("run_id").size() if len(c) else pd.Series(dtype=int)
            # every run in runs has all its curve rows; nothing partial in curves either
            assert (k.reindex(runs.run_id if n else []) == n_log).all()
            assert (k == n_log).all() and set(k.index) >= set(runs.run_id if n else [])
            q = jaxdyn.query(f"SELECT count(*) AS n, count(DISTINCT r.run_id) AS u, "
                             f"count(*) FILTER (WHERE k <> {n_log}) AS bad FROM runs r "
                             f"JOIN (SELECT run_id, count(*) AS k FROM curves GROUP BY run_id) "
                             f"USING (run_id)", sweeps=["live"], root=root)
            assert q.bad[0] == 0 and q.n[0] == q.u[0] >= n
            s = sweep_status("live", root)
            assert s["runs_done"] >= max(last_status, n) and s["runs_total"] == total
            last, last_status = n, s["runs_done"]
            seen.add(n)
            reads += 1
            if not running:
                break
    finally:
        if proc.poll() is None:
            proc.kill()
        out, err = proc.communicate()
    assert proc.returncode == 0, err
    intermediate = {n for n in seen if 0 < n < total}
    print(f"{reads} reads; run counts seen: {sorted(seen)}")
    assert len(intermediate) >= 3, f"the reads did not overlap the writes: {sorted(seen)}"
    res = jaxdyn.load("live", root=root)
    assert len(res.runs) == total and res.runs.run_id.is_unique
    assert len(res.curves(columns=["loss"])) == total * n_log
    s = sweep_status("live", root)
    assert s["state"] == "complete" and s["runs_done"] == total
    assert not list((root / "live").rglob(".tmp-*"))
