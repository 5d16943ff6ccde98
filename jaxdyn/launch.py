"""``jaxdyn.run``: one sweep, from a file, a dict or a parsed sweep to a folder of tables.

Owns everything one invocation does, in order: parse and validate the sweep, resolve its
experiment (built-in, registered, user file or module, or an object passed in), check the
experiment's contract and values (nothing compiled, nothing written), choose the CPU device
count, set up the compilation cache, open the results folder (lock, manifest, resume),
run the engine with progress, and return a :class:`RunSummary`. ``jaxdyn run`` is argparse
and printing around it.

Float64 sweeps need JAX's x64 mode. It is switched on only while this function traces and
runs (``jax.enable_x64``), never by importing jaxdyn: a notebook's own JAX code keeps its
setting.
"""

from __future__ import annotations

import dataclasses
import inspect
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from jaxdyn import spec
from jaxdyn.spec import JaxdynError, SpecError, Sweep


@dataclass
class RunSummary:
    """What :func:`run` did. ``load()`` opens the results (:class:`jaxdyn.Results`).

    Fields: ``name``, ``experiment``, ``folder`` (``<out>/<name>``); ``runs_total`` (the
    sweep's distinct runs), ``runs_run`` (computed by this call), ``runs_done_before`` (found
    done and skipped), ``diverged`` (of the runs run now); ``wall_s`` and ``compile_s``;
    ``duplicates`` (runs of repeated grid points dropped); ``process_index`` and
    ``process_count`` of a multi-process run; ``moved_aside`` (where ``force`` moved older
    results); ``repaired`` (``{part name: why}``: parts found damaged on resume, moved to
    ``<folder>/damaged/``, their runs run again); ``stats``, the engine's full summary (chunks, micro-batch, writer time,
    compiled programs, run·steps/s).
    """

    name: str
    experiment: str
    folder: Path
    runs_total: int
    runs_run: int
    runs_done_before: int
    diverged: int
    wall_s: float
    compile_s: float
    duplicates: int = 0
    process_index: int = 0
    process_count: int = 1
    moved_aside: Path | None = None
    repaired: dict = field(default_factory=dict)
    stats: dict = field(default_factory=dict)

    def load(self):
        from jaxdyn.results import load

        return load(self.name, root=self.folder.parent)

    def __repr__(self) -> str:
        return (f"RunSummary({self.name!r}: {self.runs_total} runs, {self.runs_run} run now, "
                f"{self.runs_done_before} already done, {self.diverged} diverged, "
                f"wall {self.wall_s:.2f}s, compile {self.compile_s:.2f}s, {self.folder})")


_NOTICE_SHOWN = False


def _notice(msg: str) -> None:
    global _NOTICE_SHOWN
    if not _NOTICE_SHOWN:
        _NOTICE_SHOWN = True
        print(f"[jaxdyn] {msg}", file=sys.stderr)


def version() -> str:
    from importlib.metadata import PackageNotFoundError, version as v

    try:
        return v("jaxdyn")
    except PackageNotFoundError:
        return "unknown"


def setup_compilation_cache() -> None:
    """Persist compiled programs in ``JAXDYN_CACHE_DIR`` (default ``~/.cache/jaxdyn/xla``),
    unless the user set a cache folder of their own."""
    import jax

    if jax.config.jax_compilation_cache_dir:
        return
    cache = os.environ.get("JAXDYN_CACHE_DIR", str(Path.home() / ".cache" / "jaxdyn" / "xla"))
    try:
        Path(cache).mkdir(parents=True, exist_ok=True)
        jax.config.update("jax_compilation_cache_dir", cache)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
    except Exception:  # noqa: BLE001 - a cache is an optimisation, never a failure
        pass


def _source_of_object(exp) -> dict:
    """Where an Experiment passed as an object was defined (its init's file)."""
    import hashlib

    try:
        file = inspect.getsourcefile(exp.init)
    except TypeError:
        file = None
    digest = None
    if file and Path(file).is_file():
        digest = hashlib.sha256(Path(file).read_bytes()).hexdigest()
    return {"ref": f"<object {exp.name}>", "module": getattr(exp.init, "__module__", None),
            "file": file, "sha256": digest}


