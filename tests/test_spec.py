"""Sweep files: grid expansion, run identity, and every bad input → one message, status 2,
nothing written."""

import pytest

from jaxdyn import experiments, spec

GOOD = """
name = "s"
experiment = "eos.mean_model"
steps = 10
seeds = 2
log = { every = 5 }
[fixed]
init_scale = 0.02
[grid]
lr = { start = 1e-3, stop = 1e-1, num = 3, spacing = "log" }
d = [50, 100]
"""


def parse(text, overrides=(), **kw):
    return spec.parse(text, experiments.params_of, file="x.toml", overrides=overrides, **kw)


def test_grid_expansion_and_defaults():
    sw = parse(GOOD)
    runs = sw.runs()
    assert len(runs) == sw.n_runs() == 3 * 2 * 2
    assert sorted({r.hp["lr"] for r in runs}) == pytest.approx([1e-3, 1e-2, 1e-1])
    assert {r.hp["d"] for r in runs} == {50, 100}
    assert all(r.hp["init_scale"] == 0.02 and r.hp["b0"] == 0.0 for r in runs)  # default
    assert {r.seed for r in runs} == {0, 1}
    assert len({r.run_id for r in runs}) == len(runs)


def test_zip_sample_and_seed_list():
    text = (GOOD.replace("d = [50, 100]", "").replace("[fixed]\ninit_scale = 0.02", "")
            .replace("seeds = 2", "seeds = [7, 11]")
            + "[zip]\nd = [50, 100, 200, 400]\ninit_scale = [0.1, 0.2, 0.3, 0.4]\n"
            + "[sample]\ncount = 5\nseed = 3\n")
    sw = parse(text)
    pts = list(sw.points())
    assert len(pts) == 5 and sw.n_runs() == 10
    pairs = {(p["d"], p["init_scale"]) for p in pts}
    assert pairs <= {(50, 0.1), (100, 0.2), (200, 0.3), (400, 0.4)}  # zipped, not crossed
    assert list(parse(text).points()) == pts  # same sample seed, same subset
    assert {r.seed for r in sw.runs()} == {7, 11}


def test_sample_fraction_is_seeded_subset():
    text = GOOD + "[sample]\nfraction = 0.5\nseed = 1\n"
    a, b = list(parse(text).points()), list(parse(text.replace("seed = 1", "seed = 2")).points())
    full = list(parse(GOOD).points())
    assert len(a) == 3 and all(p in full for p in a)
    assert a != b or len(full) <= 3


def test_run_id_depends_only_on_the_run():
    """The same run has the same id in every sweep, whatever else is in the grid."""
    small = parse(GOOD)
    bigger = parse(GOOD.replace("num = 3", "num = 5").replace("[50, 100]", "[100, 50, 25]"))
    ids_small = {(r.hp["lr"], r.hp["d"], r.seed): r.run_id for r in small.runs()}
    ids_big = {(r.hp["lr"], r.hp["d"], r.seed): r.run_id for r in bigger.runs()}
    shared = set(ids_small) & set(ids_big)
    assert len(shared) >= 8
    assert all(ids_small[k] == ids_big[k] for k in shared)
    # ...and changes with anything that changes the run
    other = parse(GOOD.replace("init_scale = 0.02", "init_scale = 0.03"))
    assert not {r.run_id for r in other.runs()} & {r.run_id for r in small.runs()}


def test_set_overrides():
    sw = parse(GOOD, overrides=["steps=20", "d=75", "log.every=4", "name=t2"])
    assert sw.steps == 20 and sw.name == "t2" and sw.log.every == 4
    assert {r.hp["d"] for r in sw.runs()} == {75} and "d" not in sw.grid
    assert sw.hash != parse(GOOD).hash


def test_log_schedules():
    assert spec.LogSchedule(every=100).steps(250).tolist() == [0, 100, 200, 250]
    s = spec.LogSchedule(points=50, spacing="log").steps(10**6)
    assert s[0] == 0 and s[-1] == 10**6 and (s[1:] > s[:-1]).all()
    ratios = s[10:][1:] / s[10:][:-1]  # log-spaced: constant ratio once past the integers
    assert ratios.max() / ratios.min() < 1.05


