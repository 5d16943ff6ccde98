"""One training run as a pure function, and what it is made of.

Owns: ``make_run_fn`` (init, then a ``lax.scan`` over log segments of a ``fori_loop`` over
steps, with per-run divergence freezing and probes on their own schedule), the run's keys
and inputs (``run_setup``, ``data_key``, ``run_arrays``), the micro-batched vmap over a
device's runs (``micro_batched``), the sweep's probes (``resolve_probes``) and the jaxpr walker
(``equations``) that host and tuning heuristics read.

Must not: know about devices, chunks, files or the sweep loop. Everything here is a pure
function of its arguments that ``jit``, ``vmap``, ``shard_map`` and ``scan`` compose.

Reproducibility: a run's keys come from its ``seed`` alone (``PRNGKey(seed)`` folded with 0
for init, 1 for steps, 2 for data), so runs with the same seed share initialization and data
order across the grid, and nothing depends on the chunk, the device count or a resume.
"""

from __future__ import annotations

import functools
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxdyn.experiments.base import Experiment
from jaxdyn.spec import Run, SpecError, Sweep

DTYPES = {"float32": jnp.float32, "float64": jnp.float64}

#: The vmap axis over one device's runs (a segment's divergence check reduces over it).
RUN_AXIS = "run"


def group_static(sweep: Sweep, signature: dict) -> dict:
    """The ``static`` dict every function of a group sees: its static hyperparameters, the
    sweep's ``dtype`` and ``steps``."""
    return {**signature, "dtype": DTYPES[sweep.precision], "steps": sweep.steps}


def abstract_run_inputs(exp: Experiment) -> tuple[dict, jax.ShapeDtypeStruct]:
    """One run's inputs as abstract values, for tracing without running: the dynamic
    hyperparameters (float64, as ``run_arrays`` gives them) and the seed (uint32)."""
    return ({k: jax.ShapeDtypeStruct((), jnp.float64) for k in exp.dynamic_names},
            jax.ShapeDtypeStruct((), jnp.uint32))


def _all_finite(tree, bound: float = float("inf")) -> jax.Array:
    """True iff every float leaf is finite and below ``bound`` in absolute value.
    (|x| < bound is False for NaN and, with bound = inf, for ±inf: one reduction per leaf.)"""
    leaves = [jnp.all(jnp.abs(x) < bound) for x in jax.tree.leaves(tree)
              if jnp.issubdtype(jnp.asarray(x).dtype, jnp.inexact)]
    # an elementwise chain of ands, not stack + all: under vmap a stack of (runs,) leaves is
    # a (leaves, runs) array and a reduction, which XLA cannot fuse into the step's kernel
    return functools.reduce(jnp.logical_and, leaves) if leaves else jnp.bool_(True)


def _freeze(ok, new, old):
    return jax.tree.map(lambda a, b: jnp.where(ok, a, b), new, old)


def probe_schedule(log_steps: np.ndarray, every: int) -> np.ndarray:
    """Which log points a probe runs at: step 0, every logged step at least ``every`` steps
    after the previous probe, and the last step."""
    flags = np.zeros(len(log_steps), bool)
    last = None
    for j, s in enumerate(log_steps):
        if last is None or s - last >= every or j == len(log_steps) - 1:
            flags[j] = True
            last = s
    return flags


def _nan_like(tree):
    return jax.tree.map(lambda x: jnp.full(x.shape, jnp.nan, x.dtype), tree)


def run_setup(exp: Experiment, static: dict, dyn: dict, seed, data):
    """A run's hyperparameters, step key, data and initial state, from its seed alone:
    ``PRNGKey(seed)`` folded with 0 for init, 1 for steps, 2 for data (unless shared data
    are given). Returns ``(hp, k_step, data, state0)``."""
    hp = {k: jnp.asarray(v).astype(static["dtype"]) for k, v in dyn.items()}
    key = jax.random.PRNGKey(seed)
    k_init, k_step = jax.random.fold_in(key, 0), jax.random.fold_in(key, 1)
    if data is None and exp.make_data is not None:
        data = exp.make_data(data_key(seed), static)
    return hp, k_step, data, exp.init(k_init, static, hp, data)


def data_key(seed) -> jax.Array:
    """The key of the data a seed's runs share (``run_setup``'s k_data)."""
    return jax.random.fold_in(jax.random.PRNGKey(seed), 2)


def run_arrays(runs: Sequence[Run], dyn_names: Sequence[str]) -> tuple[dict, np.ndarray]:
    """The dynamic hyperparameters (float64) and seeds (uint32) of ``runs``, one row each."""
    return ({k: np.asarray([r.hp[k] for r in runs], np.float64) for k in dyn_names},
            np.asarray([r.seed for r in runs], np.uint32))