def prepare(sweep, *, overrides: Sequence[str] = (), experiment=None,
            max_runs: int | None = spec.MAX_RUNS_UNCONFIRMED):
    """Parse ``sweep`` and resolve its experiment: ``(Sweep, Experiment, source dict or
    None)``. The experiment's ``params`` include the optimizer knobs the sweep names."""
    from jaxdyn import experiments
    from jaxdyn.experiments import Experiment

    if experiment is not None and not isinstance(experiment, Experiment):
        raise SpecError(None, "experiment", f"expected a jaxdyn.Experiment, got "
                                            f"{type(experiment).__name__}")
    found: dict = {}

    def params_of(name, base):
        if experiment is not None and name == experiment.name:
            found["exp"], found["src"] = experiment, _source_of_object(experiment)
            return experiment.params
        exp, src = experiments.resolve(name, base)
        found["exp"], found["src"] = exp, (src.as_dict() if src else None)
        return exp.params

    if isinstance(sweep, Sweep):
        if overrides:
            raise SpecError(sweep.file, None, "overrides apply to a file or a dict, not to a "
                                              "parsed Sweep")
        parsed = sweep
        params_of(parsed.experiment, Path(parsed.file).parent if parsed.file else None)
    elif isinstance(sweep, Mapping):
        import copy

        doc = copy.deepcopy(dict(sweep))
        if experiment is not None:
            doc.setdefault("experiment", experiment.name)
        base = Path.cwd()
        for ov in overrides:
            spec._apply_override(doc, ov, None, lambda n: params_of(n, base))
        parsed = spec.validate(doc, lambda n: params_of(n, base), max_runs=max_runs)
    elif isinstance(sweep, (str, os.PathLike)):
        path = Path(sweep)
        parsed = spec.load(path, lambda n: params_of(n, path.parent), overrides=overrides,
                           max_runs=max_runs)
    else:
        raise SpecError(None, None, f"sweep: expected a path, a dict or a jaxdyn Sweep, got "
                                    f"{type(sweep).__name__}")
    exp = found["exp"]
    if tuple(parsed.params) != tuple(exp.params):  # optimizer knobs named by the sweep
        exp = dataclasses.replace(exp, params=tuple(parsed.params))
    return parsed, exp, found["src"]


def run(sweep, *, out: str | os.PathLike = "results", overrides: Sequence[str] = (),
        experiment=None, chunk_size: int | None = None, micro_batch: int | None = None,
        force: bool = False, quiet: bool = False, yes: bool = False,
        progress: Callable | None = None, distributed: bool = False,
        coordinator: str | None = None, num_processes: int | None = None,
        process_id: int | None = None) -> RunSummary:
    """Run a sweep (resuming whatever an earlier call left undone) and write its tables.

    Args:
      sweep: a sweep file's path, a dict of the same shape (``{"name": ..., "experiment":
        ..., "steps": ..., "grid": {...}}``), or a parsed :class:`jaxdyn.spec.Sweep`.
      out: the results root; tables go to ``<out>/<name>/``.
      overrides: ``"key=value"`` strings, as ``--set`` (``"steps=500"``, ``"lr=0.01"``).
      experiment: a :class:`jaxdyn.Experiment` object; the sweep's ``experiment`` may then
        be omitted (a dict) or name it (``experiment.name``).
      chunk_size: runs per compiled chunk (default: from XLA's memory analysis).
      micro_batch: runs vmapped together on one device (default: measured; 0: all).
      force: replace results of a different sweep (or experiment code) with the same name;
        they are moved aside, never deleted.
      quiet: no progress output.
      yes: run a sweep of more than ``spec.MAX_RUNS_UNCONFIRMED`` runs.
      progress: ``progress(event, **info)`` instead of the default bar/lines.
      distributed, coordinator, num_processes, process_id: a multi-process run
        (``jax.distributed.initialize``); each process runs its own chunks.

    Returns:
      a :class:`RunSummary`; ``.load()`` opens the tables.

    Raises:
      jaxdyn.JaxdynError: a bad sweep, experiment or folder; ``str(err)`` names the file,
        the key and what was expected. Nothing is written before every check passed.

    Example::

        summary = jaxdyn.run("sweeps/quickstart.toml", overrides=["steps=500"])
        res = summary.load()
    """
    if chunk_size is not None and (isinstance(chunk_size, bool) or not isinstance(
            chunk_size, int) or chunk_size <= 0):
        raise SpecError(None, "chunk_size", f"expected a positive integer, got {chunk_size!r}")
    if micro_batch is not None and (isinstance(micro_batch, bool) or not isinstance(
            micro_batch, int) or micro_batch < 0):
        raise SpecError(None, "micro_batch", f"expected an integer >= 0 (0 = all of a "
                                             f"device's runs at once), got {micro_batch!r}")
    parsed, exp, source = prepare(sweep, overrides=overrides, experiment=experiment,
                                  max_runs=None if yes else spec.MAX_RUNS_UNCONFIRMED)
    import jax

    with jax.enable_x64(True):
        return _run(parsed, exp, source, out=Path(out), chunk_size=chunk_size,
                    micro_batch=micro_batch, force=force, quiet=quiet, progress=progress,
                    distributed=distributed, coordinator=coordinator,
                    num_processes=num_processes, process_id=process_id)