BAD = [
    ("TOML syntax", GOOD.replace('steps = 10', 'steps = = 10'), None, "not valid TOML"),
    ("unknown experiment", GOOD.replace("eos.mean_model", "eos.mean_modle"), "experiment",
     "did you mean 'eos.mean_model'"),
    ("misspelled hyperparameter", GOOD.replace("init_scale", "init_scael"), "fixed.init_scael",
     "did you mean 'init_scale'"),
    ("misspelled top-level key", GOOD.replace("seeds = 2", "sedes = 2"), "sedes",
     "did you mean 'seeds'"),
    ("wrong type", GOOD.replace("init_scale = 0.02", 'init_scale = "big"'), "fixed.init_scale",
     "expected float"),
    ("wrong type in grid", GOOD.replace("[50, 100]", "[50, 1.5]"), "grid.d[1]", "expected int"),
    ("empty grid axis", GOOD.replace("[50, 100]", "[]"), "grid.d", "empty list"),
    ("zip of unequal lengths", GOOD + "[zip]\nb0 = [0.0, 0.1]\ninit_scale = [0.1]\n", "zip",
     "equal lengths"),
    ("fraction above 1", GOOD + "[sample]\nfraction = 1.5\n", "sample.fraction", "(0, 1]"),
    ("fraction zero", GOOD + "[sample]\nfraction = 0\n", "sample.fraction", "(0, 1]"),
    ("steps zero", GOOD.replace("steps = 10", "steps = 0"), "steps", "positive integer"),
    ("steps negative", GOOD.replace("steps = 10", "steps = -5"), "steps", "positive integer"),
    ("missing steps", GOOD.replace("steps = 10", ""), "steps", "missing required key"),
    ("path in name", GOOD.replace('name = "s"', 'name = "../escape"'), "name", "folder name"),
    ("bad precision", GOOD + 'precision = "float16"\n', "precision", "float32"),
    ("bad log", GOOD.replace("log = { every = 5 }", "log = { every = 0 }"), "log.every", ">= 1"),
    ("bad spacing", GOOD.replace('spacing = "log"', 'spacing = "cubic"'), "grid.lr.spacing",
     "'linear' or 'log'"),
    ("key twice", GOOD.replace("[fixed]", "[fixed]\nd = 3"), "grid.d", "also set"),
]


@pytest.mark.parametrize("label,text,key,fragment", BAD, ids=[b[0] for b in BAD])
def test_bad_input_exits_2_with_message_and_writes_nothing(label, text, key, fragment,
                                                           write_sweep, cli, tmp_path):
    # "precision" is appended after a table header above; put top-level keys first.
    if text.endswith('precision = "float16"\n'):
        text = 'precision = "float16"\n' + text.replace('precision = "float16"\n', "")
    path = write_sweep(text)
    out = tmp_path / "out"
    code, stdout, stderr = cli("run", path, "--out", out)
    assert code == 2
    lines = [line for line in stderr.strip().splitlines() if line]
    assert len(lines) == 1, stderr
    msg = lines[0]
    assert str(path) in msg and fragment in msg, msg
    if key:
        assert f"'{key}'" in msg, msg
    assert "Traceback" not in stderr
    assert not out.exists()  # nothing written


def test_missing_file_and_bad_chunk_size(cli, tmp_path, write_sweep):
    code, _, err = cli("run", tmp_path / "nope.toml", "--out", tmp_path / "o")
    assert code == 2 and "no such file" in err
    code, _, err = cli("run", write_sweep(GOOD), "--out", tmp_path / "o", "--chunk-size", "0")
    assert code == 2 and "--chunk-size" in err
    assert not (tmp_path / "o").exists()


