"""jaxdyn: training-dynamics sweeps as one jit-compiled, vmapped JAX program per shape.

The public API::

    jaxdyn.run(sweep, ...)              # run a sweep file, dict or Sweep -> RunSummary
    jaxdyn.check(sweep, ...)            # every check run makes, nothing compiled or written
    jaxdyn.load(name), jaxdyn.query()   # the results (no JAX)
    jaxdyn.Experiment, Param, Metric, Probe   # declare your own experiment
    jaxdyn.optimizer(static, hp)        # the sweep's optax transformation
    jaxdyn.supervised(...)              # an Experiment from an initializer, a loss and data
    jaxdyn.report(name, "page.html")    # a sweep's explorer as one self-contained page
    jaxdyn.serve(root)                  # a local read-only web app over a results root
    jaxdyn.export(name, "mlflow", dir)  # one MLflow / TensorBoard run per jaxdyn run

Importing jaxdyn does not import JAX (the analysis side never needs it) and changes no JAX
setting: names that need JAX are imported on first use.
"""

from jaxdyn.experiments.base import Experiment, Metric, Probe
from jaxdyn.launch import RunSummary, check, run
from jaxdyn.results import Results, load, query
from jaxdyn.spec import JaxdynError, Param, SpecError

__all__ = ["Experiment", "JaxdynError", "Metric", "Param", "Probe", "Results", "RunSummary",
           "SpecError", "check", "export", "load", "optimizer", "query", "report", "run",
           "serve", "supervised"]
__version__ = "0.1.0"


def __getattr__(name):  # lazily: these import optax/JAX
    if name == "optimizer":
        from jaxdyn.optim import optimizer

        return optimizer
    if name == "supervised":
        from jaxdyn._supervised import supervised

        return supervised
    if name in ("report", "serve", "export"):  # the explorer (no JAX; lazily)
        from jaxdyn import explore

        return getattr(explore, name)
    raise AttributeError(f"module 'jaxdyn' has no attribute {name!r}")