def make_run_fn(exp: Experiment, static: dict, log_steps: np.ndarray,
                probes: Sequence[tuple] = (), unroll: int = 1,
                diverge_above: float | None = None, axis_name: str | None = None,
                save_params: str | None = None, stop: Callable | None = None,
                stage: bool = False) -> Callable:
    """One run as a pure function ``run(dyn, seed, data) -> (curves, final, alive, step)``.

    ``stop``: a goal, ``stop(metrics) -> bool``, checked at every log point: a run that
    reaches it is frozen there (its state stops changing, its later curve rows are NaN) and
    an output ``(stopped_step, steps_run)`` follows ``step`` (``stopped_step`` -1 for a run
    that never stopped; ``steps_run``: the steps its vmapped batch computed). A log
    segment in which no run of the batch is still training (all stopped or diverged) is
    skipped, one branch for the whole batch (``axis_name``), so the chunk ends early.

    ``stage``: return ``stage_run(dyn, seed, data, carry, lo, hi)`` instead, which computes
    the log points lo..hi from a carry (successive halving, :mod:`jaxdyn.adaptive`).

    ``save_params``: "final" or "log" appends a fifth output, ``exp.params_of_state`` of the
    final (frozen) state, or of the state at every log point (leading axis: log points).

    ``dyn``: dict of scalar dynamic hyperparameters. ``curves[m]`` has shape
    ``(len(log_steps),) + metric shape``; values logged after a divergence are NaN.
    A run whose state turns NaN/inf is frozen at its last finite state.
    ``axis_name``: the ``vmap`` axis over runs, if any; with it, the check for divergence
    inside a log segment is one branch for the whole batch (see ``segment``).
    ``probes``: ``(Probe, opts)`` pairs; a probe's columns are NaN where it did not run.
    """
    # Log point j runs steps log_steps[j-1] .. log_steps[j] - 1, then measures (point 0
    # runs none): one scan over all log points, so the program holds one copy of ``measure``
    # (compile time grows with every copy of the metrics and probes).
    log_steps = np.asarray(log_steps, np.int64)
    starts = np.concatenate([[0], log_steps[:-1]])
    lengths = log_steps - starts
    bound = float("inf") if diverge_above is None else float(diverge_above)
    flags = np.stack([probe_schedule(log_steps, int(o["every"])) for _, o in probes], 1) \
        if probes else np.zeros((len(log_steps), 0), bool)

    metric_keys: list[str] = []  # the experiment's own metrics (not probes), set when traced

    def measure(state, hp, data, probe_flags):
        m = dict(exp.measure(state, static, hp, data))
        metric_keys[:] = list(m)
        for j, (probe, opts) in enumerate(probes):
            def run_probe(state=state, probe=probe, opts=opts):
                return probe.fn(exp, state, static, hp, data, opts)
            shapes = jax.eval_shape(run_probe)
            # the flag is not batched, so under vmap this stays a real branch: the probe's
            # cost is paid only where it runs
            m.update(jax.lax.cond(probe_flags[j], run_probe, lambda s=shapes: _nan_like(s)))
        return m

    def build(dyn, seed, data):
        """A run's inputs, initial state and its ``segment`` (one log point's steps and
        measurement, the body of the scan), shared by ``run`` and ``stage_run``."""
        hp, k_step, data, state0 = run_setup(exp, static, dyn, seed, data)
        alive0 = _all_finite(state0, bound)

        def guarded(i, c):
            """One step that freezes a run at its last finite state and records the step
            at which it diverged."""
            state, alive, dstep = c
            new = exp.step(state, jax.random.fold_in(k_step, i), static, hp, data)
            ok = alive & _all_finite(new, bound)
            return (_freeze(ok, new, state), ok, jnp.where(alive & ~ok, i + 1, dstep))

        def steps(body, start, n, carry):
            if unroll == 1:  # one loop: the step is compiled once
                return jax.lax.fori_loop(start, start + n, body, carry)

            # Several steps per loop iteration let XLA fuse them into one kernel that keeps
            # small per-run states in registers; the remainder runs one step at a time.
            def body_unrolled(j, c):
                for u in range(unroll):
                    c = body(start + j * unroll + u, c)
                return c

            carry = jax.lax.fori_loop(0, n // unroll, body_unrolled, carry)
            return jax.lax.fori_loop(start + (n // unroll) * unroll, start + n, body, carry)

        def advance(state, active, dstep, start, n):
            """The ``n`` steps of one segment for the runs in ``active``: ``(state, ok,
            dstep)``, ``ok`` False for a run that diverged in it (frozen at its last finite
            state, ``dstep`` the step)."""

            # Fast path: the steps without the per-step freeze, which on a CPU costs more
            # kernels than a cheap step itself (a reduction over the state's leaves, then a
            # select per leaf). Only a flag of "ever left the finite region" is kept. A run
            # that is not active steps on (its values are discarded) and gets its frozen
            # state back once, at the end of the segment.
            def fast(i, c):
                st, bad = c
                new = exp.step(st, jax.random.fold_in(k_step, i), static, hp, data)
                return new, bad | ~_all_finite(new, bound)

            fast_state, bad = steps(fast, start, n, (state, jnp.bool_(False)))
            fast_state = _freeze(active, fast_state, state)
            bad = active & bad
            # If any run of the chunk left it, the segment is run again from its start with
            # the guarded step: the same values for every run, and the exact freeze for the
            # bad ones. The flag is reduced over the chunk so that under vmap this stays a
            # real branch, taken only by the segments where something diverged.
            any_bad = jax.lax.psum(bad.astype(jnp.int32), axis_name) > 0 if axis_name else bad
            return jax.lax.cond(any_bad,
                                lambda: steps(guarded, start, n, (state, active, dstep)),
                                lambda: (fast_state, active, dstep))

        def segment(carry, seg):
            start, n, probe_flags = seg
            state, alive, dstep, _ = carry
            carry = advance(state, alive, dstep, start, n)
            state, alive, _ = carry
            m = measure(state, hp, data, probe_flags)
            # The state is frozen at its last finite value, so the last log point's unmasked
            # metrics are the final metrics, also of a diverged run (its values just before
            # it diverged). Probes are not part of them. Carried, not stacked per log point:
            # on a mean-model chunk that cut XLA's temporaries to under a third and shortened
            # the compile, with the same bits (figures in benchmarks/README.md).
            last = {k: m[k] for k in metric_keys}
            ys = {k: jnp.where(alive, v, jnp.nan) for k, v in m.items()}
            if save_params == "log":
                return (*carry, last), (ys, exp.params_of_state(state))
            return (*carry, last), ys

        shapes = jax.eval_shape(lambda: measure(state0, hp, data, flags[0]))  # sets metric_keys
        last0 = {k: jnp.zeros(shapes[k].shape, shapes[k].dtype) for k in metric_keys}
        carry0 = (state0, alive0, jnp.where(alive0, -1, 0).astype(jnp.int64), last0)
        return hp, data, advance, segment, carry0

    def run(dyn, seed, data):
        hp, data, advance, segment, carry0 = build(dyn, seed, data)
        if stop is not None:
            return run_with_stop(hp, data, advance, carry0)
        (state, alive, dstep, final), curves = jax.lax.scan(segment, carry0,
                                                            (starts, lengths, flags))
        if save_params == "log":
            curves, saved = curves
            return curves, final, alive, dstep, saved
        if save_params == "final":
            return curves, final, alive, dstep, exp.params_of_state(state)
        return curves, final, alive, dstep

    def stage_run(dyn, seed, data, carry_in, lo, hi):
        """Log points ``lo`` .. ``hi`` (indices) of a run, from ``carry_in`` (the carry after
        log point lo - 1; ignored when lo is 0: the run starts from its initial state).
        Returns ``(curves, carry, steps_run)``: curves NaN outside the window, the carry
        after point hi, and the steps computed. The window is one branch per log point for
        the whole batch (lo and hi are not batched): segments outside it cost nothing, and
        the ones inside are ``run``'s own ``segment``, so a run computed in stages has the
        bits of a run computed at once."""
        _, _, _, segment, carry0 = build(dyn, seed, data)
        carry = jax.lax.cond(lo == 0, lambda: carry0, lambda: carry_in)
        xs = (starts, lengths, flags)
        ys_shape = jax.eval_shape(lambda: segment(carry0, jax.tree.map(lambda x: x[0], xs)))[1]

        def body(c, x):
            carry, nrun = c
            j, seg = x
            inside = (j >= lo) & (j <= hi)
            carry, ys = jax.lax.cond(inside, lambda: segment(carry, seg),
                                     lambda: (carry, _nan_like(ys_shape)))
            return (carry, nrun + jnp.where(inside, seg[1], 0)), ys

        (carry, nrun), curves = jax.lax.scan(body, (carry, jnp.int64(0)),
                                             (jnp.arange(len(log_steps)), xs))
        return curves, carry, nrun

    if stage:
        if stop is not None or save_params is not None:
            raise ValueError("stage_run: no goal stops or saved parameters")
        # the carry a run starts from (for the shapes of a stage program's inputs)
        stage_run.init_carry = lambda dyn, seed, data: build(dyn, seed, data)[-1]
        return stage_run

    def run_with_stop(hp, data, advance, carry0):
        """``run`` with the goal: the same steps as ``segment``'s, for the runs still
        training only, and the whole segment skipped when none is."""
        def segment(carry, seg):
            start, n, probe_flags = seg
            state, alive, dstep, last, sstep, nrun = carry
            active = alive & (sstep < 0)

            def advance_active():
                st, ok, ds = advance(state, active, dstep, start, n)
                # a stopped run stays alive (``ok`` is False for it: it did not step)
                return st, jnp.where(active, ok, alive), ds

            n_active = jax.lax.psum(active.astype(jnp.int32), axis_name) if axis_name \
                else active.astype(jnp.int32)
            state, alive, dstep = jax.lax.cond(n_active > 0, advance_active,
                                               lambda: (state, alive, dstep))
            nrun = nrun + jnp.where(n_active > 0, n, 0).astype(nrun.dtype)
            m = measure(state, hp, data, probe_flags)
            was_stopped = sstep >= 0
            hit = alive & ~was_stopped & stop({k: m[k] for k in metric_keys})
            sstep = jnp.where(hit, start + n, sstep)
            last = {k: jnp.where(was_stopped, last[k], m[k]) for k in metric_keys}
            ys = {k: jnp.where(alive & ~was_stopped, v, jnp.nan) for k, v in m.items()}
            carry = (state, alive, dstep, last, sstep, nrun)
            if save_params == "log":
                return carry, (ys, exp.params_of_state(state))
            return carry, ys

        (state, alive, dstep, final, sstep, nrun), curves = jax.lax.scan(
            segment, (*carry0, jnp.int64(-1), jnp.int64(0)), (starts, lengths, flags))
        info = (sstep, nrun)
        if save_params == "log":
            curves, saved = curves
            return curves, final, alive, dstep, info, saved
        if save_params == "final":
            return curves, final, alive, dstep, info, exp.params_of_state(state)
        return curves, final, alive, dstep, info
    return run


def resolve_probes(sweep: Sweep, exp: Experiment) -> list[tuple]:
    """The sweep's ``probes`` table as ``(Probe, opts)`` pairs; SpecError if it asks for an
    unknown probe or option."""
    from jaxdyn.probes import GENERIC

    known = {**{p.name: p for p in exp.probes}}
    if exp.loss is not None and exp.params_of_state is not None:
        known = {**GENERIC, **known}
    out = []
    for name, opts in sweep.probes.items():
        if name not in known:
            raise SpecError(sweep.file, f"probes.{name}",
                            f"unknown probe for {exp.name}; available: {sorted(known)}")
        probe = known[name]
        for k, v in opts.items():
            if k not in probe.defaults:
                raise SpecError(sweep.file, f"probes.{name}.{k}",
                                f"unknown option; expected one of {sorted(probe.defaults)}")
            want = type(probe.defaults[k])
            if want is float and isinstance(v, int) and not isinstance(v, bool):
                v = float(v)
            if not isinstance(v, want) or isinstance(v, bool) != (want is bool):
                raise SpecError(sweep.file, f"probes.{name}.{k}",
                                f"expected {want.__name__}, got {v!r}")
        merged = {**probe.defaults, **opts}
        if int(merged["every"]) < 1:
            raise SpecError(sweep.file, f"probes.{name}.every", "expected an integer >= 1")
        out.append((probe, merged))
    return out


def shares_data(exp: Experiment, static: dict) -> bool:
    """Whether runs of this static group get data from ``make_data`` shared per seed (then
    chunks never span seeds): yes when the experiment has ``make_data``, unless its
    ``shares_data(static)`` hook says no for this group."""
    if exp.make_data is None:
        return False
    return exp.shares_data is None or bool(exp.shares_data(static))


def micro_batched(vrun: Callable, micro: int | None, runs_args: tuple, data):
    """``vrun(*runs_args, data)`` over the leading (run) axis, ``micro`` runs at a time
    through ``lax.map`` (all at once if ``micro`` is None or covers them)."""
    n = jax.tree.leaves(runs_args)[0].shape[0]
    if micro is None or micro >= n:
        return vrun(*runs_args, data)
    split = functools.partial(jax.tree.map, lambda x: x.reshape((n // micro, micro)
                                                                + x.shape[1:]))
    out = jax.lax.map(lambda a: vrun(*a, data), split(runs_args))
    return jax.tree.map(lambda x: x.reshape((n,) + x.shape[2:]), out)


def equations(jaxpr):
    """Every equation of a jaxpr, those of its sub-jaxprs (loop bodies, branches) included."""
    for eqn in jaxpr.eqns:
        yield eqn
        for v in eqn.params.values():
            for sub in (v if isinstance(v, (tuple, list)) else (v,)):
                inner = getattr(sub, "jaxpr", sub)  # ClosedJaxpr -> Jaxpr
                if hasattr(inner, "eqns"):
                    yield from equations(inner)
