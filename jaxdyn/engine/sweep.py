"""The sweep loop: every run of a sweep not yet in the store, chunk by chunk.

Owns: the work list (the chunk plan minus what is done, this process's blocks), dispatching
chunks while the previous one is written on a background thread, progress records and the
summary.

Must not: parse sweep files, open or check the results folder (jaxdyn.run and the store do),
or build programs (the runner does).
"""

from __future__ import annotations

import os
import platform
import time
from collections import Counter
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable

import jax
import numpy as np

from jaxdyn.engine.plan import chunks_of, plan_groups
from jaxdyn.engine.program import resolve_probes, shares_data
from jaxdyn.engine.runner import ChunkRunner
from jaxdyn.experiments.base import Experiment
from jaxdyn.spec import Sweep

def run_sweep(sweep: Sweep, exp: Experiment, store, *, chunk_size: int | None = None,
              micro_batch: int | None = None, progress: Callable | None = None, probes=None,
              process_index: int = 0, process_count: int = 1, runs=None,
              extra_columns: dict | None = None, runners: dict | None = None,
              progress_extra: dict | None = None) -> dict:
    """Run every run of ``sweep`` not already in ``store``; returns a summary dict.

    The chunk plan is a pure function of the sweep (and the chunk size): each group's runs,
    in a fixed order, cut into blocks. Block ``b`` (numbered across groups) belongs to process
    ``b % process_count``, so processes of a multi-host run own disjoint runs however their
    views of what is done differ. A block's done runs are skipped; a fully done block is not
    run at all.

    ``runs``: run these (``Run``s, as the sweep's own would be) instead of the sweep's grid
    (a refinement round, :mod:`jaxdyn.adaptive`). ``extra_columns``: ``{column: value}``
    written into every runs row of this call (the round), or ``{column: {run_id: value}}``
    (a search's trial numbers). ``runners``: a dict that keeps the
    ChunkRunners (compiled programs) of each group across calls. ``progress_extra``: added
    to the progress records.
    """
    t0 = time.perf_counter()
    if probes is None:
        probes = resolve_probes(sweep, exp)
    all_runs = sweep.runs() if runs is None else list(runs)
    done = store.done_run_ids()
    summary = {"runs_total": len(all_runs), "runs_done_before": 0, "runs_run": 0,
               "diverged": 0, "compile_s": 0.0, "chunks": 0, "steps": sweep.steps,
               "run_steps": 0, "run_steps_full": 0}
    work, block = [], 0
    for g in plan_groups(sweep, exp, all_runs):
        runner = None
        size = chunk_size or sweep.chunk_size
        # chunks of a shared-data experiment never span seeds: size them for one seed's runs
        per_seed = shares_data(exp, g.static)
        n_max = len(g.runs)
        if per_seed:
            n_max = max(Counter(r.seed for r in g.runs).values())
        if runners is not None and g.label in runners:
            runner = runners[g.label]
        if size is None:  # automatic size: needs the compiled program
            runner = runner or ChunkRunner(exp, sweep, g, probes, micro_batch)
            size = runner.choose_chunk(n_max, None)
            runner.batch_for = n_max
        for c in chunks_of(g, size, per_seed):
            mine = block % process_count == process_index
            block += 1
            # in run_id order: the store writes rows sorted by run_id, and a run's results
            # do not depend on its place in the batch (tested)
            todo = sorted((r for r in c if r.run_id not in done), key=lambda r: r.run_id)
            if mine:
                summary["runs_done_before"] += len(c) - len(todo)
            if not mine or not todo:
                continue
            if runner is None or getattr(runner, "batch_for", None) != n_max:
                runner = runner or ChunkRunner(exp, sweep, g, probes, micro_batch)
                runner.choose_chunk(n_max, size)
                runner.batch_for = n_max
            if runners is not None:
                runners[g.label] = runner
            work.append((runner, g, todo))
    n_todo = sum(len(c) for _, _, c in work)
    if progress:
        progress("start", total_runs=n_todo, total_chunks=len(work))
    state = {"pid": os.getpid(), "host": platform.node(), "process_index": process_index,
             "started": time.time(),
             "chunks_total": len(work), "chunks_done": 0, "runs_total": n_todo,
             "runs_done": 0, "steps": sweep.steps, "finished": None, **(progress_extra or {})}
    store.write_progress(state, process_index)

    writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="jaxdyn-writer")
    pending_write: Future | None = None
    # write_s: the writer thread's busy time (device→host copy, Arrow, Parquet, fsync);
    # write_wait_s: how long the sweep loop stood still waiting for it (what writing costs)
    summary["write_s"] = summary["write_wait_s"] = 0.0

    def finish_write(fut: Future) -> None:
        tw = time.perf_counter()
        n_div, busy, steps_run, n_stopped = fut.result()
        summary["stopped"] = summary.get("stopped", 0) + n_stopped
        summary["write_wait_s"] += time.perf_counter() - tw
        summary["diverged"] += n_div
        summary["run_steps"] += steps_run
        summary["write_s"] += busy

    try:
        for i, (runner, g, chunk) in enumerate(work):
            tc = time.perf_counter()
            out = runner(chunk)  # async dispatch: computes while the last chunk writes
            jax.block_until_ready(out)
            wall = time.perf_counter() - tc
            if pending_write is not None:
                finish_write(pending_write)
                store.write_progress(state, process_index)
            pending_write = writer.submit(_write_chunk, store, exp, sweep, runner, g, chunk,
                                          out, wall, extra_columns)
            summary["run_steps_full"] += (runner.batch or runner.padded(len(chunk))) \
                * sweep.steps
            state["chunks_done"] += 1
            state["runs_done"] += len(chunk)
            summary["runs_run"] += len(chunk)
            summary["chunks"] += 1
            if progress:
                progress("chunk", runs=len(chunk), wall=wall, index=i)
        if pending_write is not None:
            finish_write(pending_write)
    finally:
        writer.shutdown(wait=True)
    if sweep.stop is not None:  # the goal's savings, counted (not timed)
        full = summary["run_steps_full"]
        summary["stop"] = {"stopped": summary.get("stopped", 0),
                           "run_steps": summary["run_steps"], "run_steps_full": full,
                           "saved": 1 - summary["run_steps"] / full if full else 0.0}
    state["finished"] = time.time()
    state["compile_s"] = sum(r.compile_s for r in {id(r): r for r, *_ in work}.values())
    store.write_progress(state, process_index)
    runners = list({id(r): r for r, *_ in work}.values())
    summary["compile_s"] = sum(r.compile_s for r in runners)
    summary["compiled_programs"] = sum(len(r._compiled) for r in runners)
    summary["runners"] = runners  # the ChunkRunners used (benchmarks read their programs)
    summary["tune_s"] = sum(r.tune_s for r in runners)
    summary["micro_batch"] = sorted({r.micro or 0 for r in runners})
    summary["wall_s"] = time.perf_counter() - t0
    summary["run_steps_per_s"] = summary["runs_run"] * sweep.steps / max(summary["wall_s"], 1e-9)
    return summary


