"""Adaptive sweeps: boundary refinement (``[refine]``) and goal stops (``stop``).

- ``_predicate``: parsing and checking the predicates (``[refine] where`` is SQL over the
  runs table, run by DuckDB read-only; ``stop`` is a comparison of metrics evaluated on the
  device at log points).
- ``_brackets``: neighbouring axis values where the predicate differs (no JAX), read by the
  refine loop, ``Results.boundaries()`` and ``jaxdyn status``.
- ``_refine``: the outer loop around the sweep loop: each round is a set of ordinary runs
  computed from the runs table after the previous round.

Importing this package imports no JAX.
"""

from jaxdyn.adaptive._predicate import PredicateError

__all__ = ["PredicateError"]
