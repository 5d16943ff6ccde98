"""Optimizers and learning-rate schedules as sweep axes.

A sweep file may name an optimizer (any optax alias) and a schedule::

    optimizer = "adamw"                 # or a list: one static group per optimizer
    schedule = "warmup_cosine"          # optional: cosine | warmup_cosine | linear | exponential
    [grid]
    lr = [1e-3, 3e-3]                   # the step size (peak value of a schedule) stays `lr`
    weight_decay = [0.0, 1e-4, 1e-2]    # optax's own argument names, traced: never recompiles

This module owns the mapping from those names to hyperparameters (:func:`params_for`,
:func:`complete`, :func:`knob_owners`) — plain Python, checked before anything is compiled —
and builds the ``optax.GradientTransformation`` of a run (:func:`optimizer`) from its static
choices and traced values.

Knobs are read from the optax function's own signature: a numeric default makes a dynamic
(traced, vmapped) float hyperparameter, a bool or string default a static one (its values
split the sweep into compiled groups), ``momentum=None`` of ``sgd``/``rmsprop`` a float with
default 0 (a momentum trace is then always kept: ``g + 0·m`` is exactly ``g``). Arguments that
take arrays, masks or dtypes are not knobs. A run's value of a knob its optimizer does not
take is ``None`` (null in the runs table) and is not part of its ``run_id``.

When a sweep names no optimizer, :func:`optimizer` is ``optax.sgd(hp["lr"])``: every seed
document's setting, bit for bit.
"""

from __future__ import annotations

import functools
import inspect
import math
from typing import Any, Mapping

from jaxdyn.sweep_types import Param

#: the static hyperparameters this module adds to a sweep that names an optimizer/schedule
OPTIMIZER, SCHEDULE = "optimizer", "schedule"

#: optax arguments that are never knobs (arrays, masks, dtypes, random keys)
_NOT_KNOBS = {"learning_rate", "mask", "mu_dtype", "accumulator_dtype", "weight_decay_mask",
              "trust_ratio_mask", "key", "seed"}

#: schedule -> {knob: default}; a default ``"steps"`` means the sweep's steps (``"steps/20"``
#: a twentieth of them), resolved per run by :func:`complete`. The step size ``lr`` is
#: the schedule's initial (for warmup_cosine: peak) value. Argument names follow optax's
#: schedule functions, which the tests compare against.
SCHEDULES: dict[str, dict[str, Any]] = {
    "constant": {},
    "cosine": {"alpha": 0.0, "exponent": 1.0},
    "warmup_cosine": {"init_value": 0.0, "warmup_steps": "steps/20", "end_value": 0.0,
                      "exponent": 1.0},
    "linear": {"end_value": 0.0, "transition_steps": "steps"},
    "exponential": {"decay_rate": 0.1, "transition_steps": "steps", "transition_begin": 0.0},
}


class OptimizerError(ValueError):
    """An unknown optimizer or schedule, or a knob it does not take (message for the user)."""


@functools.cache
def knobs(name: str) -> dict[str, Any]:
    """``{knob: default}`` of optax's ``name`` (a function of optax such as ``adamw``).

    Raises OptimizerError for a name optax does not have."""
    import optax

    fn = getattr(optax, name, None) if not name.startswith("_") else None
    if fn is None or not callable(fn) or isinstance(fn, type):
        raise OptimizerError(f"unknown optimizer {name!r}: expected the name of an optax "
                             f"optimizer, e.g. {', '.join(COMMON)}")
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        raise OptimizerError(f"optax.{name} has no signature to read knobs from") from None
    if not params or params[0].name != "learning_rate":
        raise OptimizerError(f"optax.{name} is not an optimizer (its first argument is not "
                             f"learning_rate)")
    out: dict[str, Any] = {}
    for p in params[1:]:
        if p.name in _NOT_KNOBS or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        d = p.default
        if p.name == "momentum" and d is None:
            out[p.name] = 0.0
        elif isinstance(d, bool) or isinstance(d, str):
            out[p.name] = d
        elif isinstance(d, (int, float)):
            out[p.name] = float(d)
        # None or array defaults: not a knob
    return out


