"""Adaptive sweeps: boundary refinement (``[refine]``), goal stops (``stop``), successive
halving (``[halving]``) and batched ask/tell search (``[search]``).

- ``_predicate``: parsing and checking the predicates (``[refine] where`` is SQL over the
  runs table, run by DuckDB read-only; ``stop`` is a comparison of metrics evaluated on the
  device at log points).
- ``_brackets``: neighbouring axis values where the predicate differs (no JAX), read by the
  refine loop, ``Results.boundaries()`` and ``jaxdyn status``.
- ``_refine``: the outer loop around the sweep loop: each round is a set of ordinary runs
  computed from the runs table after the previous round.
- ``_halving``: stages between rungs; survivors compacted into smaller chunks that carry
  their state on (``make_run_fn(stage=True)``).
- ``_search``: batches of Optuna proposals (optional dependency), each one sweep-loop call.
- ``_loop``: what the refine and search loops share (summed summaries, the last progress
  record).

Importing this package imports no JAX.
"""

from jaxdyn.adaptive._predicate import PredicateError

__all__ = ["PredicateError"]
