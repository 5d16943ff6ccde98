"""jaxdyn: training-dynamics sweeps as one jit-compiled, vmapped JAX program per shape.

The analysis side (``load``, ``query``) does not import JAX.
"""

from jaxdyn.query import Results, load, query

__all__ = ["Results", "load", "query"]
__version__ = "0.1.0"
