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

from jaxdyn.spec import Param

# No JAX here: ``import jaxdyn`` (and so this module) changes no global JAX setting. Float64
# sweeps get x64 from the engine, only while they trace and run (jaxdyn.run).


@dataclass(frozen=True)
class Metric:
    """A value ``measure`` returns at every logged step.

    Args:
      name: its key in ``measure``'s dict; the curves column ``name`` and the runs column
        ``final_<name>`` (scalar metrics only).
      doc: one line for ``jaxdyn list``.
      shape: ``()`` for a scalar; ``(k,)`` (or any fixed shape) for an array metric, stored as
        a fixed-size list column of the curves table.

    The engine checks before compiling that ``measure`` returns exactly the declared names
    with these shapes.
    """

    name: str
    doc: str = ""
    shape: tuple[int, ...] = ()

@dataclass(frozen=True)
class Probe:
    """A metric too costly to compute at every log point, asked for by the sweep file::

        probes = { sharpness = { every = 500, k = 2 } }

    ``fn(exp, state, static, hp, data, opts) -> {column: scalar or small array}``, with
    ``opts`` the sweep's table merged over ``defaults``. The engine calls it at step 0, at
    every logged step at least ``every`` steps after its previous call, and at the last step;
    elsewhere its columns are NaN.

    ``check(exp, state, static, opts)``, optional, refuses option values before anything is
    compiled: it gets the state as abstract arrays (``.shape``, ``.dtype``) and raises
    ``ValueError("k must be <= the 3 parameters, got 5")`` for a value that makes no sense.
    """

    name: str
    doc: str
    fn: Callable[..., dict]
    defaults: dict = field(default_factory=lambda: {"every": 1})
    check: Callable[..., None] | None = None


@dataclass(frozen=True)
class Experiment:
    """One training run as pure functions of pytrees, and the declaration of its knobs.

    Fields:
      name: how sweep files name it (``experiment = "family.name"`` for a registered one; a
        user file's experiment is named by ``"path/file.py:VARIABLE"`` instead).
      doc: one paragraph for ``jaxdyn list``; the math of the model belongs here.
      params: the hyperparameters (:class:`jaxdyn.Param`). Static ones (shapes, variants)
        split the sweep into compiled groups; dynamic ones are traced scalars, vmapped.
      metrics: what ``measure`` returns (:class:`jaxdyn.Metric`), checked before compiling.
      init: ``init(key, static, hp, data) -> state``, the initial state (parameters,
        optimizer state, anything carried from step to step).
      step: ``step(state, key, static, hp, data) -> state``, one optimizer step. ``key`` is
        this step's own key (from the run's seed and the step number).
      measure: ``measure(state, static, hp, data) -> {metric: array}`` at logged steps.
      make_data: optional ``make_data(key, static) -> data``, built once per chunk from the
        seed's data key and shared (not copied) by every run of that seed in the chunk.
      loss: optional ``loss(params, static, hp, data) -> scalar``, the training loss of the
        parameters alone; with ``params_of_state`` it enables the generic probes (sharpness).
      params_of_state: optional ``params_of_state(state) -> params``, the pytree that ``loss``
        differentiates and that ``save = { params = ... }`` writes.
      probes: probes specific to this experiment (:class:`jaxdyn.Probe`).
      check: optional ``check(static, hp) -> None``, called with plain Python values for
        every distinct grid point before anything is compiled (``static`` also holds
        ``steps`` and ``precision``); raise ``ValueError("...")`` to refuse a value (the
        message is shown with the sweep file and the grid point, exit status 2). Any other
        exception is reported as a bug in ``check``.
      shares_data: optional ``shares_data(static) -> bool``: whether the runs of a static
        group share ``make_data``'s output per seed (the default when ``make_data`` is
        given; chunks then never span seeds). Return False for groups whose runs build
        their data themselves (``make_data`` is then called inside each run).

    ``static`` is a dict of the static hyperparameters plus ``dtype`` (the sweep's precision)
    and ``steps``; ``hp`` a dict of the dynamic ones as traced scalars of ``dtype``. The
    functions are traced with JAX's x64 mode on (for float32 sweeps too): make every array
    with ``static["dtype"]`` — an array made without a dtype would be float64 inside a sweep
    and float32 when you rebuild it in a notebook.

    Example (a user file, run with ``experiment = "mine.py:QUADRATIC"``)::

        import jax, jax.numpy as jnp, jaxdyn

        def init(key, static, hp, data):
            w = jax.random.normal(key, (static["d"],), static["dtype"])
            return {"w": w, "opt": jaxdyn.optimizer(static, hp).init(w)}

        def step(state, key, static, hp, data):
            g = jax.grad(lambda w: 0.5 * jnp.sum(w ** 2))(state["w"])
            u, opt = jaxdyn.optimizer(static, hp).update(g, state["opt"], state["w"])
            return {"w": state["w"] + u, "opt": opt}

        QUADRATIC = jaxdyn.Experiment(
            name="quadratic", doc="GD on |w|^2/2",
            params=(jaxdyn.Param("d", 10, int, static=True), jaxdyn.Param("lr", 0.1, float)),
            metrics=(jaxdyn.Metric("loss"),), init=init, step=step,
            measure=lambda s, static, hp, data: {"loss": 0.5 * jnp.sum(s["w"] ** 2)})
    """

    name: str
    doc: str
    params: tuple[Param, ...]
    metrics: tuple[Metric, ...]
    init: Callable[..., Any]
    step: Callable[..., Any]
    measure: Callable[..., dict]
    make_data: Callable[..., Any] | None = None
    loss: Callable[..., Any] | None = None
    params_of_state: Callable[[Any], Any] | None = None
    probes: tuple[Probe, ...] = ()
    check: Callable[[dict, dict], None] | None = None
    shares_data: Callable[[dict], bool] | None = None

    @property
    def static_names(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.params if p.static)

    @property
    def dynamic_names(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.params if not p.static)
