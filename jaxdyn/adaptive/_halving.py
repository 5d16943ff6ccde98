"""``[halving]``: successive halving with compaction.

Every run starts; at each rung (a logged step) the runs of each competition group (runs
sharing the ``by`` hyperparameters; the whole sweep by default) are ranked by ``metric`` at
that step, and the best ``keep`` fraction (rounded up, at least one) continues. The
survivors are compacted into fresh, smaller chunks that continue from their carried state
(``make_run_fn(..., stage=True)``: the same scan body, so a survivor's curve is bitwise the
curve of a run computed at once). Culled runs are written at their rung with their curve up
to it and ``culled_step``; survivors at the end with ``culled_step`` null.

Ranking: NaN (a diverged run) ranks last; ties go to the smaller run_id.

Resume: a run is written once, when it is culled or finishes. On a re-run, the unwritten
runs are computed again from step 0, and each rung's decision reads the written runs'
metric at that rung from the curves table (the same bits), so it culls the same runs.
"""

from __future__ import annotations

import math
import time

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from jaxdyn.engine.plan import plan_groups
from jaxdyn.engine.program import (RUN_AXIS, abstract_run_inputs, data_key, make_run_fn,
                                   micro_batched, run_arrays)
from jaxdyn.engine.runner import ChunkRunner


class StageRunner(ChunkRunner):
    """A group's compiled program that runs log points lo..hi of a chunk of runs from their
    carried state: ``jit(shard_map(micro-batched vmap(stage_run)))``."""

    def __init__(self, exp, sweep, group, probes=(), micro_batch=None):
        super().__init__(exp, sweep, group, probes, micro_batch)
        stage = make_run_fn(exp, self.static, self.log_steps, probes,
                            diverge_above=sweep.diverge_above, axis_name=RUN_AXIS, stage=True)
        shared, static = self.per_seed, self.static
        dyn_a, seed_a = abstract_run_inputs(exp)
        data_a = jax.eval_shape(lambda: exp.make_data(data_key(0), static)) if shared else None
        self.carry_shape = jax.eval_shape(stage.init_carry, dyn_a, seed_a, data_a)

        def local_chunk(dyn, seeds, carry, data_seed, lo, hi):
            data = exp.make_data(data_key(data_seed), static) if shared else None

            def one(d, s, c, x):
                return stage(d, s, x, c, lo, hi)
            return micro_batched(jax.vmap(one, in_axes=(0, 0, 0, None), axis_name=RUN_AXIS),
                                 self.micro, (dyn, seeds, carry), data)

        fn = jax.shard_map(local_chunk, mesh=self.mesh,
                           in_specs=(P("runs"), P("runs"), P("runs"), P(), P(), P()),
                           out_specs=P("runs"), check_vma=False)
        runs_sh, rep = NamedSharding(self.mesh, P("runs")), NamedSharding(self.mesh, P())
        self._jitted = jax.jit(fn, in_shardings=(runs_sh, runs_sh, runs_sh, rep, rep, rep),
                               out_shardings=runs_sh)

    def _args(self, n: int):
        dyn, seeds, data_seed = super()._args(n)
        carry = jax.tree.map(lambda a: jax.ShapeDtypeStruct((n,) + a.shape, a.dtype),
                             self.carry_shape)
        i32 = jax.ShapeDtypeStruct((), jnp.int32)
        return dyn, seeds, carry, data_seed, i32, i32

    def run_stage(self, runs, carry, lo: int, hi: int):
        """Dispatch one chunk: ``carry`` (numpy pytree, leading axis len(runs)) or None at
        the first stage. Returns device arrays ``(curves, carry, steps_run)``."""
        n = len(runs)
        size = self.batch or self.padded(n)
        pad = size - n
        dyn, seeds = run_arrays(list(runs) + [runs[-1]] * pad, self.dyn_names)
        if carry is None:
            carry = jax.tree.map(lambda a: np.zeros((size,) + a.shape, a.dtype),
                                 self.carry_shape)
        else:
            carry = jax.tree.map(lambda a: np.concatenate([a, np.repeat(a[-1:], pad, 0)])
                                 if pad else a, carry)
        return self.compiled(size)(dyn, seeds, carry, np.uint32(runs[0].seed),
                                   np.int32(lo), np.int32(hi))


def _n_keep(keep: float, n: int) -> int:
    return max(1, math.ceil(keep * n - 1e-9))