def test_huge_grid_refused_before_expansion(cli, write_sweep, tmp_path):
    text = GOOD.replace("num = 3", "num = 100000").replace("seeds = 2", "seeds = 100")
    code, _, err = cli("run", write_sweep(text), "--out", tmp_path / "o")
    assert code == 2 and "20,000,000 runs" in err and "--yes" in err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("label,old,new,count", [
    # seeds × lr points × d values: tuple(range(10**12)) or geomspace(..., 10**12) would
    # fail to allocate (MemoryError) before the count could be checked
    ("seeds", "seeds = 2", "seeds = 1000000000000", "6,000,000,000,000"),
    ("range num", "num = 3", "num = 1000000000000", "4,000,000,000,000"),
], ids=["seeds=10**12", "num=10**12"])
def test_huge_counts_refused_from_the_counts_before_any_allocation(label, old, new, count, cli,
                                                                   write_sweep, tmp_path):
    """Refused like test_huge_grid_refused_before_expansion (status 2, the run count, --yes
    named), but as more than any sweep can hold: --yes would not help, so it says so, and
    with --yes it is refused the same way rather than crashed on."""
    path = write_sweep(GOOD.replace(old, new))
    for yes in ((), ("--yes",)):
        code, _, err = cli("run", path, "--out", tmp_path / "o", *yes)
        assert code == 2 and err.count("\n") == 1 and "Traceback" not in err, err
        assert (f"{path}: the sweep has {count} runs, more than the 1,000,000,000 one sweep "
                f"can hold (even with --yes)") in err
        assert not (tmp_path / "o").exists()


def test_huge_grid_before_sample_refused(cli, write_sweep, tmp_path):
    """A [sample] of 5 points from 10**12 would still expand the whole axis first."""
    path = write_sweep(GOOD.replace("num = 3", "num = 1000000000000")
                       + "[sample]\ncount = 5\n")
    code, _, err = cli("run", path, "--out", tmp_path / "o", "--yes")
    assert code == 2 and "Traceback" not in err, err
    assert "'sample'" in err and "2,000,000,000,000 points before sampling" in err
    assert not (tmp_path / "o").exists()


def test_long_integer_range_counts_as_num_until_checked():
    """An integer range longer than _INT_RANGE_EXPAND is counted as ``num`` points ("up to":
    rounding may merge them) before the check, and expanded exactly once it is allowed."""
    text = GOOD.replace("d = [50, 100]", "d = { start = 1, stop = 100, num = 2000000 }")
    with pytest.raises(spec.TooManyRuns, match=r"has up to 12,000,000 runs \(more than "
                                               r"5,000,000\); pass --yes") as e:
        parse(text, max_runs=spec.MAX_RUNS_UNCONFIRMED)
    assert e.value.n_runs == 12_000_000 and not e.value.exact
    sw = parse(text)  # confirmed: expanded, and rounding merged the points
    assert sw.grid["d"] == list(range(1, 101)) and sw.n_runs() == 600
    assert all(type(v) is int for v in sw.grid["d"])


def test_sampled_points_are_the_kept_points_of_the_full_product_in_order():
    """[sample] picks points by index into the product without walking it: the same points,
    in the same order, as filtering the full product with the sample's kept indices."""
    import numpy as np

    text = (GOOD.replace("num = 3", "num = 7") + "[zip]\nb0 = [0.0, 0.1, 0.2]\n"
            "init_scale = [0.1, 0.2, 0.3]\n").replace("[fixed]\ninit_scale = 0.02", "")
    for sample in ("count = 11\nseed = 4", "fraction = 0.3\nseed = 9", "count = 42"):
        sw = parse(text + f"[sample]\n{sample}\n")
        full = list(parse(text).points())
        assert len(full) == 7 * 2 * 3
        seed = int(sw.sample.get("seed", 0))
        keep = set(np.random.default_rng(seed).choice(len(full), size=sw.n_points(),
                                                       replace=False).tolist())
        expected = [p for i, p in enumerate(full) if i in keep]
        assert list(sw.points()) == expected and len(expected) == sw.n_points()
    # the product order: lr slowest, then d, then the zipped pair fastest
    lr0 = full[0]["lr"]
    assert full[:4] == [dict(lr=lr0, d=50, b0=0.0, init_scale=0.1),
                        dict(lr=lr0, d=50, b0=0.1, init_scale=0.2),
                        dict(lr=lr0, d=50, b0=0.2, init_scale=0.3),
                        dict(lr=lr0, d=100, b0=0.0, init_scale=0.1)]