def _run(sweep: Sweep, exp, source, *, out: Path, chunk_size, micro_batch, force, quiet,
         progress, distributed, coordinator, num_processes, process_id) -> RunSummary:
    import jax
    import numpy as np

    from jaxdyn import contract, engine
    from jaxdyn import store as store_mod
    from jaxdyn.store import StoreError, SweepStore

    setup_compilation_cache()
    engine.reuse_freed_memory()
    probes, signatures, footprints = _check_experiment(sweep, exp)
    for key in ("refine", "halving", "search"):
        if getattr(sweep, key) is not None and distributed:
            raise SpecError(sweep.file, key, f"[{key}] does not run with --distributed "
                                             f"yet; run it in one process")
    try:
        # one CPU device per core, unless a group calls LAPACK (traced only if it matters)
        wanted = engine.cpu_devices_wanted()
        if wanted and not engine.uses_lapack(sweep, exp, probes):
            engine.use_cpu_cores()
        elif wanted is None and _cpu_backend_started_small():
            _notice(f"JAX was already started with {len(jax.local_devices())} CPU device "
                    f"before jaxdyn.run, so sweeps use that many; for one device per core, "
                    f"call jaxdyn.run before other JAX work in this process (or set "
                    f"JAXDYN_CPU_DEVICES / XLA_FLAGS=--xla_force_host_platform_device_count)")
    except Exception as e:  # noqa: BLE001 - a probe's own code failing to trace
        raise contract.ExperimentError(f"experiment {exp.name!r}: tracing the run failed: "
                                       f"{type(e).__name__}: {contract._first_line(e)}") from None
    pi, pc = 0, 1
    if distributed:
        kw = {}
        if coordinator:
            kw["coordinator_address"] = coordinator
        if num_processes is not None:
            kw["num_processes"] = num_processes
        if process_id is not None:
            kw["process_id"] = process_id
        try:
            jax.distributed.initialize(**kw)
        except Exception as e:  # noqa: BLE001 - the runtime's own message says what failed
            raise JaxdynError(f"--distributed: jax.distributed.initialize failed: {e}") \
                from None
        pi, pc = jax.process_index(), jax.process_count()
    _check_memory(sweep, footprints)  # asks for a device: after jax.distributed.initialize
    store = SweepStore(out, sweep.name)
    extra: dict[str, Any] = {"jaxdyn_version": version(), "jax_version": jax.__version__,
                             "device": engine.device_description(), "process_count": pc}
    if source is not None:
        extra["experiment_source"] = source
    if sweep.save_params:
        extra["params_layout"] = _params_layout(sweep, exp, signatures)
    opened, msg = True, ""
    if pi == 0:
        try:
            store.open(sweep, extra, force=force)
        except StoreError as e:
            opened, msg = False, str(e)
    if pc > 1:  # the others join only once process 0 has checked and cleaned the folder
        from jax.experimental import multihost_utils

        ok = multihost_utils.broadcast_one_to_all(np.int32(opened))
        if pi > 0:
            if not int(ok):
                raise StoreError(f"process 0 could not open {store.dir}; see its message")
            try:
                store.join(sweep, pi)
            except StoreError as e:
                opened, msg = False, str(e)
    if not opened:
        raise StoreError(msg)
    if store.moved_aside and not quiet:
        print(f"[jaxdyn] previous results moved to {store.moved_aside}", file=sys.stderr)
    if store.repaired and not quiet:
        print(f"[jaxdyn] {len(store.repaired)} damaged part(s) moved to "
              f"{store.dir / store_mod.DAMAGED}; their runs are run again", file=sys.stderr)
    bar = progress or Progress(sweep, quiet)
    try:
        kw = dict(chunk_size=chunk_size, micro_batch=micro_batch, progress=bar,
                  probes=probes, process_index=pi, process_count=pc)
        if sweep.refine is not None:  # rounds of ordinary runs around the sweep loop
            from jaxdyn.adaptive._refine import run_refine

            s = run_refine(sweep, exp, store, engine.run_sweep, **kw)
        elif sweep.search is not None:  # batches of proposals, each one sweep-loop call
            from jaxdyn.adaptive._search import run_search

            s = run_search(sweep, exp, store, engine.run_sweep, **kw)
        elif sweep.halving is not None:  # rungs of compacted, carried-over chunks
            from jaxdyn.adaptive._halving import run_halving

            s = run_halving(sweep, exp, store, **kw)
        else:
            s = engine.run_sweep(sweep, exp, store, **kw)
        if pc > 1:
            from jax.experimental import multihost_utils

            multihost_utils.sync_global_devices(f"jaxdyn-{sweep.name}-done")
    finally:
        if hasattr(bar, "close"):
            bar.close()
        store.close()
    s.pop("runners", None)
    return RunSummary(name=sweep.name, experiment=sweep.experiment, folder=store.dir,
                      runs_total=s["runs_total"], runs_run=s["runs_run"],
                      runs_done_before=s["runs_done_before"], diverged=s["diverged"],
                      wall_s=s["wall_s"], compile_s=s["compile_s"],
                      duplicates=sweep.duplicates, process_index=pi, process_count=pc,
                      moved_aside=store.moved_aside, repaired=dict(store.repaired), stats=s)


