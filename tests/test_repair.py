"""Damaged results folders: checked on resume, repaired or refused, never trusted (issue 16).

Each test damages a finished folder the way a disk, a user or a crash does, then checks that
``jaxdyn run`` ends with exactly the tables of an undamaged run (or refuses with one message
and exit 2, changing nothing), and that ``status`` and ``query`` say what is wrong without
failing for the other sweeps.
"""

import json
import shutil

import pandas as pd
import pyarrow.parquet as pq
import pytest

from jaxdyn import store

SWEEP = """
name = "rep"
experiment = "eos.mean_model"
steps = 40
seeds = 3
log = { every = 10 }
[grid]
lr = { start = 0.001, stop = 0.02, num = 8, spacing = "log" }
"""
N_RUNS, N_LOG = 24, 5


def tables(folder):
    runs = pq.read_table(folder / "runs").to_pandas().drop(columns="wall_s")
    curves = pq.read_table(folder / "curves").to_pandas()
    return (runs.sort_values("run_id").reset_index(drop=True),
            curves.sort_values(["run_id", "step"]).reset_index(drop=True))


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An undamaged run of SWEEP, and the sweep file."""
    from jaxdyn.cli import main

    d = tmp_path_factory.mktemp("ref")
    path = d / "rep.toml"
    path.write_text(SWEEP)
    assert main(["run", str(path), "--out", str(d / "res"), "--chunk-size", "4",
                 "--quiet"]) == 0
    return path, tables(d / "res" / "rep")


@pytest.fixture
def done(reference, tmp_path, cli):
    """A finished copy of the sweep to damage: (sweep file, root, folder, runs part paths)."""
    path, _ = reference
    root = tmp_path / "res"
    code, _, err = cli("run", path, "--out", root, "--chunk-size", 4, "--quiet")
    assert code == 0, err
    folder = root / "rep"
    parts = sorted((folder / "runs").glob("part-*.parquet"))
    assert len(parts) == 6
    return path, root, folder, parts


def truncate(p):
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])


def assert_repaired(reference, folder):
    _, (r_ref, c_ref) = reference
    r, c = tables(folder)
    assert r.run_id.is_unique and len(r) == N_RUNS
    assert not c.duplicated(["run_id", "step"]).any()
    pd.testing.assert_frame_equal(r, r_ref)  # bitwise: same program, same inputs
    pd.testing.assert_frame_equal(c, c_ref)


def test_part_names_record_their_row_counts(done):
    _, _, folder, parts = done
    for p in parts:
        rows = store.part_rows(p.name)
        assert rows == {"runs": pq.read_metadata(p).num_rows,
                        "curves": pq.read_metadata(folder / "curves" / p.name).num_rows}
        assert rows["curves"] == rows["runs"] * N_LOG


@pytest.mark.parametrize("how", ["truncate runs", "truncate curves", "delete curves",
                                 "delete runs", "rows differ"])
def test_damaged_parts_are_moved_aside_and_rerun(how, done, reference, cli):
    path, root, folder, parts = done
    victim = parts[2]
    if how == "truncate runs":
        truncate(victim)
    elif how == "truncate curves":
        truncate(folder / "curves" / victim.name)
    elif how == "delete curves":
        (folder / "curves" / victim.name).unlink()
    elif how == "delete runs":
        victim.unlink()
    else:  # a whole, readable part that is not what was committed (rows lost)
        t = pq.read_table(folder / "curves" / victim.name)
        pq.write_table(t.slice(0, t.num_rows - 1), folder / "curves" / victim.name)

    # status names the damage and the command that repairs it; it does not say complete
    code, out, err = cli("status", "rep", "--out", root)
    assert code == 0, err
    assert out.splitlines()[0].split()[-1] != "complete"
    assert "damaged" in out and victim.name in out
    assert f"jaxdyn run {path}" in out

    code, out, err = cli("run", path, "--out", root, "--chunk-size", 4)
    assert code == 0, err
    assert "repaired   1 damaged part(s)" in out and "4 run now" in out, out
    moved = [p.relative_to(folder / "damaged").parts for p in
             (folder / "damaged").rglob("part-*.parquet")]
    assert moved and all(name == victim.name for _, name in moved)
    assert_repaired(reference, folder)
    code, out, _ = cli("status", "rep", "--out", root)
    assert out.splitlines()[0].split()[-1] == "complete"
    assert "repaired  1 damaged part(s) were moved to" in out


def test_a_copied_part_is_not_read_twice(done, reference, cli):
    """Runs that already sit in another part (a part copied by hand) are moved aside."""
    path, root, folder, parts = done
    dup = parts[1].name[:-len(".parquet")] + "x.parquet"  # no row record: an old-style name
    for t in ("runs", "curves"):
        shutil.copy(folder / t / parts[1].name, folder / t / dup)
    code, out, err = cli("run", path, "--out", root, "--chunk-size", 4)
    assert code == 0, err
    assert "0 run now" in out and "repaired   1" in out
    assert_repaired(reference, folder)


def test_query_and_status_of_other_sweeps_go_on(done, cli, tmp_path):
    path, root, folder, parts = done
    other = tmp_path / "other.toml"
    other.write_text(SWEEP.replace('"rep"', '"other"').replace("seeds = 3", "seeds = 1"))
    assert cli("run", other, "--out", root, "--quiet")[0] == 0
    truncate(folder / "curves" / parts[0].name)
    (root / "broken").mkdir()
    (root / "broken" / "manifest.json").write_text("{not json")

    code, out, err = cli("status", "--out", root)
    assert code == 0, err
    assert "broken  unreadable" in out and "other  (eos.mean_model)  complete" in out
    assert "rep  (eos.mean_model)  damaged" in out

    code, out, err = cli("query", "SELECT sweep, count(*) AS n FROM curves GROUP BY sweep "
                                  "ORDER BY sweep", "--out", root)
    assert code == 0, err
    assert "broken" in err and "damaged part(s) left out" in err
    lines = out.splitlines()[1:]
    assert lines[0].split() == ["other", str(8 * N_LOG)]
    assert lines[1].split() == ["rep", str((N_RUNS - 4) * N_LOG)]
    # named explicitly, an unreadable sweep is an error
    code, out, err = cli("query", "broken", "SELECT 1", "--out", root)
    assert code == 2 and "broken" in err and "manifest" in err


@pytest.mark.parametrize("how", ["garbage", "not an object", "deleted", "future version"])
def test_a_folder_without_a_sound_manifest_is_never_adopted(how, done, cli):
    path, root, folder, parts = done
    man = folder / "manifest.json"
    if how == "garbage":
        man.write_text("{ this is not json")
    elif how == "not an object":
        man.write_text("[1, 2, 3]")
    elif how == "deleted":
        man.unlink()
    else:
        m = json.loads(man.read_text())
        m["schema_version"] = store.SCHEMA_VERSION + 1
        man.write_text(json.dumps(m))
    before = sorted(p.relative_to(root) for p in root.rglob("*"))
    code, out, err = cli("run", path, "--out", root)
    assert code == 2 and out == ""
    assert "--force" in err and str(folder) in err
    if how == "future version":
        assert "newer jaxdyn" in err
    assert sorted(p.relative_to(root) for p in root.rglob("*")) == before  # nothing changed

    code, out, err = cli("run", path, "--out", root, "--force", "--chunk-size", 4)
    assert code == 0, err
    aside = [p for p in root.iterdir() if p.name.startswith("rep.replaced-")]
    assert len(aside) == 1 and len(list((aside[0] / "runs").glob("part-*"))) == 6
    assert f"{N_RUNS} run now" in out


def test_a_different_sweep_never_adopts_parts_left_without_manifest(done, cli, tmp_path):
    """The manifest deleted, then another sweep of the same name: refused, not mixed."""
    path, root, folder, parts = done
    (folder / "manifest.json").unlink()
    other = tmp_path / "other.toml"
    other.write_text(SWEEP.replace("seeds = 3", "seeds = 1"))
    code, out, err = cli("run", other, "--out", root)
    assert code == 2 and "without its manifest.json" in err
    assert not (folder / "manifest.json").exists()


def test_force_twice_in_one_second_never_collides(done, cli, tmp_path):
    path, root, folder, parts = done
    other = tmp_path / "other.toml"
    other.write_text(SWEEP.replace("seeds = 3", "seeds = 1"))
    for f in (other, path, other):
        code, _, err = cli("run", f, "--out", root, "--force", "--quiet")
        assert code == 0, err
    assert len([p for p in root.iterdir() if p.name.startswith("rep.replaced-")]) == 3


@pytest.mark.slow
def test_100k_runs_with_parts_truncated_and_deleted_end_bitwise_identical(tmp_path, cli):
    """The issue's acceptance case: a 100,000-run sweep, 5 parts truncated and 1 deleted at
    random, is after one `jaxdyn run` bitwise the undamaged sweep, and status shows the
    repair."""
    import random

    path = tmp_path / "big.toml"
    path.write_text('name = "big"\nexperiment = "eos.mean_model"\nsteps = 20\nseeds = 100\n'
                    'log = { every = 10 }\n[grid]\n'
                    'lr = { start = 1e-4, stop = 0.2, num = 1000, spacing = "log" }\n')
    ref, dmg = tmp_path / "ref", tmp_path / "dmg"
    code, out, err = cli("run", path, "--out", ref, "--chunk-size", 2000, "--quiet")
    assert code == 0 and "100000 total" in out, err
    shutil.copytree(ref / "big", dmg / "big")
    folder = dmg / "big"
    parts = sorted(p.name for p in (folder / "runs").glob("part-*.parquet"))
    assert len(parts) >= 40
    rng = random.Random(16)
    victims = rng.sample(parts, 6)
    for name in victims[:5]:
        truncate(folder / rng.choice(["runs", "curves"]) / name)
    (folder / rng.choice(["runs", "curves"]) / victims[5]).unlink()

    code, out, err = cli("status", "big", "--out", dmg)
    assert "6 part(s)" in out and "repair    jaxdyn run" in out, out
    code, out, err = cli("run", path, "--out", dmg, "--chunk-size", 2000)
    assert code == 0, err
    assert "repaired   6 damaged part(s)" in out and "12000 run now" in out, out
    r_ref, c_ref = tables(ref / "big")
    r, c = tables(folder)
    assert len(r) == 100_000 and r.run_id.is_unique and len(c) == 300_000
    pd.testing.assert_frame_equal(r, r_ref)
    pd.testing.assert_frame_equal(c, c_ref)
    code, out, err = cli("status", "big", "--out", dmg)
    assert out.splitlines()[0].split()[-1] == "complete"
    assert "repaired  6 damaged part(s) were moved to" in out
