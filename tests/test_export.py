"""jaxdyn export (issue 17, item 3): one tracker run per jaxdyn run, read back with the
trackers' own readers (MlflowClient; TensorBoard's event records) and compared with the
tables."""

import math
import struct

import numpy as np
import pytest

import jaxdyn

pytest.importorskip("mlflow")
pytest.importorskip("tensorboardX")

SWEEP = """
name = "ex"
experiment = "eos.mean_model"
steps = 30
seeds = 2
log = { every = 10 }
diverge_above = 5.0
[grid]
lr = [0.01, 0.02, 40.0]
"""


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    d = tmp_path_factory.mktemp("export")
    (d / "ex.toml").write_text(SWEEP)
    jaxdyn.run(d / "ex.toml", out=d / "res", quiet=True)
    res = jaxdyn.load("ex", root=d / "res")
    assert (res.runs.status == "diverged").sum() == 2  # lr = 40: NaN curves after
    return d, res


def test_mlflow_one_run_per_run_with_params_and_curves(sweep, tmp_path, cli):
    from mlflow.tracking import MlflowClient

    d, res = sweep
    code, out, err = cli("export", "ex", tmp_path / "ml", "--to", "mlflow", "--out", d / "res")
    assert code == 0 and "exported 6 runs" in out, err
    import os

    os.environ["MLFLOW_ALLOW_FILE_STORE"] = "true"
    try:
        client = MlflowClient(tracking_uri=(tmp_path / "ml").resolve().as_uri())
        exp = client.get_experiment_by_name("ex")
        got = {r.data.tags["jaxdyn.run_id"]: r for r in client.search_runs([exp.experiment_id])}
        assert set(got) == set(res.runs.run_id)
        curves = res.curves()
        for row in res.runs.itertuples(index=False):
            r = got[row.run_id]
            assert r.data.params["lr"] == str(row.lr) and r.data.params["d"] == str(row.d)
            assert r.data.params["seed"] == str(row.seed)
            assert r.data.tags["jaxdyn.status"] == row.status
            hist = client.get_metric_history(r.info.run_id, "b")
            c = curves[curves.run_id == row.run_id].sort_values("step")
            want = [(s, v) for s, v in zip(c.step, c.b) if math.isfinite(v)]
            assert sorted((m.step, m.value) for m in hist) == want  # exact (float64)
            assert len(want) == len(c) or row.status == "diverged"
    finally:
        os.environ.pop("MLFLOW_ALLOW_FILE_STORE", None)
    code, out, err = cli("export", "ex", tmp_path / "ml", "--to", "mlflow", "--out", d / "res")
    assert code == 0 and "exported 0 runs" in out and "6 already there" in out


def _events(folder):
    """(tag, step, value) of every scalar, and the plugin names, from the event files."""
    from tensorboardX.proto import event_pb2

    scalars, plugins = [], set()
    for f in folder.glob("events.out.tfevents.*"):
        data = f.read_bytes()
        i = 0
        while i < len(data):
            (n,) = struct.unpack("<Q", data[i:i + 8])
            ev = event_pb2.Event.FromString(data[i + 12:i + 12 + n])
            i += 12 + n + 4
            for v in ev.summary.value:
                if v.metadata.plugin_data.plugin_name:
                    plugins.add(v.metadata.plugin_data.plugin_name)
                if v.WhichOneof("value") == "simple_value":
                    scalars.append((v.tag, ev.step, v.simple_value))
    return scalars, plugins


def test_tensorboard_scalars_and_hparams_per_run(sweep, tmp_path, cli):
    d, res = sweep
    code, out, err = cli("export", "ex", tmp_path / "tb", "--to", "tensorboard", "--out",
                         d / "res", "--where", "lr < 1")
    assert code == 0 and "exported 4 runs" in out, err
    runs = res.runs[res.runs.lr < 1]
    assert sorted(p.name for p in (tmp_path / "tb" / "ex").iterdir()) == sorted(runs.run_id)
    curves = res.curves()
    for row in runs.itertuples(index=False):
        scalars, plugins = _events(tmp_path / "tb" / "ex" / row.run_id)
        assert "hparams" in plugins
        c = curves[curves.run_id == row.run_id].sort_values("step")
        got = sorted((s, v) for t, s, v in scalars if t == "loss")
        want = [(s, float(np.float32(v))) for s, v in zip(c.step, c.loss)]  # TB: float32
        assert got == want
    code, out, err = cli("export", "ex", tmp_path / "tb", "--to", "tensorboard", "--out",
                         d / "res")
    assert code == 0 and "exported 2 runs" in out and "4 already there" in out


def test_export_refusals(sweep, tmp_path, cli):
    d, _ = sweep
    code, out, err = cli("export", "nope", tmp_path / "x", "--to", "mlflow", "--out", d / "res")
    assert code == 2 and "no sweep 'nope'" in err
    with pytest.raises(jaxdyn.JaxdynError, match="--to"):
        jaxdyn.export("ex", "wandb", tmp_path / "x", root=d / "res")
    for to in ("mlflow", "tensorboard"):
        code, out, err = cli("export", "ex", "/proc/nope", "--to", to, "--out", d / "res")
        assert code == 2 and "cannot write to /proc/nope" in err and "Traceback" not in err