def _check_experiment(sweep: Sweep, exp):
    """The checks between the sweep file and the device: probe options, ``save``, the
    experiment's ``check`` on every grid point, and each static group traced on abstract
    values (``contract``). Returns ``(probes, signatures, footprints)``."""
    from jaxdyn import contract, engine

    probes = engine.resolve_probes(sweep, exp)
    if sweep.save_params and exp.params_of_state is None:
        raise SpecError(sweep.file, "save.params", f"{exp.name} has no params_of_state: it "
                                                   f"cannot say which part of its state "
                                                   f"holds the parameters")
    contract.check_values(exp, sweep)
    if any(getattr(sweep, k) is not None for k in ("refine", "stop", "halving", "search")):
        from jaxdyn.adaptive import _refine

        _refine.check(sweep, exp)  # the predicates' columns and metrics
    signatures = engine.static_signatures(sweep, exp)
    footprints = {}
    for sig in signatures:
        static = engine.group_static(sweep, sig)
        label = engine.group_label(sig)
        footprints[label] = contract.check_group(exp, static, label, probes, sweep.file)
    return probes, signatures, footprints


def check(sweep, *, overrides: Sequence[str] = (), experiment=None,
          yes: bool = False) -> dict:
    """Every check :func:`run` makes before it compiles or writes anything, and nothing
    else: the sweep file, the experiment's value checks on every grid point, each static
    group traced on abstract values, sizes and one run's memory against the device.

    Takes ``sweep``, ``overrides``, ``experiment`` and ``yes`` as :func:`run` does. Raises
    :class:`jaxdyn.JaxdynError` with the message ``run`` would give; returns ``{"runs",
    "groups", "duplicates", "run_bytes"}`` (the largest group's estimate of one run's device
    memory, in bytes).

    Example::

        jaxdyn.check("sweeps/quickstart.toml", overrides=["steps=500"])
    """
    parsed, exp, _ = prepare(sweep, overrides=overrides, experiment=experiment,
                             max_runs=None if yes else spec.MAX_RUNS_UNCONFIRMED)
    import jax

    with jax.enable_x64(True):
        _, signatures, footprints = _check_experiment(parsed, exp)
        _check_memory(parsed, footprints)
    return {"runs": len(parsed.runs()), "groups": len(signatures),
            "duplicates": parsed.duplicates,
            "run_bytes": max((run_bytes(parsed, f)["total"] for f in footprints.values()),
                             default=0)}


#: the state a step holds at once, in copies of one run's state: the input, the output and
#: the gradients/optimizer temporaries in between
_STATE_COPIES = 3


def run_bytes(sweep, footprint: dict) -> dict:
    """One run's device memory, estimated from traced shapes (``contract.check_group``):
    its state in flight (:data:`_STATE_COPIES` copies), its curves buffer (one row per
    logged step) and its data."""
    parts = {"state": _STATE_COPIES * footprint["state"],
             "curves": sweep.log.count(sweep.steps) * footprint["row"],
             "data": footprint["data"]}
    return {**parts, "total": sum(parts.values())}


