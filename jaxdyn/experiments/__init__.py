"""The experiment registry: ``"family.name" -> Experiment``.

Modules are imported lazily so that ``jaxdyn list`` or a spec error does not pay for every
family's imports.
"""

from __future__ import annotations

import importlib

from jaxdyn.experiments.base import Experiment, Metric

#: experiment name -> module that defines it (as a module-level ``EXPERIMENTS`` dict).
_MODULES = {
    "eos.mean_model": "jaxdyn.experiments.eos",
}


#: experiments registered at run time (your own, or the tests')
_REGISTERED: dict[str, Experiment] = {}


def register(exp: Experiment) -> Experiment:
    """Make ``exp`` available by name to sweep files run in this process."""
    _REGISTERED[exp.name] = exp
    return exp


def names() -> list[str]:
    return sorted({*_MODULES, *_REGISTERED})


def get(name: str) -> Experiment:
    """The experiment called ``name``; KeyError(name, known names) if there is none."""
    if name in _REGISTERED:
        return _REGISTERED[name]
    if name not in _MODULES:
        raise KeyError(name, names())
    return importlib.import_module(_MODULES[name]).EXPERIMENTS[name]


def params_of(name: str):
    return get(name).params


__all__ = ["Experiment", "Metric", "get", "names", "params_of", "register"]
