"""Faults stay contained: numerical divergence per run, disk errors per part, hostile sweep
files per message. Host memory stays flat over a long sweep."""

import contextlib
import errno
import io
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import jaxdyn
from jaxdyn import cli, engine, experiments, spec
from jaxdyn.store import SweepStore

STRADDLE = """
name = "straddle"
experiment = "eos.mean_model"
steps = 2000
seeds = [0, 1]
diverge_above = 100.0
log = { every = 100 }
[fixed]
d = 100
[grid]
lr = { start = 1e-3, stop = 10.0, num = 40, spacing = "log" }
"""


def test_divergence_straddling_grid_leaves_neighbours_untouched(cli, write_sweep, tmp_path):
    """Above some η the mean model's bias runs off (|b| passes 100): those runs are frozen
    and flagged; every other run is identical to the same run in a grid without them."""
    code, out, err = cli("run", write_sweep(STRADDLE), "--out", tmp_path / "a",
                         "--chunk-size", 80)  # one chunk holds diverging and stable runs
    assert code == 0, err
    r = jaxdyn.load(tmp_path / "a" / "straddle").runs.set_index("run_id")
    bad, good = r[r.status == "diverged"], r[r.status == "ok"]
    assert len(bad) > 10 and len(good) > 10
    assert (r[r.lr <= 0.1].status == "ok").all()  # small steps never run off
    assert r.wall_s.nunique() == 1  # diverging and stable runs shared one chunk
    assert (bad.diverged_step > 0).all() and good.diverged_step.isna().all()
    assert (bad.final_b.abs() < 100).all()  # frozen at the last state inside the bound
    stable = [float(lr) for lr, g in r.groupby("lr") if (g.status == "ok").all()]
    grid = STRADDLE.split("[grid]")[0] + f"[grid]\nlr = {stable!r}\n"
    code, _, err = cli("run", write_sweep(grid, "safe.toml"), "--out", tmp_path / "b",
                       "--chunk-size", 7)
    assert code == 0, err
    r2 = jaxdyn.load(tmp_path / "b" / "straddle").runs.set_index("run_id")
    assert (r2.status == "ok").all() and set(r2.index) <= set(good.index)
    assert len(r2) == 2 * len(stable) >= 20
    for col in ("final_b", "final_a_sum", "final_loss"):
        np.testing.assert_array_equal(r2[col], good.loc[r2.index, col])
    c = jaxdyn.load(tmp_path / "a" / "straddle").curves(columns=["b"],
                                                        run_ids=list(bad.index))
    for rid, g in c.groupby("run_id"):
        after = g[g.step > bad.loc[rid, "diverged_step"]]
        assert after.b.isna().all()


def test_unwritable_output_folder(cli, write_sweep, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    code, _, err = cli("run", write_sweep(STRADDLE), "--out", blocker / "out")
    assert code == 2 and "cannot create output folder" in err
    assert blocker.read_text() == "not a folder"


def test_full_disk_stops_with_message_and_keeps_completed_parts(cli, write_sweep, tmp_path,
                                                                 monkeypatch):
    path = write_sweep(STRADDLE)
    import pyarrow.parquet as pq

    real = pq.write_table
    calls = {"n": 0}

    def failing(table, where, *a, **kw):
        calls["n"] += 1
        if calls["n"] > 6:  # three chunks (curves + runs each), then the disk is full
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(table, where, *a, **kw)

    monkeypatch.setattr(pq, "write_table", failing)
    code, _, err = cli("run", path, "--out", tmp_path, "--chunk-size", 8)
    assert code == 2 and "disk full" in err and "re-run to resume" in err
    folder = tmp_path / "straddle"
    assert len(list((folder / "runs").glob("part-*"))) == 3
    assert len(list((folder / "curves").glob("part-*"))) == 3
    assert len(jaxdyn.load(folder).runs) == 24
    monkeypatch.setattr(pq, "write_table", real)
    code, out, err = cli("run", path, "--out", tmp_path, "--chunk-size", 8)
    assert code == 0 and "24 already done" in out
    runs = jaxdyn.load(folder).runs
    assert len(runs) == 80 and runs.run_id.is_unique
    assert not list(folder.rglob(".tmp-*"))


def test_paths_cannot_escape_the_output_folder(cli, write_sweep, tmp_path):
    for bad in ("../up", "/etc/evil", "a/b", "..", ".hidden"):
        text = STRADDLE.replace('name = "straddle"', f'name = "{bad}"')
        code, _, err = cli("run", write_sweep(text), "--out", tmp_path / "o")
        assert code == 2 and "'name'" in err, bad
    # a sweep folder that is a symbolic link is not written through
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "o").mkdir(exist_ok=True)
    os.symlink(tmp_path / "elsewhere", tmp_path / "o" / "straddle")
    code, _, err = cli("run", write_sweep(STRADDLE), "--out", tmp_path / "o")
    assert code == 2 and "symbolic link" in err
    assert not list((tmp_path / "elsewhere").iterdir())