def _write_chunk(store, exp, sweep, runner, group, chunk, out, wall,
                 extra_columns=None) -> tuple[int, float, int]:
    """Copy a finished chunk to the host and commit its parts; returns (diverged runs, busy
    seconds, run·steps computed: the compiled batch's rows times the steps each took, runs
    stopped at their goal)."""
    t0 = time.perf_counter()
    curves, final, alive, dstep, *saved = jax.device_get(out)
    n = len(chunk)
    extra = {k: np.asarray([v[r.run_id] for r in chunk], np.int64) if isinstance(v, dict)
             else np.full(n, v) for k, v in (extra_columns or {}).items()}
    steps_run = int(np.asarray(alive).shape[0]) * sweep.steps
    if sweep.stop is not None:  # (stopped_step, steps its vmapped batch took) per row
        (sstep, nrun), *saved = saved
        steps_run = int(np.asarray(nrun, np.int64).sum())
        sstep = np.asarray(sstep[:n])
        extra["stopped_step"] = np.ma.masked_less(sstep, 0)
    alive = np.asarray(alive[:n])
    dstep = np.asarray(dstep[:n])
    curves = {k: np.asarray(v[:n]) for k, v in curves.items()}
    final = {k: np.asarray(v[:n]) for k, v in final.items()}
    params = None
    if saved:  # (path, leaf (runs, [log points,] *shape)) in flattening order
        params = [(jax.tree_util.keystr(p), np.asarray(v[:n]))
                  for p, v in jax.tree_util.tree_flatten_with_path(saved[0])[0]]
    store.write_chunk(sweep, exp, group, chunk, runner.log_steps, curves, final, alive, dstep,
                      wall, params=params, extra=extra or None)
    n_stopped = int((extra["stopped_step"].count())) if "stopped_step" in extra else 0
    return int((~alive).sum()), time.perf_counter() - t0, steps_run, n_stopped