#: the optimizers named in messages
COMMON = ("sgd", "adam", "adamw", "rmsprop", "adagrad", "lion", "lamb", "nadam")


def _type(v):
    return bool if isinstance(v, bool) else str if isinstance(v, str) else float


def params_for(optimizers: list[str], schedules: list[str]) -> tuple[Param, ...]:
    """The hyperparameters a sweep gains by naming ``optimizers`` (and ``schedules``): the
    static ``optimizer``/``schedule`` choices and the union of their knobs (default None:
    each run gets its own optimizer's default in :func:`complete`)."""
    out: dict[str, Param] = {}
    if optimizers:
        out[OPTIMIZER] = Param(OPTIMIZER, optimizers[0], str, static=True,
                               doc="optax optimizer (jaxdyn.optimizer)")
    if schedules:
        for s in schedules:
            if s not in SCHEDULES:
                raise OptimizerError(f"unknown schedule {s!r}; expected one of "
                                     f"{sorted(SCHEDULES)}")
        out[SCHEDULE] = Param(SCHEDULE, schedules[0], str, static=True,
                              choices=tuple(SCHEDULES), doc="learning-rate schedule")
    owners = knob_owners(optimizers, schedules)
    for k, (owner_names, default) in owners.items():
        t = _type(default)
        out[k] = Param(k, None, t, static=t is not float,
                       doc=f"knob of {', '.join(owner_names)}")
    return tuple(out.values())


def knob_owners(optimizers: list[str], schedules: list[str]) -> dict[str, tuple[list, Any]]:
    """``{knob: (optimizers/schedules taking it, a default)}``."""
    owners: dict[str, tuple[list, Any]] = {}
    for o in optimizers:
        for k, d in knobs(o).items():
            owners.setdefault(k, ([], d))[0].append(o)
    for s in schedules:
        for k, d in SCHEDULES[s].items():
            if k in owners and _type(owners[k][1]) is not float:
                raise OptimizerError(f"schedule {s!r} knob {k!r} clashes with an optimizer's")
            owners.setdefault(k, ([], 0.0 if isinstance(d, str) else d))[0].append(s)
    return owners


def takes(choice: str, knob: str, is_schedule: bool) -> bool:
    return knob in (SCHEDULES[choice] if is_schedule else knobs(choice))


def check_knobs(optimizers: list[str], schedules: list[str], set_knobs: list[str]) -> None:
    """Every knob set for runs of these optimizers (and schedules) must be taken by each of
    them; OptimizerError naming the optimizer and its knobs otherwise."""
    for k in set_knobs:
        opt_knob = any(k in knobs(o) for o in optimizers)
        sch_knob = any(k in SCHEDULES[s] for s in schedules)
        if opt_knob or not sch_knob:
            for o in optimizers:
                if k not in knobs(o):
                    raise OptimizerError(
                        f"optimizer {o!r} takes no {k!r}; its knobs: "
                        f"{sorted(knobs(o)) or 'none'} (and lr). To sweep knobs of "
                        f"different optimizers, write one [[grid]] block per optimizer")
        if sch_knob:
            for s in schedules:
                if k not in SCHEDULES[s]:
                    raise OptimizerError(
                        f"schedule {s!r} takes no {k!r}; its knobs: "
                        f"{sorted(SCHEDULES[s]) or 'none'}")


def _resolve(default, steps: int):
    if default == "steps":
        return float(steps)
    if default == "steps/20":
        return float(max(1, round(steps / 20)))
    return default


