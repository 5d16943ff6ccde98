"""Shared wording for the built-in families' ``check(static, hp)`` hooks.

Each family's check (next to its :class:`Experiment`) lists its own constraints; these
helpers only keep the messages alike: the hyperparameter, what was expected, what was given
(``lr must be > 0 (...), got -0.1``). They raise ``ValueError``, which ``jaxdyn.run`` shows as
one line naming the sweep file and the grid point, before anything is compiled or written.
"""

from __future__ import annotations

#: The most elements one array may have: a seed's shared data, a run's parameters or its
#: largest intermediate. 2**36 elements are 256 GiB at float32 (512 GiB at float64), more than
#: any single device holds (H200: 141 GB), and every array of a run (and of a chunk's shared
#: data) lives on one device. The point is to refuse absurd shapes (a width of 10**12 aborts
#: XLA with a check failure, after the results folder was opened) with a message, not to
#: predict memory: a shape under the limit may still not fit the device it runs on.
MAX_ELEMENTS = 2**36

#: Index arrays the families build with int32 (minibatch orders, permutations).
MAX_INT32 = 2**31 - 1


def at_least(name: str, value, low, why: str = "") -> None:
    """``name >= low``, else ``ValueError("name must be >= low (why), got value")``."""
    if value < low:
        raise ValueError(f"{name} must be >= {low}{f' ({why})' if why else ''}, got {value!r}")


def at_most(name: str, value, high, why: str = "") -> None:
    if value > high:
        raise ValueError(f"{name} must be <= {high}{f' ({why})' if why else ''}, got {value!r}")


def positive(name: str, value, why: str = "") -> None:
    if not value > 0:
        raise ValueError(f"{name} must be > 0{f' ({why})' if why else ''}, got {value!r}")


def positive_lr(hp: dict) -> None:
    """``lr > 0``: for the families whose subject is the step size's dynamics, where lr = 0
    never moves the parameters and lr < 0 is gradient ascent. Any large lr is legitimate
    (divergence is studied); the engine freezes a run whose state turns NaN/inf."""
    positive("lr", hp["lr"], "lr = 0 never moves the parameters, lr < 0 is gradient ascent")


def elements(what: str, count: int, /, **values) -> None:
    """``count`` (the element count of the array ``what``, a formula in hyperparameters) must
    be at most :data:`MAX_ELEMENTS`; ``values`` are the hyperparameters it was computed from."""
    n = count
    if n > MAX_ELEMENTS:
        given = ", ".join(f"{k} = {v!r}" for k, v in values.items())
        gib = n * 4 / 2**30
        raise ValueError(f"{what} must have at most 2**36 elements (256 GiB at float32, more "
                         f"than any one device holds), got {n:.3g} ({gib:.3g} GiB at float32; "
                         f"{given})")


def int32_size(name: str, value: int, what: str) -> None:
    """A size whose positions are held in int32 index arrays."""
    if value > MAX_INT32:
        raise ValueError(f"{name} must be <= 2**31 - 1 ({what} holds int32 indices), got "
                         f"{value!r}")