# ---- hostile sweep files: always status 0 or 2 with a message, never a traceback --------------
scalars = st.one_of(st.integers(-10**20, 10**20), st.floats(allow_nan=True), st.booleans(),
                    st.text(max_size=12), st.none())
values = st.recursive(scalars, lambda ch: st.one_of(st.lists(ch, max_size=4),
                                                    st.dictionaries(st.text(max_size=8), ch,
                                                                    max_size=4)),
                      max_leaves=12)
KEYS = list(spec.SCHEMA_KEYS) + ["lr", "d", "init_scale", "every", "points", "fraction"]


def _toml_value(v):
    if v is None:
        return '""'
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return "nan" if v != v else ("inf" if v == float("inf") else
                                     "-inf" if v == float("-inf") else repr(v))
    if isinstance(v, int):
        return str(v)
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"').encode(
            "unicode_escape").decode().replace("\\\\", "\\\\") + '"'
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    return "{ " + ", ".join(f'"{k}" = {_toml_value(x)}' for k, x in v.items()) + " }"


documents = st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=6), values, max_size=8)


def _run_cli(args):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = cli.main(args)
        except SystemExit as e:  # argparse
            code = e.code
    return code, out.getvalue(), err.getvalue()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                   HealthCheck.function_scoped_fixture])
@given(doc=documents, raw=st.text(max_size=200), use_raw=st.booleans())
def test_random_sweep_files_end_in_status_0_or_2(doc, raw, use_raw, tmp_path):
    if use_raw:
        text = raw
    else:
        # a valid skeleton, then random keys: validation must catch whatever they break
        base = {"name": "fz", "experiment": "eos.mean_model", "steps": 3}
        base.update(doc)
        text = "\n".join(f'"{k}" = {_toml_value(v)}' for k, v in base.items())
    path = tmp_path / "fuzz.toml"
    path.write_text(text)
    code, out, err = _run_cli(["run", str(path), "--out", str(tmp_path / "o"), "--quiet"])
    assert code in (0, 2), (code, err)
    assert "Traceback" not in err
    if code == 2:
        assert err.startswith("jaxdyn: error: ") and err.count("\n") == 1, err


# ---- memory ---------------------------------------------------------------------------------
def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def test_host_memory_flat_over_many_chunks(write_sweep, tmp_path):
    path = write_sweep(STRADDLE.replace("num = 40", "num = 3000").replace("steps = 2000",
                                                                           "steps = 200"))
    sw = spec.load(path, experiments.params_of)
    exp = experiments.get(sw.experiment)
    store = SweepStore(tmp_path, sw.name)
    store.open(sw)
    rss = []
    engine.run_sweep(sw, exp, store, chunk_size=50,
                     progress=lambda ev, **kw: rss.append(_rss_mb()) if ev == "chunk" else None)
    store.close()
    assert len(rss) == 120
    growth = rss[-1] - rss[20]
    print(f"RSS after chunk 20: {rss[20]:.1f} MB, after chunk 120: {rss[-1]:.1f} MB")
    assert growth < 25, rss[::10]
