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


def parse(text, overrides=()):
    return spec.parse(text, experiments.params_of, file="x.toml", overrides=overrides)


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