def schedule(n: int, keep: float, rungs: list[int]) -> list[int]:
    """Runs of one competition group that compute each stage (n, then the kept counts)."""
    out = [n]
    for _ in rungs:
        out.append(_n_keep(keep, out[-1]))
    return out


def rank_keep(values: dict, keep: float, mode: str) -> set:
    """The run_ids of ``values`` ({run_id: metric}) that continue: the best ``keep``
    fraction (rounded up, at least one); NaN last, ties by run_id."""
    def key(rid):
        v = values[rid]
        bad = v is None or not np.isfinite(v)
        return (bad, 0.0 if bad else (v if mode == "min" else -v), rid)
    order = sorted(values, key=key)
    return set(order[:_n_keep(keep, len(order))])


def run_halving(sweep, exp, store, *, chunk_size=None, micro_batch=None, progress=None,
                probes=None, process_index=0, process_count=1) -> dict:
    """Every run of the sweep through the rungs; returns the summary (``halving``: the runs
    per stage, run·steps computed against the full grid's)."""
    from jaxdyn.engine.program import resolve_probes
    from jaxdyn.results.tables import Results

    t0 = time.perf_counter()
    cfg = sweep.halving
    metric, rungs, by = cfg["metric"], cfg["rungs"], cfg["by"]
    if probes is None:
        probes = resolve_probes(sweep, exp)
    all_runs = sweep.runs()
    log_steps = sweep.log.steps(sweep.steps)
    index = {int(s): j for j, s in enumerate(log_steps)}
    bounds = [index[r] for r in rungs] + [len(log_steps) - 1]
    done = store.done_run_ids()
    # the written runs' metric at every rung: what a re-run's decisions read
    table_vals: dict = {}
    if done:
        steps_sql = ", ".join(str(r) for r in rungs)
        c = Results(store.dir).curves(columns=[metric], where=f"step IN ({steps_sql})")
        for rid, st, v in zip(c.run_id, c.step, c[metric]):
            table_vals[(rid, int(st))] = float(v)
    groups = plan_groups(sweep, exp, all_runs)
    comp = {r.run_id: tuple(r.seed if b == "seed" else r.hp[b] for b in by) for r in all_runs}
    host = {}  # group index -> dict of host arrays for its unwritten runs
    for g in groups:
        todo = sorted((r for r in g.runs if r.run_id not in done), key=lambda r: r.run_id)
        host[g.index] = {"runs": todo, "pos": {r.run_id: i for i, r in enumerate(todo)},
                         "curves": None, "carry": None}
    host_of = {r.run_id: h for h in host.values() for r in h["runs"]}
    runners: dict = {}
    summary = {"runs_total": len(all_runs), "runs_done_before": len(done & set(comp)),
               "runs_run": 0, "diverged": 0, "compile_s": 0.0, "chunks": 0,
               "steps": sweep.steps, "run_steps": 0, "write_s": 0.0, "write_wait_s": 0.0}
    candidates = set(comp)  # still in the competition
    per_stage = []
    for k, hi in enumerate(bounds):
        lo = 0 if k == 0 else bounds[k - 1] + 1
        per_stage.append(len(candidates))
        work = []
        for g in groups:
            h = host[g.index]
            active = [r for r in h["runs"] if r.run_id in candidates]
            if not active:
                continue
            runner = runners.get(g.label) or StageRunner(exp, sweep, g, probes, micro_batch)
            runners[g.label] = runner
            # a shared-data group's chunks never span seeds (each chunk makes its seed's data)
            parts = [active]
            if runner.per_seed:
                by_seed: dict = {}
                for r in active:
                    by_seed.setdefault(r.seed, []).append(r)
                parts = [by_seed[k] for k in sorted(by_seed)]
            size = runner.choose_chunk(max(len(q) for q in parts),
                                       chunk_size or sweep.chunk_size)
            work += [(runner, g, q[i:i + size]) for q in parts for i in range(0, len(q), size)]
        if progress:
            progress("start", total_runs=sum(len(c) for *_, c in work), total_chunks=len(work))
        for i, (runner, g, chunk) in enumerate(work):
            h = host[g.index]
            pos = np.asarray([h["pos"][r.run_id] for r in chunk])
            carry_in = None if k == 0 else jax.tree.map(lambda a: a[pos], h["carry"])
            tc = time.perf_counter()
            curves, carry, nrun = jax.device_get(runner.run_stage(chunk, carry_in, lo, hi))
            wall = time.perf_counter() - tc
            n = len(chunk)
            summary["run_steps"] += int(np.asarray(nrun, np.int64).sum())
            summary["chunks"] += 1
            if h["curves"] is None:
                h["curves"] = {m: np.full((len(h["runs"]),) + v.shape[1:], np.nan, v.dtype)
                               for m, v in curves.items()}
                h["carry"] = jax.tree.map(lambda a: np.zeros((len(h["runs"]),) + a.shape[1:],
                                                             a.dtype), carry)
                h["wall"] = np.zeros(len(h["runs"]))
            for m, v in curves.items():
                h["curves"][m][pos, lo:hi + 1] = v[:n, lo:hi + 1]
            for dst, src in zip(jax.tree.leaves(h["carry"]), jax.tree.leaves(carry)):
                dst[pos] = src[:n]
            h["wall"][pos] += wall
            if progress:
                progress("chunk", runs=n, wall=wall, index=i)
        last = k == len(bounds) - 1
        step = int(log_steps[hi])
        if last:
            keep = candidates
        else:  # the decision, per competition group
            keep = set()
            by_comp: dict = {}
            for rid in candidates:
                by_comp.setdefault(comp[rid], {})[rid] = _value(rid, hi, step, metric,
                                                                host_of, table_vals)
            for vals in by_comp.values():
                keep |= rank_keep(vals, cfg["keep"], cfg["mode"])
        out = candidates - keep if not last else candidates
        tw = time.perf_counter()
        for g in groups:
            h = host[g.index]
            ws = [r for r in h["runs"] if r.run_id in out]
            if ws:
                summary["diverged"] += _write(store, exp, sweep, g, h, ws, hi, log_steps,
                                              None if last else step)
                summary["runs_run"] += len(ws)
        summary["write_s"] += time.perf_counter() - tw
        candidates = keep
    summary["compile_s"] = sum(r.compile_s for r in runners.values())
    summary["tune_s"] = sum(r.tune_s for r in runners.values())
    summary["compiled_programs"] = sum(len(r._compiled) for r in runners.values())
    summary["micro_batch"] = sorted({r.micro or 0 for r in runners.values()})
    summary["wall_s"] = time.perf_counter() - t0
    summary["run_steps_per_s"] = summary["run_steps"] / max(summary["wall_s"], 1e-9)
    deltas = [int(log_steps[b]) - (int(log_steps[bounds[i - 1]]) if i else 0)
              for i, b in enumerate(bounds)]
    summary["halving"] = {
        "runs_per_stage": per_stage, "rungs": rungs, "steps_per_stage": deltas,
        "run_steps": summary["run_steps"],
        "run_steps_schedule": int(sum(n * d for n, d in zip(per_stage, deltas))),
        "run_steps_full": len(all_runs) * sweep.steps}
    store.write_progress({"pid": __import__("os").getpid(), "process_index": 0,
                          "started": time.time() - summary["wall_s"], "chunks_total":
                          summary["chunks"], "chunks_done": summary["chunks"],
                          "runs_total": summary["runs_run"], "runs_done": summary["runs_run"],
                          "steps": sweep.steps, "finished": time.time()}, 0)
    return summary


def _value(rid, j, step, metric, host_of, table_vals) -> float:
    """A candidate's metric at log point j (step): computed now, or read from the table."""
    h = host_of.get(rid)
    if h is not None:
        return float(h["curves"][metric][h["pos"][rid], j])
    return table_vals.get((rid, step), float("nan"))


def _write(store, exp, sweep, group, h, runs, hi, log_steps, culled_step) -> int:
    pos = np.asarray([h["pos"][r.run_id] for r in runs])
    state, alive, dstep, last = jax.tree.map(lambda a: a[pos], h["carry"])
    curves = {m: v[pos, :hi + 1] for m, v in h["curves"].items()}
    n = len(runs)
    extra = {"culled_step": np.ma.masked_all(n, np.int64) if culled_step is None
             else np.full(n, culled_step, np.int64)}
    store.write_chunk(sweep, exp, group, runs, log_steps[:hi + 1], curves, last,
                      np.asarray(alive), np.asarray(dstep), float(h["wall"][pos].max()),
                      extra=extra)
    return int((~np.asarray(alive)).sum())
