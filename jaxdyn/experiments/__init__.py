"""The experiment registry: ``"family.name" -> Experiment``.

Modules are imported lazily so that ``jaxdyn list`` or a spec error does not pay for every
family's imports.
"""

from __future__ import annotations

import importlib
import importlib.util

from jaxdyn.experiments.base import Experiment, Metric, Probe

#: experiment name -> module that defines it (as a module-level ``EXPERIMENTS`` dict).
_MODULES = {
    "eos.mean_model": "jaxdyn.experiments.eos",
    "eos.single_neuron": "jaxdyn.experiments.eos",
    "eos.threshold_relu": "jaxdyn.experiments.eos",
    "dc.neuron": "jaxdyn.experiments.dc",
    "relu.teacher_student": "jaxdyn.experiments.relu",
    "bottleneck.three_layer": "jaxdyn.experiments.bottleneck",
    "bottleneck.one_d": "jaxdyn.experiments.bottleneck",
    "toy.ring": "jaxdyn.experiments.bottleneck",
}


#: experiments registered at run time (your own, or the tests')
_REGISTERED: dict[str, Experiment] = {}


def register(exp: Experiment) -> Experiment:
    """Make ``exp`` available by name to sweep files run in this process."""
    _REGISTERED[exp.name] = exp
    return exp


def names() -> list[str]:
    present = {n for n, m in _MODULES.items() if importlib.util.find_spec(m) is not None}
    return sorted(present | set(_REGISTERED))


def get(name: str) -> Experiment:
    """The experiment called ``name``; KeyError(name, known names) if there is none."""
    if name in _REGISTERED:
        return _REGISTERED[name]
    if name not in names():
        raise KeyError(name, names())
    return importlib.import_module(_MODULES[name]).EXPERIMENTS[name]


def params_of(name: str):
    return get(name).params


__all__ = ["Experiment", "Metric", "Probe", "get", "names", "params_of", "register"]