def complete(hp: dict, knob_names: tuple[str, ...], steps: int) -> dict:
    """A run's hyperparameters with each knob of its optimizer/schedule filled with that
    optimizer's default where unset, and ``None`` for knobs it does not take."""
    opt, sch = hp.get(OPTIMIZER), hp.get(SCHEDULE)
    own = {**(knobs(opt) if opt else {}), **(SCHEDULES[sch] if sch else {})}
    out = dict(hp)
    for k in knob_names:
        if k not in own:
            out[k] = None
        elif out.get(k) is None:
            out[k] = _resolve(own[k], steps)
    return out


# ---- building the transformation (needs optax, JAX) ---------------------------------------
def schedule_fn(name: str, lr, hp: Mapping[str, Any], steps: int):
    """The learning rate at step ``count`` as a function of traced knobs: optax's schedule of
    the same name and arguments (``decay_steps``/``transition_steps`` default to ``steps``),
    written with ``jnp`` so that every argument may be a traced value."""
    import jax.numpy as jnp

    def knob(k):
        v = hp.get(k)
        return _resolve(SCHEDULES[name][k], steps) if v is None else v

    if name == "constant":
        return lambda count: lr * jnp.ones_like(jnp.asarray(count, jnp.result_type(lr)))
    if name == "cosine":
        alpha, exponent = knob("alpha"), knob("exponent")

        def f(count):
            t = jnp.minimum(count, steps) / steps
            cos = (0.5 * (1 + jnp.cos(math.pi * t))) ** exponent
            return lr * ((1 - alpha) * cos + alpha)
        return f
    if name == "warmup_cosine":
        init, warm, end, exponent = (knob("init_value"), knob("warmup_steps"),
                                     knob("end_value"), knob("exponent"))

        def f(count):
            up = init + (lr - init) * jnp.clip(count / jnp.maximum(warm, 1), 0, 1)
            span = jnp.maximum(steps - warm, 1)
            t = jnp.clip((count - warm) / span, 0, 1)
            down = end + (lr - end) * (0.5 * (1 + jnp.cos(math.pi * t))) ** exponent
            return jnp.where(count < warm, up, down)
        return f
    if name == "linear":
        end, n = knob("end_value"), knob("transition_steps")

        def f(count):
            return lr + (end - lr) * jnp.clip(count / jnp.maximum(n, 1), 0, 1)
        return f
    if name == "exponential":
        rate, n, begin = knob("decay_rate"), knob("transition_steps"), knob("transition_begin")

        def f(count):
            t = jnp.maximum(count - begin, 0)
            return lr * rate ** (t / n)
        return f
    raise OptimizerError(f"unknown schedule {name!r}")


def optimizer(static: Mapping[str, Any], hp: Mapping[str, Any]):
    """The run's ``optax.GradientTransformation``.

    Args:
      static: the run's static values (the engine's ``static`` dict): ``optimizer``, a
        ``schedule`` and boolean/string knobs when the sweep names them, and ``steps``.
      hp: the run's dynamic values (traced scalars): ``lr`` and numeric knobs.

    Returns:
      ``optax.<optimizer>(learning_rate=lr or schedule(lr), **knobs)``; plain
      ``optax.sgd(hp["lr"])`` when the sweep names no optimizer and no schedule.

    Example, in an experiment's ``init``/``step``::

        opt = jaxdyn.optimizer(static, hp)
        updates, opt_state = opt.update(grads, state["opt"], state["params"])
    """
    import optax

    name = static.get(OPTIMIZER)
    sched = static.get(SCHEDULE)
    if name is None and sched is None:
        return optax.sgd(hp["lr"])
    name = name or "sgd"
    lr = hp["lr"]
    if sched is not None and sched != "constant":
        lr = schedule_fn(sched, lr, hp, int(static["steps"]))
    kw = {}
    for k in knobs(name):
        v = static.get(k, hp.get(k))
        if v is not None:
            kw[k] = v
    return getattr(optax, name)(learning_rate=lr, **kw)
