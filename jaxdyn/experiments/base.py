"""What an experiment is: a few pure functions over pytrees and a declaration of its knobs.

An experiment module defines, in the purejaxrl style, one training run as pure functions
that the engine composes with ``jit``, ``vmap`` and ``scan``::

    make_data(key, static)                 -> data     (optional; shared by runs of a seed)
    init(key, static, hp, data)            -> state    (params, optimizer state, ...)
    step(state, key, static, hp, data)     -> state    (one optimizer step)
    measure(state, static, hp, data)       -> {metric: scalar or small array}

``static`` is a plain dict of the static hyperparameters plus ``dtype`` (from the sweep's
precision) and ``steps``; ``hp`` is a dict of the dynamic hyperparameters as traced scalars
of ``dtype``. Any state leaf that turns NaN/inf freezes the run (the engine handles it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import jax

from jaxdyn.spec import Param

# Float64 sweeps need x64. Float32 sweeps stay float32 because every experiment creates its
# arrays with static["dtype"] and the engine casts hyperparameters to it.
jax.config.update("jax_enable_x64", True)


@dataclass(frozen=True)
class Metric:
    name: str
    doc: str = ""
    shape: tuple[int, ...] = ()  # () scalar; (k,) an array metric stored as a list column


@dataclass(frozen=True)
class Probe:
    """A metric too costly to compute at every log point, asked for by the sweep file::

        probes = { sharpness = { every = 500, k = 2 } }

    ``fn(exp, state, static, hp, data, opts) -> {column: scalar or small array}``, with
    ``opts`` the sweep's table merged over ``defaults``. The engine calls it at step 0, at
    every logged step at least ``every`` steps after its previous call, and at the last step;
    elsewhere its columns are NaN.
    """

    name: str
    doc: str
    fn: Callable[..., dict]
    defaults: dict = field(default_factory=lambda: {"every": 1})


@dataclass(frozen=True)
class Experiment:
    name: str
    doc: str
    params: tuple[Param, ...]
    metrics: tuple[Metric, ...]
    init: Callable[..., Any]
    step: Callable[..., Any]
    measure: Callable[..., dict]
    make_data: Callable[..., Any] | None = None
    #: loss(params, static, hp, data) -> scalar and params(state) -> pytree, for probes
    loss: Callable[..., Any] | None = None
    params_of_state: Callable[[Any], Any] | None = None
    #: probes specific to this experiment (generic ones, like sharpness, live in probes.py)
    probes: tuple[Probe, ...] = ()
    extra: dict = field(default_factory=dict)

    @property
    def static_names(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.params if p.static)

    @property
    def dynamic_names(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.params if not p.static)
