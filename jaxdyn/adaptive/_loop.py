"""What the outer loops around the sweep loop (``_refine``, ``_search``) share: adding up
the summaries of their ``run_sweep`` calls, and their last progress record."""

from __future__ import annotations


def add_summary(total: dict, s: dict) -> None:
    """Add one ``run_sweep`` summary into ``total``: counts and times summed, compiled
    programs (``runners``) kept once each, goal-stop counts summed with the saved fraction
    recomputed, anything else kept from the first call."""
    for k, v in s.items():
        if k == "stop":
            t = total.setdefault("stop", {"stopped": 0, "run_steps": 0, "run_steps_full": 0})
            for j in ("stopped", "run_steps", "run_steps_full"):
                t[j] += v[j]
            t["saved"] = 1 - t["run_steps"] / t["run_steps_full"] \
                if t["run_steps_full"] else 0.0
        elif k == "runners":
            total[k] = list({id(r): r for r in total.get(k, []) + v}.values())
        elif isinstance(v, (int, float)) and not isinstance(v, bool) and k != "steps":
            total[k] = total.get(k, 0) + v
        elif k not in total:
            total[k] = v


def finish_progress(store, key: str, info: dict) -> None:
    """Mark process 0's progress record finished, with the loop's own ``info`` under
    ``key`` (``refine``: the round; ``search``: the batch), for ``jaxdyn status``."""
    recs = [p for p in store.progress() if p.get("process_index", 0) == 0]
    if recs:
        rec = {k: v for k, v in recs[0].items() if k != "updated"}
        rec[key] = {**info, "finished": True}
        store.write_progress(rec, 0)
