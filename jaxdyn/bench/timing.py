"""The small measuring helpers every part of ``jaxdyn bench`` times and sizes things with.

Owns: XLA's cost analysis of a compiled program as one dict (``_cost``) and whether it still
holds a while loop (``_has_while``), blocking on results (``_block``), the fastest of repeated
calls (``_best_time``) or each one's seconds (``_walls``), the host's peak RSS
(``_proc_status_kb``, ``_reset_peak_rss``), the device's peak bytes and memory size, and the
host's load average (``_load``).

Must not: know about suites, experiments, the engine's programs or the report; each helper
measures one thing and returns a number or a dict.
"""

from __future__ import annotations

import os
import time
from pathlib import Path


def _cost(compiled) -> dict:
    """``compiled.cost_analysis()`` as one dict (older jax returns a list of one)."""
    try:
        ca = compiled.cost_analysis()
    except Exception:  # noqa: BLE001 - backends without the analysis
        return {}
    if isinstance(ca, (list, tuple)):
        ca = ca[0] if ca else {}
    return dict(ca or {})


def _has_while(compiled) -> bool:
    """Whether a compiled (HLO) or lowered (StableHLO) program contains a while loop."""
    try:
        text = compiled.as_text()
        return " while(" in text or "stablehlo.while" in text
    except Exception:  # noqa: BLE001
        return False


def _block(x):
    import jax

    return jax.block_until_ready(x)


def _best_time(fn, reps: int, min_total: float = 0.0) -> float:
    """Fastest of ``reps`` timed calls of ``fn`` (which must block), more if they are short."""
    times = []
    t_all = time.perf_counter()
    while len(times) < reps or (time.perf_counter() - t_all < min_total and len(times) < 50):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def _walls(fn, n: int) -> list[float]:
    """Seconds of each of ``n`` consecutive timed calls of ``fn`` (which must block)."""
    walls = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        walls.append(time.perf_counter() - t)
    return walls


def _proc_status_kb(key: str) -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return float(line.split()[1]) * 1024.0
    except OSError:
        pass
    return float("nan")


def _reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark (Linux: '5' to /proc/self/clear_refs)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _device_peak_bytes() -> float:
    import jax

    peaks = []
    for d in jax.local_devices():
        try:
            st = d.memory_stats()
        except Exception:  # noqa: BLE001
            st = None
        if st and "peak_bytes_in_use" in st:
            peaks.append(float(st["peak_bytes_in_use"]))
    return max(peaks) if peaks else float("nan")


def _load() -> list | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def _device_memory() -> float:
    from jaxdyn import engine

    import jax

    return engine.device_memory_bytes(jax.local_devices()[0])
