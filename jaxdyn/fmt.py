"""How durations and rates are written for people (CLI summaries, progress, status).

Pure Python; the one place these formats are defined.
"""

from __future__ import annotations


def rate(x: float) -> str:
    """Three significant digits: ``2.8e+08``, ``1.13e+05``, ``950``."""
    return f"{x:.3g}"


def duration(s: float) -> str:
    """A wall time: ``4.01s``, ``37.2s``, ``3.5min``."""
    if s < 10:
        return f"{s:.2f}s"
    if s < 120:
        return f"{s:.1f}s"
    return f"{s / 60:.1f}min"


def eta(s: float) -> str:
    """A coarse time to go: ``40s``, ``3.5min``, ``2.1h``."""
    if s < 120:
        return f"{s:.0f}s"
    if s < 7200:
        return f"{s / 60:.1f}min"
    return f"{s / 3600:.1f}h"


def ago(s: float) -> str:
    """How long ago: ``40s ago``, ``35min ago``, ``2.1h ago``."""
    if s < 120:
        return f"{s:.0f}s ago"
    if s < 7200:
        return f"{s / 60:.0f}min ago"
    return f"{s / 3600:.1f}h ago"


def nbytes(n: float) -> str:
    """A byte count for people: ``1.5 GiB``, ``12 MiB``, ``900 B``."""
    for unit, size in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            return f"{n / size:.3g} {unit}"
    return f"{int(n)} B"