def _check_memory(sweep, footprints: dict) -> None:
    """Refuse, before anything is compiled or written, a group one run of which cannot fit
    in a device's memory (it would abort inside XLA, or swap the host to a halt)."""
    import jax

    from jaxdyn import engine
    from jaxdyn.fmt import nbytes

    limit = engine.device_memory_bytes(jax.local_devices()[0])
    for label, fp in footprints.items():
        need = run_bytes(sweep, fp)
        if need["total"] > limit:
            where = f"group {label}" if label else "each run"
            raise SpecError(sweep.file, None, f"one run of {where} needs about "
                                              f"{nbytes(need['total'])} (state "
                                              f"{nbytes(need['state'])}, curves "
                                              f"{nbytes(need['curves'])}, data "
                                              f"{nbytes(need['data'])}), more than the "
                                              f"{nbytes(limit)} of a device here; use smaller "
                                              f"shapes or fewer logged steps")


def _cpu_backend_started_small() -> bool:
    import jax
    from jax._src import xla_bridge

    return (xla_bridge.backends_are_initialized() and jax.default_backend() == "cpu"
            and len(jax.local_devices()) == 1 and (os.cpu_count() or 1) > 1
            and "JAXDYN_CPU_DEVICES" not in os.environ)


def _params_layout(sweep: Sweep, exp, signatures) -> dict:
    """Per static group label: the saved pytree's leaves (path, column, shape, dtype), so that
    ``Results.params`` can rebuild them."""
    import jax

    from jaxdyn import engine
    from jaxdyn.store import param_column

    out = {}
    for sig in signatures:
        static = engine.group_static(sweep, sig)
        dyn, seed = engine.abstract_run_inputs(exp)
        data = None
        if exp.make_data is not None and engine.shares_data(exp, static):
            data = jax.eval_shape(lambda: exp.make_data(engine.data_key(0), static))
        state = jax.eval_shape(lambda d, s, x: engine.run_setup(exp, static, d, s, x)[3],
                               dyn, seed, data)
        leaves = jax.tree_util.tree_flatten_with_path(exp.params_of_state(state))[0]
        label = engine.group_label(sig)
        out[label] = [{"path": jax.tree_util.keystr(p), "column": param_column(
            jax.tree_util.keystr(p)), "shape": list(v.shape), "dtype": str(v.dtype)}
            for p, v in leaves]
    return {"save": sweep.save_params, "groups": out}


class Progress:
    """A tqdm bar on a terminal; plain progress lines otherwise (logs, CI)."""

    def __init__(self, sweep, quiet: bool):
        self.sweep, self.quiet = sweep, quiet
        self.tty = sys.stderr.isatty()
        self.bar = None
        self.t0 = time.perf_counter()
        self.done = 0
        self.total = 0
        self.n_chunks = 0

    def __call__(self, event: str, **kw):
        from jaxdyn.fmt import duration, rate as fmt_rate

        if self.quiet:
            return
        if event == "start":
            self.total, self.n_chunks = kw["total_runs"], kw["total_chunks"]
            if self.tty:
                from tqdm import tqdm

                self.bar = tqdm(total=self.total, unit="run", desc=self.sweep.name,
                                dynamic_ncols=True)
            else:
                print(f"[jaxdyn] {self.sweep.name}: {self.total} runs to do in "
                      f"{self.n_chunks} chunks", file=sys.stderr, flush=True)
        elif event == "chunk":
            self.done += kw["runs"]
            el = time.perf_counter() - self.t0
            rate = self.done / max(el, 1e-9)
            eta = (self.total - self.done) / max(rate, 1e-9)
            rs = rate * self.sweep.steps
            if self.bar is not None:
                self.bar.set_postfix_str(f"chunk {kw['index'] + 1}/{self.n_chunks}, "
                                         f"{fmt_rate(rs)} run·steps/s")
                self.bar.update(kw["runs"])
            else:
                print(f"[jaxdyn] chunk {kw['index'] + 1}/{self.n_chunks}: "
                      f"{self.done}/{self.total} runs, {rate:.1f} runs/s "
                      f"({fmt_rate(rs)} run·steps/s), ETA {duration(eta)}",
                      file=sys.stderr, flush=True)

    def close(self):
        if self.bar is not None:
            self.bar.close()
