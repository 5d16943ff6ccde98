"""Export a sweep to an experiment tracker: one tracker run per jaxdyn run.

Vectorized runs are what trackers' own loggers get wrong: inside one vmapped program there is
one Python process for thousands of runs, so ``mlflow.log_metric`` from the training loop
logs one aggregated run. Exporting from the tables gives each run its own tracker run, with
its hyperparameters as params (hparams) and its curves as metrics.

- ``mlflow``: an MLflow experiment named after the sweep in the tracking store ``dest`` (a
  folder: ``file:`` store; or a URI). Run name = run_id; tags ``jaxdyn.run_id``,
  ``jaxdyn.sweep``, ``jaxdyn.status``; params = seed and every hyperparameter; metrics = the
  curves' scalar columns at their steps. Needs ``pip install 'jaxdyn[mlflow]'``.
- ``tensorboard``: ``dest/<sweep>/<run_id>/`` event files: scalars per step and the HParams
  plugin's record (hyperparameters and final metrics), so TensorBoard's HParams tab shows the
  sweep. Needs ``pip install 'jaxdyn[tensorboard]'`` (tensorboardX).

Non-finite values (a diverged run's curve after it diverged) are not logged. A run already in
the destination (by its run_id) is skipped, so exporting a growing sweep again adds only the
new runs. No JAX is imported.
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path

from jaxdyn.results import load
from jaxdyn.results.files import QueryError

TARGETS = ("mlflow", "tensorboard")
_MLFLOW_BATCH = 1000  # MLflow's log_batch limit on metrics per call (params: 100)


def _need(module: str, extra: str):
    try:
        return __import__(module)
    except ImportError:
        raise QueryError(f"export to {extra} needs the {module} package: pip install "
                         f"'jaxdyn[{extra}]'") from None


def export(name_or_dir, to: str, dest, *, root=None, where: str | None = None) -> dict:
    """Write one tracker run per run of a sweep (module docstring).

    Args:
      name_or_dir: the sweep's name under ``root`` (default ``results``) or its folder.
      to: ``"mlflow"`` or ``"tensorboard"``.
      dest: the tracker's folder (MLflow: a folder or a tracking URI).
      where: a SQL predicate on the runs table: export only those runs.

    Returns ``{"runs": written, "skipped": already there, "metrics": values logged,
    "dest": ...}``.

    Example::

        jaxdyn.export("eos_mean_model", "tensorboard", "tb/")   # tensorboard --logdir tb/
    """
    if to not in TARGETS:
        raise QueryError(f"--to: expected one of {list(TARGETS)}, got {to!r}")
    res = load(name_or_dir, root)
    runs = res.runs
    if where is not None:
        from jaxdyn.results import query

        ids = set(query(f"SELECT run_id FROM runs WHERE {where}", sweeps=[res.path]).run_id)
        runs = runs[runs.run_id.isin(ids)]
    hp_cols = [c for c in runs.columns if c not in ("run_id", "group", "status",
                                                    "diverged_step", "wall_s")
               and not c.startswith("final_")]
    finals = [c for c in runs.columns if c.startswith("final_")]
    curves = res.curves(run_ids=list(runs.run_id)) if len(runs) else None
    scalar = []
    if curves is not None:
        scalar = [c for c in curves.columns if c not in ("run_id", "step")
                  and curves[c].dtype.kind in "fiu"]
        by_run = dict(tuple(curves.groupby("run_id", sort=False)))
    else:
        by_run = {}
    t0 = time.perf_counter()
    try:
        if to == "mlflow":
            out = _to_mlflow(res.name, runs, hp_cols, scalar, by_run, dest)
        else:
            out = _to_tensorboard(res.name, runs, hp_cols, finals, scalar, by_run, Path(dest))
    except OSError as e:
        raise QueryError(f"cannot write to {dest}: {e.strerror or e} (runs exported before "
                         f"this are kept; run it again to add the rest)") from None
    return {**out, "dest": str(dest), "export_s": time.perf_counter() - t0}


def _finite(v) -> bool:
    return v is not None and isinstance(v, (int, float)) and math.isfinite(v)


def _plain(v):
    """A table value as a plain Python scalar (params, hparams)."""
    return v.item() if hasattr(v, "item") else v


def _to_mlflow(sweep, runs, hp_cols, scalar, by_run, dest) -> dict:
    _need("mlflow", "mlflow")
    from mlflow.entities import Metric, Param
    from mlflow.tracking import MlflowClient

    from mlflow.exceptions import MlflowException

    uri = str(dest)
    folder = "://" not in uri and not uri.startswith("file:")
    if folder:
        Path(uri).mkdir(parents=True, exist_ok=True)
        uri = Path(uri).resolve().as_uri()
    # a folder is MLflow's file store, in "maintenance mode" since MLflow 3 (it refuses to
    # open one unless allowed); it needs no database packages, and `mlflow ui
    # --backend-store-uri DIR` reads it. A tracking URI (sqlite:///..., http://...) is used
    # as given.
    old = os.environ.get("MLFLOW_ALLOW_FILE_STORE")
    if folder:
        os.environ["MLFLOW_ALLOW_FILE_STORE"] = "true"
    try:
        return _mlflow_runs(MlflowClient(tracking_uri=uri), sweep, runs, hp_cols, scalar,
                            by_run, Metric, Param)
    except MlflowException as e:
        raise QueryError(f"export to MLflow at {dest}: {str(e).splitlines()[0]}") from None
    finally:
        if folder:
            if old is None:
                os.environ.pop("MLFLOW_ALLOW_FILE_STORE", None)
            else:
                os.environ["MLFLOW_ALLOW_FILE_STORE"] = old


def _mlflow_runs(client, sweep, runs, hp_cols, scalar, by_run, Metric, Param) -> dict:
    exp = client.get_experiment_by_name(sweep)
    exp_id = exp.experiment_id if exp else client.create_experiment(sweep)
    have = {r.data.tags.get("jaxdyn.run_id")
            for r in client.search_runs([exp_id], max_results=50_000)}
    written = skipped = n_metrics = 0
    for row in runs.itertuples(index=False):
        rid = row.run_id
        if rid in have:
            skipped += 1
            continue
        tags = {"jaxdyn.run_id": rid, "jaxdyn.sweep": sweep, "jaxdyn.status": row.status}
        run = client.create_run(exp_id, run_name=rid, tags=tags)
        params = [Param(c, str(_plain(getattr(row, c)))) for c in hp_cols]
        for i in range(0, len(params), 100):
            client.log_batch(run.info.run_id, params=params[i:i + 100])
        metrics = []
        c = by_run.get(rid)
        if c is not None:
            ts = int(time.time() * 1000)
            for col in scalar:
                for step, v in zip(c["step"].tolist(), c[col].tolist()):
                    if _finite(v):
                        metrics.append(Metric(col, float(v), ts, int(step)))
        for i in range(0, len(metrics), _MLFLOW_BATCH):
            client.log_batch(run.info.run_id, metrics=metrics[i:i + _MLFLOW_BATCH])
        client.set_terminated(run.info.run_id,
                              "FINISHED" if row.status == "ok" else "FAILED")
        written += 1
        n_metrics += len(metrics)
    return {"runs": written, "skipped": skipped, "metrics": n_metrics}


def _to_tensorboard(sweep, runs, hp_cols, finals, scalar, by_run, dest: Path) -> dict:
    _need("tensorboardX", "tensorboard")
    from tensorboardX import SummaryWriter
    from tensorboardX.summary import hparams

    base = dest / sweep
    written = skipped = n_metrics = 0
    for row in runs.itertuples(index=False):
        rid = row.run_id
        logdir = base / rid
        if logdir.exists() and any(logdir.glob("events.out.tfevents.*")):
            skipped += 1
            continue
        hp = {c: _plain(getattr(row, c)) for c in hp_cols}
        hp = {k: (v if isinstance(v, (int, float, str, bool)) else str(v))
              for k, v in hp.items() if v is not None}
        fin = {f"hparams/{c}": float(_plain(getattr(row, c))) for c in finals
               if _finite(_plain(getattr(row, c)))}
        with SummaryWriter(logdir=str(logdir)) as w:
            c = by_run.get(rid)
            if c is not None:
                for col in scalar:
                    for step, v in zip(c["step"].tolist(), c[col].tolist()):
                        if _finite(v):
                            w.add_scalar(col, float(v), int(step))
                            n_metrics += 1
            exp, ssi, sei = hparams(hp, fin)
            for s in (exp, ssi, sei):
                w.file_writer.add_summary(s)
            for k, v in fin.items():
                w.add_scalar(k, v, int(c["step"].max()) if c is not None else 0)
        written += 1
    return {"runs": written, "skipped": skipped, "metrics": n_metrics}
